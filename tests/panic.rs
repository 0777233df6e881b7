//! Panics in a transaction body: the attempt is rolled back, `on_abort(Panic)` runs, the
//! original payload unwinds out of `atomically`, no TVar is poisoned and no lock stays held.

mod common;

use common::on_other_thread;
use mvstm::{atomically, try_atomically, AbortCause, StmResult, TVar};
use std::cell::RefCell;
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::rc::Rc;
use std::thread;

/// A payload type that is neither `&str` nor `String`, to check it arrives unchanged.
#[derive(Debug, PartialEq)]
struct Payload(u32, &'static str);

#[test]
fn a_panic_aborts_the_attempt_and_resumes_with_the_original_payload() {
    let (a, b) = (TVar::new(1u32), TVar::new(1u32));
    let causes = Rc::new(RefCell::new(Vec::new()));
    let mut runs = 0;
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> {
            runs += 1;
            let c = causes.clone();
            tx.on_abort(move |cause| c.borrow_mut().push(cause));
            tx.write(&a, 2)?;
            tx.modify(&b, |x| x + 1)?;
            panic_any(Payload(42, "original"))
        })
    }));
    let p = r.expect_err("the panic must unwind out of atomically");
    let payload = p.downcast::<Payload>().expect("the original payload type");
    assert_eq!(*payload, Payload(42, "original"));
    assert_eq!(runs, 1, "a panicking body must not be re-run");
    assert_eq!(
        (a.load(), b.load()),
        (1, 1),
        "writes of a panicking attempt were published"
    );
    assert_eq!(*causes.borrow(), vec![AbortCause::Panic]);
}

#[test]
fn a_string_panic_message_is_preserved() {
    let v = TVar::new(0u8);
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> {
            let x = tx.read(&v)?;
            tx.write(&v, 1)?;
            panic!("formatted {x} {}", tx.attempt())
        })
    }));
    let p = r.expect_err("the panic must unwind");
    assert_eq!(
        p.downcast_ref::<String>().map(String::as_str),
        Some("formatted 0 1")
    );
    assert_eq!(v.load(), 0);
}

#[test]
fn a_panic_in_try_atomically_also_resumes() {
    let v = TVar::new(0u8);
    let r = catch_unwind(AssertUnwindSafe(|| {
        try_atomically::<(), String>(|tx| {
            tx.write(&v, 1)?;
            panic_any(Payload(7, "try"))
        })
    }));
    let p = r.expect_err("the panic must unwind out of try_atomically");
    assert_eq!(
        *p.downcast::<Payload>().expect("original payload"),
        Payload(7, "try")
    );
    assert_eq!(v.load(), 0);
}

#[test]
fn no_tvar_is_poisoned() {
    let v = TVar::new(vec![1u32]);
    for _ in 0..3 {
        let r = catch_unwind(AssertUnwindSafe(|| {
            atomically(|tx| -> StmResult<()> {
                let mut xs = tx.read(&v)?;
                xs.push(99);
                tx.write(&v, xs)?;
                panic!("in the middle of an update")
            })
        }));
        assert!(r.is_err());
    }
    assert_eq!(v.load(), vec![1]);

    // The same thread can use the variable again.
    atomically(|tx| {
        tx.modify(&v, |mut xs| {
            xs.push(2);
            xs
        })
    });
    assert_eq!(v.load(), vec![1, 2]);

    // So can other threads, for reads and for writes.
    let v2 = v.clone();
    let seen = on_other_thread(move || {
        let before = atomically(|tx| tx.read(&v2));
        atomically(|tx| {
            tx.modify(&v2, |mut xs| {
                xs.push(3);
                xs
            })
        });
        before
    });
    assert_eq!(seen, vec![1, 2]);
    assert_eq!(v.load(), vec![1, 2, 3]);
}

#[test]
fn no_lock_is_left_held_after_a_panic() {
    let vars: Vec<TVar<u64>> = (0..8).map(TVar::new).collect();
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> {
            for v in &vars {
                tx.modify(v, |x| x + 100)?;
            }
            panic!("after writing every variable")
        })
    }));
    assert!(r.is_err());

    // Another thread updates every variable in one transaction, and each one separately.
    let others = vars.clone();
    on_other_thread(move || {
        atomically(|tx| {
            for v in &others {
                tx.modify(v, |x| x + 1)?;
            }
            Ok(())
        });
        for v in &others {
            atomically(|tx| tx.modify(v, |x| x * 2));
        }
    });
    let values: Vec<u64> = vars.iter().map(TVar::load).collect();
    assert_eq!(values, (0..8).map(|i| (i + 1) * 2).collect::<Vec<u64>>());
}

#[test]
fn a_panic_in_on_commit_leaves_no_lock_held() {
    // on_commit runs while the write set (and the read set) is locked.
    let (read, written) = (TVar::new(0u64), TVar::new(0u64));
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            let x = tx.read(&read)?;
            tx.write(&written, x + 1)?;
            tx.on_commit(|| panic_any(Payload(3, "on_commit")));
            Ok(())
        })
    }));
    let p = r.expect_err("the on_commit panic must resume");
    assert_eq!(
        *p.downcast::<Payload>().expect("original payload"),
        Payload(3, "on_commit")
    );
    assert_eq!(written.load(), 0);

    let (r2, w2) = (read.clone(), written.clone());
    on_other_thread(move || {
        atomically(|tx| {
            tx.write(&r2, 10)?;
            tx.write(&w2, 20)
        })
    });
    assert_eq!((read.load(), written.load()), (10, 20));
}

#[test]
fn a_panic_on_another_thread_does_not_disturb_this_one() {
    let counter = TVar::new(0u64);
    let c = counter.clone();
    let handle = thread::spawn(move || {
        atomically(|tx| -> StmResult<()> {
            tx.modify(&c, |x| x + 1_000)?;
            panic!("worker died mid-transaction")
        })
    });
    assert!(
        handle.join().is_err(),
        "the worker's panic must reach its join handle"
    );
    assert_eq!(counter.load(), 0);
    let c = counter.clone();
    on_other_thread(move || {
        for _ in 0..100 {
            atomically(|tx| tx.modify(&c, |x| x + 1));
        }
    });
    for _ in 0..100 {
        atomically(|tx| tx.modify(&counter, |x| x + 1));
    }
    assert_eq!(counter.load(), 200);
}

#[test]
fn a_panic_in_a_read_only_body_is_harmless() {
    let v = TVar::new(5u32);
    let r = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| -> StmResult<()> {
            let x = tx.read(&v)?;
            panic!("read {x} then panicked")
        })
    }));
    assert!(r.is_err());
    assert_eq!(atomically(|tx| tx.read(&v)), 5);
    let v2 = v.clone();
    on_other_thread(move || atomically(|tx| tx.write(&v2, 6)));
    assert_eq!(v.load(), 6);
}
