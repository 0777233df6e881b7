//! `LockTable`: the sharing rules against a model (proptest), mutual exclusion with shared
//! owners under 4 threads of random multi-resource requests (no deadlock, bounded time), the
//! scoped guard releasing on panic, blocking and non-blocking requests.

mod common;

use common::{finish, spawn_reporting, still_blocked, wait_for_runs, Rng, QUIET};
use mvstm::atomically;
use mvstm::collections::{LockTable, NotHeld, Wait};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Debug, Clone)]
enum Op {
    Lock {
        resources: Vec<u8>,
        owner: u8,
        shared_with: Vec<u8>,
    },
    Unlock {
        resources: Vec<u8>,
        owner: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let resources = prop::collection::vec(0u8..4, 1..4).prop_map(|mut v| {
        v.sort();
        v.dedup();
        v
    });
    prop_oneof![
        (
            resources.clone(),
            0u8..4,
            prop::collection::vec(0u8..4, 0..3)
        )
            .prop_map(|(resources, owner, shared_with)| Op::Lock {
                resources,
                owner,
                shared_with
            }),
        (resources, 0u8..4).prop_map(|(resources, owner)| Op::Unlock { resources, owner }),
    ]
}

/// The rules, stated directly: resource -> [(owner, shared_with)].
type Model = HashMap<u8, Vec<(u8, Vec<u8>)>>;

fn model_lock(
    m: &mut Model,
    resources: &[u8],
    owner: u8,
    shared_with: &[u8],
) -> Result<(), Vec<u8>> {
    let blocked: Vec<u8> = resources
        .iter()
        .copied()
        .filter(|r| {
            let holders = m.get(r).cloned().unwrap_or_default();
            let holds = holders.iter().any(|(o, _)| *o == owner);
            !holds && !holders.iter().all(|(_, s)| s.contains(&owner))
        })
        .collect();
    if !blocked.is_empty() {
        return Err(blocked);
    }
    for r in resources {
        let holders = m.entry(*r).or_default();
        if !holders.iter().any(|(o, _)| *o == owner) {
            holders.push((owner, shared_with.to_vec()));
        }
    }
    Ok(())
}

fn model_unlock(m: &mut Model, resources: &[u8], owner: u8) -> Result<(), Vec<u8>> {
    let missing: Vec<u8> = resources
        .iter()
        .copied()
        .filter(|r| !m.get(r).is_some_and(|h| h.iter().any(|(o, _)| *o == owner)))
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    for r in resources {
        let holders = m.get_mut(r).unwrap();
        holders.retain(|(o, _)| *o != owner);
        if holders.is_empty() {
            m.remove(r);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn lock_table_matches_a_model(ops in prop::collection::vec(op(), 1..40)) {
        let table: LockTable<u8, u8> = LockTable::new();
        let mut model = Model::new();
        for op in &ops {
            match op {
                Op::Lock { resources, owner, shared_with } => {
                    let got = atomically(|tx| table.lock(tx, resources, *owner, shared_with, Wait::NoWait));
                    prop_assert_eq!(got, model_lock(&mut model, resources, *owner, shared_with), "{:?}", op);
                }
                Op::Unlock { resources, owner } => {
                    let got = atomically(|tx| table.unlock(tx, resources, *owner)).map_err(|NotHeld(r)| r);
                    prop_assert_eq!(got, model_unlock(&mut model, resources, *owner), "{:?}", op);
                }
            }
            for r in 0u8..4 {
                let mut got = atomically(|tx| table.holders(tx, &r));
                let mut want: Vec<u8> = model.get(&r).map(|h| h.iter().map(|(o, _)| *o).collect()).unwrap_or_default();
                got.sort();
                want.sort();
                prop_assert_eq!(got, want);
            }
        }
    }
}

/// The holders of one resource as the workers report them: (owner, shared?).
type Holders = Mutex<Vec<(u8, bool)>>;

#[test]
fn mutual_exclusion_with_shared_owners_and_no_deadlock() {
    const RESOURCES: u8 = 5;
    const ROUNDS: u32 = 2_000;
    let table: LockTable<u8, u8> = LockTable::new();
    // Who holds each resource right now, as seen by the workers: (owner, shared?).
    let occupancy: Arc<Vec<Holders>> =
        Arc::new((0..RESOURCES).map(|_| Mutex::new(Vec::new())).collect());
    let no_wait_refusals = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4u8)
        .map(|owner| {
            let (table, occupancy, refusals) = (table.clone(), occupancy.clone(), no_wait_refusals.clone());
            spawn_reporting(move || {
                let partner = owner ^ 1; // owners 0 and 1 may share, and 2 and 3
                let mut rng = Rng(u64::from(owner) + 11);
                for _ in 0..ROUNDS {
                    let mut want: Vec<u8> = (0..2 + rng.below(2)).map(|_| rng.below(5) as u8).collect();
                    want.sort();
                    want.dedup();
                    // Reverse order half the time: overlapping requests in any order.
                    if rng.below(2) == 0 {
                        want.reverse();
                    }
                    let shared = rng.below(2) == 0;
                    let shared_with: &[u8] = if shared { &[partner] } else { &[] };
                    let wait = if rng.below(4) == 0 { Wait::NoWait } else { Wait::Block };
                    let guard = match table.scoped(&want, owner, shared_with, wait) {
                        Ok(guard) => guard,
                        Err(blocked) => {
                            assert!(!blocked.is_empty() && wait == Wait::NoWait);
                            refusals.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    for r in guard.resources() {
                        let mut holders = occupancy[*r as usize].lock().unwrap();
                        // Co-holders must be partners, and the earlier of the two must have
                        // named the later one: at least one of the holds is shared. (Which of
                        // the two records itself here first is a race, so check symmetrically.)
                        for &(other, other_shared) in holders.iter() {
                            assert!(
                                other == partner && (shared || other_shared),
                                "owner {owner} (shared: {shared}) took resource {r} held by {other} \
                                 (shared: {other_shared})"
                            );
                        }
                        holders.push((owner, shared));
                    }
                    std::hint::spin_loop();
                    for r in guard.resources() {
                        occupancy[*r as usize].lock().unwrap().retain(|&(o, _)| o != owner);
                    }
                    drop(guard);
                }
            })
        })
        .collect();
    for w in workers {
        finish(&w, "a lock worker (deadlock?)");
    }
    for r in 0..RESOURCES {
        assert!(
            atomically(|tx| table.holders(tx, &r)).is_empty(),
            "resource {r} still held"
        );
    }
    println!(
        "{} non-blocking requests were refused",
        no_wait_refusals.load(Ordering::Relaxed)
    );
}

#[test]
fn a_panic_inside_a_scoped_lock_releases_it() {
    let table: LockTable<&str, u32> = LockTable::new();
    let t = table.clone();
    let r = thread::spawn(move || {
        let _guard = t.scoped(&["a", "b"], 1, &[], Wait::Block).unwrap();
        panic!("the worker failed while holding the locks");
    })
    .join();
    assert!(r.is_err());
    assert!(atomically(|tx| table.holders(tx, &"a")).is_empty());
    assert!(table.scoped(&["a", "b"], 2, &[], Wait::NoWait).is_ok());
}

#[test]
fn a_blocking_request_waits_and_a_non_blocking_one_reports() {
    let table: LockTable<u8, &str> = LockTable::new();
    let held = table.scoped(&[1, 2], "first", &[], Wait::Block).unwrap();
    assert_eq!(
        table.scoped(&[2, 3], "second", &[], Wait::NoWait).err(),
        Some(vec![2])
    );
    // The refused request took nothing, not even the free resource 3.
    assert!(atomically(|tx| table.holders(tx, &3)).is_empty());
    let runs = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (table, runs) = (table.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                table.lock(tx, &[3, 2], "second", &[], Wait::Block)
            })
        })
    };
    wait_for_runs(&runs, 1);
    thread::sleep(QUIET);
    still_blocked(&waiter, "a blocking request for a held resource");
    drop(held);
    assert_eq!(finish(&waiter, "the request after the release"), Ok(()));
    assert_eq!(atomically(|tx| table.holders(tx, &2)), vec!["second"]);
    // Unlocking what one does not hold changes nothing and says so.
    assert_eq!(
        atomically(|tx| table.unlock(tx, &[1, 2], "second")),
        Err(NotHeld(vec![1]))
    );
    assert_eq!(atomically(|tx| table.holders(tx, &2)), vec!["second"]);
}

#[test]
fn nested_guards_and_partial_unlocks_release_only_their_own_resources() {
    let table: LockTable<&str, u32> = LockTable::new();
    let outer = table.scoped(&["a", "b"], 1, &[], Wait::Block).unwrap();
    {
        // The inner guard takes only "c" anew: "b" was already held by the outer one.
        let inner = table.scoped(&["b", "c"], 1, &[], Wait::Block).unwrap();
        assert_eq!(inner.resources(), ["c"]);
    }
    assert_eq!(
        atomically(|tx| table.holders(tx, &"b")),
        vec![1],
        "the inner guard released b"
    );
    assert!(atomically(|tx| table.holders(tx, &"c")).is_empty());
    // An explicit unlock of part of a guard's resources: the guard releases the rest.
    assert_eq!(atomically(|tx| table.unlock(tx, &["a"], 1)), Ok(()));
    drop(outer);
    for r in ["a", "b", "c"] {
        assert!(
            atomically(|tx| table.holders(tx, &r)).is_empty(),
            "{r} leaked"
        );
    }
}
