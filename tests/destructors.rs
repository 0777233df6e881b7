//! Destructors of values stored in TVars. Old versions are freed by the epoch collector at a time
//! and on a thread of its choosing, but never inside a transaction body or a commit: a panic
//! there would unwind past published versions or held locks, and a destructor that starts a
//! transaction would find itself nested. These tests use destructors that panic or start
//! transactions and check that every commit stands, no value is used after its drop, and no
//! lock stays held.

mod common;

use common::on_other_thread;
use mvstm::{atomically, try_atomically, TVar};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const ALIVE: u64 = 0xA11CE;

/// A value that notices being cloned or dropped after its own drop.
struct Tracked {
    magic: u64,
    n: u64,
}

static USED_AFTER_DROP: AtomicUsize = AtomicUsize::new(0);

impl Tracked {
    fn new(n: u64) -> Tracked {
        Tracked { magic: ALIVE, n }
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        if self.magic != ALIVE {
            USED_AFTER_DROP.fetch_add(1, Ordering::SeqCst);
        }
        Tracked::new(self.n)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.magic != ALIVE {
            USED_AFTER_DROP.fetch_add(1, Ordering::SeqCst);
        }
        self.magic = 0xDEAD;
    }
}

thread_local! {
    /// While set, a `Bomb` dropped on this thread panics.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

#[derive(Clone)]
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        // Goes off once: several destructors panicking within one collection would abort the
        // process (crossbeam-epoch runs a bag's remaining destructors while unwinding), which is
        // why the docs ask that values' destructors not panic.
        if ARMED.with(Cell::get) && !FIRED.swap(true, Ordering::SeqCst) {
            panic!("a deferred drop panicked");
        }
    }
}

static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[test]
fn a_panicking_destructor_never_unwinds_through_a_commit() {
    let counter = TVar::new(Tracked::new(0));
    let mut unwound = 0;
    for i in 1..=20_000u64 {
        // Freed later by the collector, possibly while this thread is inside `atomically`.
        drop(TVar::new(Bomb));
        let r = catch_unwind(AssertUnwindSafe(|| {
            atomically(|tx| {
                ARMED.with(|a| a.set(true));
                tx.modify(&counter, |t| Tracked::new(t.n + 1))
            })
        }));
        ARMED.with(|a| a.set(false));
        if r.is_err() {
            unwound += 1;
        }
        // Whether or not a destructor panicked after it, the commit stands.
        assert_eq!(counter.load().n, i, "commit {i} was lost");
    }
    assert_eq!(
        USED_AFTER_DROP.load(Ordering::SeqCst),
        0,
        "a value was used after its drop"
    );
    // The runtime still works afterwards, from this thread and another.
    atomically(|tx| tx.modify(&counter, |t| Tracked::new(t.n + 1)));
    let other = counter.clone();
    on_other_thread(move || atomically(|tx| tx.modify(&other, |t| Tracked::new(t.n + 1))));
    assert_eq!(counter.load().n, 20_002);
    assert!(unwound <= 1, "the bomb goes off at most once");
    println!("{unwound} call(s) saw a destructor panic after their commit");
}

static LIVE: OnceLock<TVar<i64>> = OnceLock::new();

fn live() -> &'static TVar<i64> {
    LIVE.get_or_init(|| TVar::new(0))
}

/// A handle whose constructor and destructor keep a live count in a TVar.
struct Handle(u64);

impl Handle {
    fn new(id: u64) -> Handle {
        atomically(|tx| tx.modify(live(), |n| n + 1));
        Handle(id)
    }
}

impl Clone for Handle {
    fn clone(&self) -> Self {
        Handle::new(self.0)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        atomically(|tx| tx.modify(live(), |n| n - 1));
    }
}

#[test]
fn a_destructor_may_start_a_transaction() {
    let registry = TVar::new(Handle::new(0));
    let counter = TVar::new(0u64);
    for i in 1..=10_000u64 {
        // Made outside the body: constructing a `Handle` starts a transaction.
        let mut handle = Some(Handle::new(i));
        atomically(|tx| tx.write(&registry, handle.take().expect("the body runs once here")));
        atomically(|tx| tx.modify(&counter, |n| n + 1));
    }
    assert_eq!(registry.load().0, 10_000);
    assert_eq!(counter.load(), 10_000);
    // Live handles: the registry's current value plus versions not yet reclaimed.
    let live_now = live().load();
    assert!(live_now >= 1, "the registry's handle was dropped");
    drop(registry);
    // Typically about a hundred. Run beside the panicking-destructor test it can be all of
    // them: the collector abandons the batch in which a destructor panicked (docs/architecture.md).
    println!("{live_now} handles alive before the registry was dropped");
}

struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a captured value panicked in its destructor");
    }
}

#[test]
fn hooks_left_by_a_veto_are_dropped_after_the_locks_are_released() {
    let x = TVar::new(0u32);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _: Result<(), &str> = try_atomically(|tx| {
            tx.write(&x, 1)?;
            tx.try_on_commit(|| Err("veto"));
            // Never runs (the veto comes first); dropping it panics.
            let bomb = PanicOnDrop;
            tx.on_commit(move || {
                let _keep = &bomb;
            });
            Ok(())
        });
    }));
    assert!(r.is_err(), "the destructor's panic propagates");
    assert_eq!(x.load(), 0, "the vetoed write was published");
    // Nothing stays locked: another thread commits to `x` at once.
    let x2 = x.clone();
    on_other_thread(move || atomically(|tx| tx.write(&x2, 2)));
    assert_eq!(x.load(), 2);
}
