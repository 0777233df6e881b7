//! Reclamation under concurrent overwrites: old versions are freed while two threads overwrite
//! one TVar, and each value is dropped exactly once. In its own test binary (process) so that no
//! other test's long transaction holds the global epoch back while it measures.

mod common;

use common::{drive_reclamation, DropCounter};
use mvstm::{atomically, TVar};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::thread;

#[test]
fn old_versions_are_reclaimed_and_values_dropped_exactly_once() {
    const WRITES: u64 = 200_000;
    let drops = DropCounter::new();
    let var = TVar::new(drops.value(0));
    let max_live = Arc::new(AtomicIsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (var, drops, max_live) = (var.clone(), drops.clone(), max_live.clone());
            thread::spawn(move || {
                for i in 0..WRITES {
                    atomically(|tx| tx.write(&var, drops.value(t * WRITES + i)));
                    max_live.fetch_max(drops.live(), Ordering::Relaxed);
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
    // Bounded by what the epochs hold back, not by the number of writes. A writer preempted
    // while pinned holds the epoch back for a scheduler time slice (some tens of thousands of
    // writes here), so the bound is a quarter of all writes; a broken reclamation keeps nearly
    // every value.
    assert!(
        max < WRITES as isize / 2,
        "{max} values alive: old versions are not reclaimed"
    );
    // Once the writers stop, more commits cut the chain down to what the design keeps: the
    // versions newer than the horizon (which trails by a few hundred commits of this thread)
    // plus at most one trim period (64 writes).
    let mut id = 2 * WRITES;
    let trimmed = drive_reclamation(|| {
        id += 1;
        atomically(|tx| tx.write(&var, drops.value(id)));
        drops.live() <= 512
    });
    assert!(trimmed, "{} values alive on a quiet chain", drops.live());
    drop(var);
    drops.assert_all_dropped("after the last handle was dropped");
}
