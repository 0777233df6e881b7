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

thread_local! {
    /// While set, a `Mine` dropped on this thread panics (unless the thread is unwinding).
    static MINES_ARMED: Cell<bool> = const { Cell::new(false) };
}

/// A value whose destructor panics whenever it runs on an armed thread that is not already
/// unwinding (a second panic while unwinding would abort the process).
#[derive(Clone)]
struct Mine;

impl Drop for Mine {
    fn drop(&mut self) {
        if MINES_ARMED.with(Cell::get) && !std::thread::panicking() {
            panic!("a mine went off");
        }
    }
}

/// PITFALLS 15: values' destructors run by the collector after a commit (the epoch flush) must
/// not unwind past that commit's `after_commit` hooks. Every transaction registers one
/// `on_commit` and one `after_commit` hook and overwrites TVars holding mines, whose old
/// versions the collector frees later; mines go off wherever the collector runs them on this
/// thread (pinning, the flush after a commit), and every transaction that committed still runs
/// its `after_commit` hook exactly once.
#[test]
fn exploding_destructors_never_skip_after_commit_hooks() {
    use std::rc::Rc;
    let counter = TVar::new(0u64);
    // Many mines per commit: more garbage than pinning alone collects (a pin collects a few
    // bags now and then), so the flush after a commit collects mines too.
    let mines: Vec<TVar<Mine>> = (0..64).map(|_| TVar::new(Mine)).collect();
    let on_commit = Rc::new(Cell::new(0u64));
    let after_commit = Rc::new(Cell::new(0u64));
    let mut went_off = 0;
    // Where the collector runs the mines depends on what else the process does (other tests'
    // threads collect too, unarmed): go on until enough went off here, within a bound.
    let mut calls = 0u64;
    for i in 1..=200_000u64 {
        if went_off >= 20 && i > 5_000 {
            break;
        }
        calls = i;
        let (oc, ac) = (on_commit.clone(), after_commit.clone());
        let r = catch_unwind(AssertUnwindSafe(|| {
            // Armed for the whole call, its pins included.
            MINES_ARMED.with(|a| a.set(true));
            atomically(|tx| {
                tx.modify(&counter, |n| n + 1)?;
                for mine in &mines {
                    tx.write(mine, Mine)?;
                }
                let (oc, ac) = (oc.clone(), ac.clone());
                tx.on_commit(move || oc.set(oc.get() + 1));
                tx.after_commit(move || ac.set(ac.get() + 1));
                Ok(())
            })
        }));
        MINES_ARMED.with(|a| a.set(false));
        went_off += usize::from(r.is_err());
        // A mine may go off before a commit (while pinning) or after it, never inside it.
        assert_eq!(
            after_commit.get(),
            on_commit.get(),
            "call {i}: a committed transaction's after_commit hook did not run"
        );
    }
    // Checked once at the end: a load pins too, and would collect the mines unarmed.
    assert_eq!(
        counter.load(),
        on_commit.get(),
        "commits and on_commit hooks disagree"
    );
    assert!(went_off > 0, "no mine went off: the test proved nothing");
    println!("{went_off} of {calls} calls saw a mine go off");
}

/// A pending value whose destructor panics when its attempt is discarded neither skips the
/// attempt's `on_abort` hooks nor leaks the other pending values.
#[test]
fn a_panicking_pending_value_skips_no_hook_and_leaks_nothing() {
    let counter = common::DropCounter::new();
    let (mine, other) = (TVar::new(Mine), TVar::new(counter.value(0)));
    let aborted = std::rc::Rc::new(Cell::new(false));
    let flag = aborted.clone();
    let r = catch_unwind(AssertUnwindSafe(|| {
        let _: Result<(), &str> = try_atomically(|tx| {
            // The mine is discarded first; the counted value after it must not leak.
            tx.write(&mine, Mine)?;
            tx.write(&other, counter.value(1))?;
            tx.write(&other, counter.value(2))?;
            let flag = flag.clone();
            tx.on_abort(move |_| flag.set(true));
            MINES_ARMED.with(|a| a.set(true));
            tx.abort("discard the pending values")
        });
    }));
    MINES_ARMED.with(|a| a.set(false));
    assert!(r.is_err(), "the destructor's panic did not propagate");
    assert!(aborted.get(), "the on_abort hook was skipped");
    // The pending value 2 (1 was overwritten in place) was dropped, not leaked; 0 is live.
    assert_eq!(counter.live(), 1, "a pending value leaked");
    assert!(!counter.dropped_twice());
    // Nothing stays locked or pinned: the thread and another still commit.
    atomically(|tx| tx.write(&other, counter.value(3)));
    let o = other.clone();
    let c = counter.clone();
    on_other_thread(move || atomically(|tx| tx.write(&o, c.value(4))));
}

/// A TVar whose last handle is dropped inside a body is freed after the attempt; a panicking
/// `on_abort` hook on the conflict path must not skip that (the thread may never run another
/// transaction that would).
#[test]
fn a_panicking_on_abort_hook_does_not_leak_queued_frees() {
    let counter = common::DropCounter::new();
    let (v, w) = (TVar::new(0u64), TVar::new(0u64));
    let c = counter.clone();
    let thread = std::thread::spawn(move || {
        let mut first = true;
        let r = catch_unwind(AssertUnwindSafe(|| {
            atomically(|tx| {
                let seen = tx.read(&v)?;
                // Made and dropped inside the body: its free is queued for after the attempt.
                drop(TVar::new(c.value(seen)));
                if std::mem::take(&mut first) {
                    let v2 = v.clone();
                    // A commit after our read: our validation fails, the attempt conflicts.
                    std::thread::spawn(move || atomically(|tx| tx.write(&v2, 1)))
                        .join()
                        .unwrap();
                    tx.on_abort(|_| panic!("an on_abort hook panicked"));
                }
                tx.write(&w, seen)
            })
        }));
        assert!(r.is_err(), "the hook's panic did not propagate");
    });
    thread.join().unwrap();
    counter.assert_all_dropped("values of TVars dropped inside a body");
}
