//! Misuse panics point at the caller's line (`#[track_caller]`), not at a line inside mvstm:
//! a panic hook records where each panic says it happened, and every case checks that it is
//! this file at the line of the offending call.

use mvstm::collections::{TBQueue, TSemaphore};
use mvstm::lifecycle::{CommandQueue, Lifecycle, Service};
use mvstm::{atomically, try_atomically, StmResult, TVar};
use std::cell::RefCell;
use std::panic::{self, catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Where the panics of this thread said they happened, in order.
    static LOCATIONS: RefCell<Vec<(String, u32)>> = const { RefCell::new(Vec::new()) };
}

/// Install (once) a hook that records each panic's location, then prints as usual.
fn record_locations() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if let Some(at) = info.location() {
                let _ =
                    LOCATIONS.try_with(|l| l.borrow_mut().push((at.file().to_string(), at.line())));
            }
            default(info);
        }));
    });
}

/// Run `f`, which must panic; return the file and line of its first panic.
fn first_panic_location(f: impl FnOnce()) -> (String, u32) {
    record_locations();
    LOCATIONS.with(|l| l.borrow_mut().clear());
    let r = catch_unwind(AssertUnwindSafe(f));
    assert!(r.is_err(), "the misuse did not panic");
    LOCATIONS
        .with(|l| l.borrow().first().cloned())
        .expect("the hook saw no panic")
}

#[track_caller]
fn assert_here(seen: (String, u32), line: u32) {
    assert_eq!(
        seen,
        (file!().to_string(), line),
        "the panic points inside mvstm"
    );
}

#[test]
fn atomically_inside_a_transaction_points_at_the_inner_call() {
    let v = TVar::new(0u8);
    let mut line = 0;
    let seen = first_panic_location(|| {
        atomically(|tx| {
            tx.read(&v)?;
            line = line!() + 1;
            atomically(|tx| tx.write(&v, 1));
            Ok(())
        })
    });
    assert_here(seen, line);
}

#[test]
fn an_abort_in_plain_atomically_points_at_the_atomically_call() {
    let line = line!() + 1;
    let seen = first_panic_location(|| atomically(|tx| tx.abort::<(), _>("no")));
    assert_here(seen, line);
}

#[test]
fn an_abort_of_another_type_points_at_the_try_atomically_call() {
    let line = line!() + 1;
    let seen = first_panic_location(|| drop(try_atomically::<(), String>(|tx| tx.abort(7u8))));
    assert_here(seen, line);
}

#[test]
fn a_retry_with_nothing_to_wait_on_points_at_the_atomically_call() {
    let line = line!() + 1;
    let seen = first_panic_location(|| atomically(|_| mvstm::retry::<()>()));
    assert_here(seen, line);
}

#[test]
fn retry_on_with_no_tvar_points_at_the_retry_on_call() {
    let v = TVar::new(0u8);
    let mut line = 0;
    let seen = first_panic_location(|| {
        atomically(|tx| -> StmResult<()> {
            tx.read(&v)?;
            line = line!() + 1;
            tx.retry_on(&[])
        })
    });
    assert_here(seen, line);
}

#[test]
fn collection_constructor_and_overflow_point_at_the_caller() {
    let line = line!() + 1;
    let seen = first_panic_location(|| drop(TBQueue::<u8>::new(0)));
    assert_here(seen, line);

    let permits = TSemaphore::new(u64::MAX);
    let mut line = 0;
    let seen = first_panic_location(|| {
        atomically(|tx| {
            line = line!() + 1;
            permits.release(tx, 1)
        })
    });
    assert_here(seen, line);
}

#[test]
fn lifecycle_misuse_points_at_the_caller() {
    let line = line!() + 1;
    let seen = first_panic_location(|| drop(CommandQueue::builder().capacity(0)));
    assert_here(seen, line);

    struct Noop;
    impl Service for Noop {
        type Running = ();
        type Error = String;
        fn start(&self) -> Result<(), String> {
            Ok(())
        }
        fn stop(&self, _: ()) -> Result<(), String> {
            Ok(())
        }
    }
    let service = Lifecycle::new(Noop);
    let mut line = 0;
    let seen = first_panic_location(|| {
        atomically(|tx| {
            let claim = service.claim_start(tx)?;
            line = line!() + 1;
            let _ = claim.outcome(); // before the claim committed
            Ok(())
        });
    });
    assert_here(seen, line);
}
