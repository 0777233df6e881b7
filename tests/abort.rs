//! User aborts: `Txn::abort` and `try_on_commit` vetoes under `try_atomically` (error returned,
//! writes discarded, `on_abort(Abort)` run) and under plain `atomically` (a clear panic), plus
//! the panic for an abort whose error type does not match `try_atomically::<T, E>`.

mod common;

use common::panic_message;
use mvstm::{atomically, try_atomically, AbortCause, OrAbort, StmResult, TVar};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

#[derive(Debug, PartialEq)]
struct Insufficient {
    wanted: i64,
    had: i64,
}

/// Update `v` from another thread; fails the test if that cannot commit in time.
fn update_elsewhere(v: &TVar<i64>, value: i64) {
    let (tx, rx) = mpsc::channel();
    let v = v.clone();
    thread::spawn(move || {
        atomically(|t| t.write(&v, value));
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a lock was left held");
}

#[test]
fn abort_returns_the_error_discards_writes_and_runs_on_abort() {
    let (a, b) = (TVar::new(100i64), TVar::new(0i64));
    let causes = Rc::new(RefCell::new(Vec::new()));
    let r: Result<(), Insufficient> = try_atomically(|tx| {
        let c = causes.clone();
        tx.on_abort(move |cause| c.borrow_mut().push(cause));
        tx.write(&b, 1_000)?;
        let had = tx.read(&a)?;
        tx.write(&a, had - 1)?;
        if had < 500 {
            return tx.abort(Insufficient { wanted: 500, had });
        }
        Ok(())
    });
    assert_eq!(
        r,
        Err(Insufficient {
            wanted: 500,
            had: 100
        })
    );
    assert_eq!(
        (a.load(), b.load()),
        (100, 0),
        "an aborted transaction published writes"
    );
    assert_eq!(*causes.borrow(), vec![AbortCause::Abort]);

    update_elsewhere(&a, 1);
    update_elsewhere(&b, 2);
    assert_eq!((a.load(), b.load()), (1, 2));
}

#[test]
fn abort_does_not_rerun_the_body() {
    let v = TVar::new(0i64);
    let mut runs = 0;
    let r = try_atomically::<(), &str>(|tx| {
        runs += 1;
        tx.read(&v)?;
        tx.abort("stop")
    });
    assert_eq!(r, Err("stop"));
    assert_eq!(runs, 1);
}

#[test]
fn try_atomically_returns_ok_without_abort() {
    let v = TVar::new(10i64);
    let r = try_atomically::<i64, String>(|tx| {
        tx.modify(&v, |x| x * 2)?;
        tx.read(&v)
    });
    assert_eq!(r, Ok(20));
    assert_eq!(v.load(), 20);
}

#[test]
fn abort_from_a_helper_propagates_with_question_mark() {
    fn check(tx: &mut mvstm::Txn, v: &TVar<i64>) -> StmResult<i64> {
        let x = tx.read(v)?;
        if x < 0 {
            return tx.abort(format!("negative: {x}"));
        }
        Ok(x)
    }
    let v = TVar::new(-3i64);
    let r: Result<i64, String> = try_atomically(|tx| {
        tx.write(&v, -4)?;
        let x = check(tx, &v)?;
        tx.write(&v, 0)?;
        Ok(x)
    });
    assert_eq!(r, Err("negative: -4".to_string()));
    assert_eq!(v.load(), -3);
}

#[test]
fn abort_inside_plain_atomically_panics_naming_try_atomically() {
    let v = TVar::new(1i64);
    let causes = Rc::new(RefCell::new(Vec::new()));
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> {
            let c = causes.clone();
            tx.on_abort(move |cause| c.borrow_mut().push(cause));
            tx.write(&v, 2)?;
            tx.abort("no way to return this")
        })
    }));
    let p = r.expect_err("an abort inside plain atomically must panic");
    let msg = panic_message(&*p);
    assert!(
        msg.contains("try_atomically"),
        "the message should name try_atomically: {msg}"
    );
    assert!(
        msg.contains("`&str`") && msg.contains("no way to return this"),
        "the message should name the error's type and show a string error: {msg}"
    );
    assert_eq!(v.load(), 1, "the aborted writes were published");
    assert_eq!(*causes.borrow(), vec![AbortCause::Abort]);
    update_elsewhere(&v, 3);
    assert_eq!(v.load(), 3);
}

#[test]
fn abort_of_another_error_type_panics_clearly() {
    #[derive(Debug)]
    struct Expected;
    #[derive(Debug)]
    struct Other;
    let v = TVar::new(1i64);
    let r = catch_unwind(AssertUnwindSafe(|| {
        try_atomically::<(), Expected>(|tx| {
            tx.write(&v, 2)?;
            tx.abort(Other)
        })
    }));
    let p = r.expect_err("an abort with an error of another type must panic");
    let msg = panic_message(&*p);
    assert!(msg.contains("try_atomically"), "{msg}");
    assert!(
        msg.contains(
            "try_atomically::<_, abort::abort_of_another_error_type_panics_clearly::Expected>"
        ),
        "the message should name the expected type: {msg}"
    );
    assert!(
        msg.contains("`abort::abort_of_another_error_type_panics_clearly::Other`"),
        "the message should name the type that arrived: {msg}"
    );
    assert_eq!(v.load(), 1);
}

