//! A lock table shared by workers: each takes 2–3 of 5 resources at once, some shared with a
//! named partner, some without waiting; does its work in commit hooks while holding them;
//! releases them through a scope guard. The output lists every step and ends with a check that
//! no resource ever had two exclusive holders and that every worker finished (no deadlock).
//!
//! Run with `cargo run --release --example locks`.

use mvstm::atomically;
use mvstm::collections::{LockTable, Wait};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;

const RESOURCES: [&str; 5] = ["printer", "scanner", "disk", "network", "db"];

/// Who holds what right now, as the workers report it (owner, shared?), checked on every take.
type Occupancy = Arc<Mutex<HashMap<&'static str, Vec<(&'static str, bool)>>>>;

fn main() {
    let table: LockTable<&'static str, &'static str> = LockTable::new();
    let jobs_done = mvstm::TVar::new(0u32);
    let occupancy: Occupancy = Arc::default();
    let violations = Arc::new(Mutex::new(Vec::new()));
    // (worker, its partner for shared holds ("" for none), resources per round)
    let plan: [(&str, &str, [&[&str]; 3]); 5] = [
        (
            "ann",
            "bob",
            [
                &["printer", "disk"],
                &["db", "network", "scanner"],
                &["disk", "db"],
            ],
        ),
        (
            "bob",
            "ann",
            [
                &["disk", "printer"],
                &["scanner", "db"],
                &["network", "printer", "disk"],
            ],
        ),
        (
            "cy",
            "dee",
            [
                &["network", "db"],
                &["printer", "scanner", "disk"],
                &["db", "scanner"],
            ],
        ),
        (
            "dee",
            "cy",
            [
                &["db", "network", "printer"],
                &["disk", "scanner"],
                &["printer", "network"],
            ],
        ),
        (
            "eve",
            "",
            [
                &["scanner", "printer"],
                &["network", "disk", "db"],
                &["db", "printer"],
            ],
        ),
    ];
    let workers: Vec<_> = plan
        .into_iter()
        .enumerate()
        .map(|(i, (me, partner, rounds))| {
            let (table, jobs_done) = (table.clone(), jobs_done.clone());
            let (occupancy, violations) = (occupancy.clone(), violations.clone());
            thread::spawn(move || {
                for (round, want) in rounds.into_iter().enumerate() {
                    // Round 1 shares with the partner; the last round of odd workers does not wait.
                    let shared = round == 1 && !partner.is_empty();
                    let shared_with: &[&str] = if shared { &[partner] } else { &[] };
                    let wait = if round == 2 && i % 2 == 1 {
                        Wait::NoWait
                    } else {
                        Wait::Block
                    };
                    let guard = match table.scoped(want, me, shared_with, wait) {
                        Ok(guard) => guard,
                        Err(busy) => {
                            println!("{me}: round {round}: {busy:?} busy, skipped (no wait)");
                            continue;
                        }
                    };
                    {
                        let mut occ = occupancy.lock().unwrap();
                        for r in guard.resources() {
                            let holders = occ.entry(r).or_default();
                            for &(other, other_shared) in holders.iter() {
                                // Allowed: partners, the earlier of whom named the other.
                                if !(other == partner && (shared || other_shared)) {
                                    violations
                                        .lock()
                                        .unwrap()
                                        .push(format!("{me} and {other} on {r}"));
                                }
                            }
                            holders.push((me, shared));
                        }
                    }
                    // The work: a transaction whose side effect runs in its commit hook.
                    let want = want.to_vec();
                    atomically(|tx| {
                        tx.modify(&jobs_done, |n| n + 1)?;
                        let want = want.clone();
                        let how = if shared {
                            format!("shared with {partner}")
                        } else {
                            "exclusive".into()
                        };
                        tx.after_commit(move || {
                            println!("{me}: round {round}: working on {want:?} ({how})")
                        });
                        Ok(())
                    });
                    let mut occ = occupancy.lock().unwrap();
                    for r in guard.resources() {
                        occ.get_mut(r).unwrap().retain(|&(o, _)| o != me);
                    }
                    drop(occ);
                    drop(guard); // released here
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker panicked");
    }
    let free = RESOURCES
        .iter()
        .all(|r| atomically(|tx| table.holders(tx, r)).is_empty());
    let violations = violations.lock().unwrap();
    println!(
        "\nall 5 workers finished (no deadlock); {} jobs done; every resource free again: {free}",
        jobs_done.load()
    );
    println!(
        "two exclusive holders at once: {}",
        if violations.is_empty() {
            "never"
        } else {
            "YES"
        }
    );
    assert!(violations.is_empty(), "{violations:?}");
    assert!(free);
}
