//! Reclamation: old versions are freed while writers overwrite, and each value is dropped
//! exactly once. In its own test binary (process) so that no other test's long transaction
//! holds the global epoch back while it measures.

use mvstm::{atomically, TVar};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// A value that counts how many of its kind are alive.
#[derive(Debug)]
struct Counted {
    live: Arc<AtomicUsize>,
}

impl Counted {
    fn new(live: &Arc<AtomicUsize>) -> Counted {
        live.fetch_add(1, Ordering::SeqCst);
        Counted { live: live.clone() }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted::new(&self.live)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let before = self.live.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "a value was dropped twice");
    }
}

/// Commit unrelated transactions until `cond` holds or the bound runs out; every commit pins
/// and every 32nd advances the reclamation horizon.
fn churn_until(cond: impl Fn() -> bool) -> bool {
    let scratch = TVar::new(0u64);
    for _ in 0..100_000 {
        if cond() {
            return true;
        }
        atomically(|tx| tx.modify(&scratch, |n| n + 1));
    }
    cond()
}

#[test]
fn old_versions_are_reclaimed_and_values_dropped_exactly_once() {
    const WRITES: usize = 50_000;
    let live = Arc::new(AtomicUsize::new(0));
    let var = TVar::new(Counted::new(&live));
    let max_live = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (var, live, max_live) = (var.clone(), live.clone(), max_live.clone());
            thread::spawn(move || {
                for _ in 0..WRITES {
                    atomically(|tx| tx.write(&var, Counted::new(&live)));
                    max_live.fetch_max(live.load(Ordering::SeqCst), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let max = max_live.load(Ordering::Relaxed);
    println!(
        "at most {max} values alive during {} overwrites",
        2 * WRITES
    );
    // Bounded by what the epochs hold back, not by the number of writes. A writer descheduled
    // while pinned holds the epoch for a whole time slice, so the bound is generous; a broken
    // reclamation keeps nearly every value.
    assert!(
        max < WRITES / 2,
        "{max} values alive: old versions are not reclaimed"
    );
    // Once the writers stop, more commits cut the chain down to what the design keeps: the
    // versions newer than the horizon (which trails by a few times 64 commits of this thread)
    // plus at most one trim period (32 writes).
    let trimmed = churn_until(|| {
        atomically(|tx| tx.write(&var, Counted::new(&live)));
        live.load(Ordering::SeqCst) <= 256
    });
    assert!(
        trimmed,
        "{} values alive on a quiet chain",
        live.load(Ordering::SeqCst)
    );
    drop(var);
    assert!(
        churn_until(|| live.load(Ordering::SeqCst) == 0),
        "{} values still alive after the last handle was dropped",
        live.load(Ordering::SeqCst)
    );
}