#[test]
fn veto_of_another_error_type_panics_clearly() {
    let v = TVar::new(1i64);
    let r = catch_unwind(AssertUnwindSafe(|| {
        try_atomically::<(), String>(|tx| {
            tx.write(&v, 2)?;
            tx.try_on_commit(|| Err::<(), u8>(7));
            Ok(())
        })
    }));
    let p = r.expect_err("a veto with an error of another type must panic");
    let msg = panic_message(&*p);
    assert!(
        msg.contains("try_atomically::<_, alloc::string::String>") && msg.contains("`u8`"),
        "the message should name both types: {msg}"
    );
    assert_eq!(v.load(), 1);
    update_elsewhere(&v, 4);
    assert_eq!(v.load(), 4);
}

#[test]
fn veto_inside_plain_atomically_panics_naming_try_atomically() {
    let v = TVar::new(1i64);
    let causes = Rc::new(RefCell::new(Vec::new()));
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            let c = causes.clone();
            tx.on_abort(move |cause| c.borrow_mut().push(cause));
            tx.write(&v, 2)?;
            tx.try_on_commit(|| Err::<(), &str>("refused"));
            Ok(())
        })
    }));
    let p = r.expect_err("a veto inside plain atomically must panic");
    let msg = panic_message(&*p);
    assert!(
        msg.contains("try_atomically"),
        "the message should name try_atomically: {msg}"
    );
    assert_eq!(v.load(), 1, "a vetoed commit published its write");
    assert_eq!(*causes.borrow(), vec![AbortCause::Abort]);
    update_elsewhere(&v, 5);
    assert_eq!(v.load(), 5);
}

#[test]
fn the_thread_is_usable_after_an_abort() {
    let v = TVar::new(0i64);
    for i in 0..100 {
        let r: Result<(), i64> = try_atomically(|tx| {
            tx.write(&v, i + 1_000)?;
            tx.abort(i)
        });
        assert_eq!(r, Err(i));
        atomically(|tx| tx.modify(&v, |x| x + 1));
    }
    assert_eq!(v.load(), 100);
    // The attempt counter starts over for every call.
    assert_eq!(atomically(|tx| Ok(tx.attempt())), 1);
}

/// PITFALLS 16: an abort is final. A body that drops the signal and returns `Ok` must not
/// commit: its writes are discarded and the call returns the error.
#[test]
fn a_swallowed_abort_still_aborts() {
    let v = TVar::new(1i64);
    let causes = Rc::new(RefCell::new(Vec::new()));
    let seen = causes.clone();
    let r: Result<(), &str> = try_atomically(|tx| {
        tx.write(&v, 2)?;
        let seen = seen.clone();
        tx.on_abort(move |cause| seen.borrow_mut().push(cause));
        #[allow(unused_must_use)]
        {
            let _ = tx.abort::<(), _>("refused");
        }
        Ok(())
    });
    assert_eq!(r, Err("refused"));
    assert_eq!(v.load(), 1, "the aborted attempt's write was published");
    assert_eq!(*causes.borrow(), vec![AbortCause::Abort]);
}

/// After an abort the attempt reads and writes nothing more, and the first error is the one
/// returned.
#[test]
fn after_an_abort_reads_fail_and_the_first_error_wins() {
    let v = TVar::new(1i64);
    let r: Result<i64, &str> = try_atomically(|tx| {
        let _ = tx.abort::<(), _>("first");
        assert!(tx.read(&v).is_err(), "a read after an abort succeeded");
        assert!(tx.write(&v, 5).is_err(), "a write after an abort succeeded");
        tx.abort("second")
    });
    assert_eq!(r, Err("first"));
    assert_eq!(v.load(), 1);
}

/// A swallowed abort inside `or_else`'s first branch does not fall through to the second
/// branch's commit either.
#[test]
fn a_swallowed_abort_in_or_else_still_aborts() {
    let v = TVar::new(0i64);
    let r: Result<(), &str> = try_atomically(|tx| {
        tx.or_else(
            |tx| {
                let _ = tx.abort::<(), _>("no");
                mvstm::retry()
            },
            |tx| tx.write(&v, 9),
        )
    });
    assert_eq!(r, Err("no"));
    assert_eq!(v.load(), 0);
}

#[test]
fn or_abort_passes_ok_through_and_aborts_with_the_error() {
    let port = TVar::new(8080u16);
    let causes = Rc::new(RefCell::new(Vec::new()));
    let set = |input: &str| {
        try_atomically::<u16, std::num::ParseIntError>(|tx| {
            let c = causes.clone();
            tx.on_abort(move |cause| c.borrow_mut().push(cause));
            tx.write(&port, 1)?; // discarded if the parse fails
            let p: u16 = input.parse().or_abort(tx)?;
            tx.write(&port, p)?;
            Ok(p)
        })
    };
    let err = set("80a").expect_err("a parse error aborts");
    assert_eq!(err, "80a".parse::<u16>().unwrap_err());
    assert_eq!(
        port.load(),
        8080,
        "the write before the abort was published"
    );
    assert_eq!(*causes.borrow(), vec![AbortCause::Abort]);
    assert_eq!(set("9090"), Ok(9090));
    assert_eq!(port.load(), 9090);
}

#[test]
fn or_abort_is_final_even_if_the_signal_is_dropped() {
    let v = TVar::new(0u32);
    let r = try_atomically::<(), &str>(|tx| {
        let _ = Err::<(), _>("dropped").or_abort(tx); // the body ignores the signal
        tx.write(&v, 1).ok(); // fails at once: the attempt is aborted
        Ok(())
    });
    assert_eq!(r, Err("dropped"));
    assert_eq!(v.load(), 0);
}
