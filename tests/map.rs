//! `TMap`: behaviour against `std::collections::HashMap` (proptest, also with keys on few
//! hashes), writers of disjoint keys that (almost) never conflict, atomic snapshots that stay
//! consistent while writers move value between keys and the map grows, snapshots that keep
//! their content under later writes and are read while writers run, and values freed once.

mod common;

use mvstm::collections::TMap;
use mvstm::{atomically, StmResult, Txn};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, u32),
    Remove(u8),
    Get(u8),
    Contains(u8),
    Update(u8, Option<u32>),
    Len,
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    // Keys from a small range, so inserts, updates and removes meet the same keys, and buckets
    // overflow (the table grows) within a run.
    prop_oneof![
        4 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k % 64, v)),
        2 => any::<u8>().prop_map(|k| Op::Remove(k % 64)),
        2 => any::<u8>().prop_map(|k| Op::Get(k % 64)),
        1 => any::<u8>().prop_map(|k| Op::Contains(k % 64)),
        2 => (any::<u8>(), any::<Option<u32>>()).prop_map(|(k, v)| Op::Update(k % 64, v)),
        1 => Just(Op::Len),
        1 => Just(Op::Snapshot),
    ]
}

#[derive(Debug, PartialEq)]
enum Out {
    Value(Option<u32>),
    Bool(bool),
    Len(usize),
    All(Vec<(u8, u32)>),
}

fn apply(map: &TMap<u8, u32>, tx: &mut Txn, op: &Op) -> StmResult<Out> {
    Ok(match op {
        Op::Insert(k, v) => Out::Value(map.insert(tx, *k, *v)?),
        Op::Remove(k) => Out::Value(map.remove(tx, k)?),
        Op::Get(k) => Out::Value(map.get(tx, k)?),
        Op::Contains(k) => Out::Bool(map.contains_key(tx, k)?),
        // The closure adds the old value, so the result depends on what `update` passes it.
        Op::Update(k, v) => {
            Out::Value(map.update(tx, *k, |old| v.map(|v| v.wrapping_add(old.unwrap_or(0))))?)
        }
        Op::Len => Out::Len(map.len(tx)?),
        Op::Snapshot => {
            let mut all = map.snapshot(tx)?;
            all.sort();
            Out::All(all)
        }
    })
}

fn model(map: &mut HashMap<u8, u32>, op: &Op) -> Out {
    match op {
        Op::Insert(k, v) => Out::Value(map.insert(*k, *v)),
        Op::Remove(k) => Out::Value(map.remove(k)),
        Op::Get(k) => Out::Value(map.get(k).copied()),
        Op::Contains(k) => Out::Bool(map.contains_key(k)),
        Op::Update(k, v) => {
            let new = v.map(|v| v.wrapping_add(map.get(k).copied().unwrap_or(0)));
            match new {
                Some(n) => map.insert(*k, n),
                None => map.remove(k),
            };
            Out::Value(new)
        }
        Op::Len => Out::Len(map.len()),
        Op::Snapshot => {
            let mut all: Vec<(u8, u32)> = map.iter().map(|(k, v)| (*k, *v)).collect();
            all.sort();
            Out::All(all)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tmap_matches_a_hashmap(ops in prop::collection::vec(op(), 1..120), batch in 1usize..4) {
        let map = TMap::new();
        let mut expected = HashMap::new();
        // Several operations per transaction, so reads see the transaction's own writes.
        for chunk in ops.chunks(batch) {
            let got = atomically(|tx| chunk.iter().map(|op| apply(&map, tx, op)).collect::<StmResult<Vec<_>>>());
            let want: Vec<Out> = chunk.iter().map(|op| model(&mut expected, op)).collect();
            prop_assert_eq!(got, want, "after {:?}", chunk);
        }
    }
}

#[test]
fn writers_of_disjoint_keys_rarely_re_run() {
    let _serial = common::one_at_a_time();
    const PER_THREAD: u64 = 20_000;
    let map: TMap<u64, u64> = TMap::new();
    let bodies = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let (map, bodies) = (map.clone(), bodies.clone());
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    // Thread t owns the keys congruent to t modulo 2.
                    let key = i * 2 + t;
                    atomically(|tx| {
                        bodies.fetch_add(1, Ordering::Relaxed);
                        map.insert(tx, key, i).map(drop)
                    });
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let commits = 2 * PER_THREAD as usize;
    let reruns = bodies.load(Ordering::Relaxed) - commits;
    println!("{reruns} re-runs for {commits} commits");
    assert!(
        reruns * 100 < commits,
        "{reruns} re-runs for {commits} commits (>= 1%)"
    );
    assert_eq!(atomically(|tx| map.len(tx)), commits);
    for key in [0, 1, 2 * PER_THREAD - 1, 2 * PER_THREAD - 2] {
        assert_eq!(atomically(|tx| map.get(tx, &key)), Some(key / 2));
    }
}

#[test]
fn snapshots_stay_consistent_while_writers_move_value_and_the_table_grows() {
    let _serial = common::one_at_a_time();
    const KEYS: u64 = 50;
    const TOTAL: u64 = 1_000 * KEYS;
    let map: TMap<u64, u64> = TMap::new();
    for k in 0..KEYS {
        atomically(|tx| map.insert(tx, k, 1_000).map(drop));
    }
    let movers: Vec<_> = (0..2u64)
        .map(|t| {
            let map = map.clone();
            thread::spawn(move || {
                let mut x = t + 1;
                for i in 0..5_000u64 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (from, to) = ((x >> 33) % KEYS, (x >> 13) % KEYS);
                    atomically(|tx| {
                        let a = map.get(tx, &from)?.unwrap_or(0);
                        let n = a.min(7);
                        map.insert(tx, from, a - n)?;
                        map.update(tx, to, |b| Some(b.unwrap_or(0) + n))?;
                        // New keys with no value make the table grow meanwhile.
                        map.insert(tx, 1_000_000 + t * 10_000 + i, 0).map(drop)
                    });
                }
            })
        })
        .collect();
    let mut snapshots = 0;
    while movers.iter().any(|m| !m.is_finished()) {
        let sum: u64 = atomically(|tx| Ok(map.snapshot(tx)?.iter().map(|(_, v)| v).sum()));
        assert_eq!(sum, TOTAL, "a snapshot saw a torn transfer");
        snapshots += 1;
    }
    for m in movers {
        m.join().unwrap();
    }
    assert_eq!(atomically(|tx| map.len(tx)), (KEYS + 10_000) as usize);
    println!("{snapshots} consistent snapshots");
}

/// A key whose `Hash` is the same for every value: legal, and the worst case for a hash map.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Collides(u32);

impl std::hash::Hash for Collides {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        0u8.hash(state);
    }
}

#[test]
fn keys_with_one_hash_do_not_make_the_table_grow_forever() {
    let map: TMap<Collides, u32> = TMap::new();
    for i in 0..200 {
        atomically(|tx| map.insert(tx, Collides(i), i).map(drop));
    }
    for i in 0..200 {
        assert_eq!(atomically(|tx| map.get(tx, &Collides(i))), Some(i));
        atomically(|tx| map.insert(tx, Collides(i), i + 1).map(drop)); // overwrites never grow
    }
    assert_eq!(atomically(|tx| map.len(tx)), 200);
    assert_eq!(atomically(|tx| map.remove(tx, &Collides(7))), Some(8));
    assert_eq!(atomically(|tx| map.remove(tx, &Collides(7))), None);
}

#[test]
fn lookups_take_borrowed_keys() {
    let map: TMap<String, u32> = TMap::new();
    atomically(|tx| map.insert(tx, "k".to_string(), 1).map(drop));
    assert_eq!(atomically(|tx| map.get(tx, "k")), Some(1));
    assert!(atomically(|tx| map.contains_key(tx, "k")));
    assert_eq!(atomically(|tx| map.remove(tx, "k")), Some(1));
}

// ---- Snapshots from the persistent trie ----

/// A key whose hash takes only seven values: many keys share a full hash (collision nodes in
/// the trie), and every key lands in one of at most seven buckets.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
struct Few(u16);

impl std::hash::Hash for Few {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.0 % 7).hash(state);
    }
}

#[derive(Debug, Clone)]
enum FewOp {
    Insert(u16, u32),
    Remove(u16),
    Get(u16),
    Iter,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Many keys on few hashes, one operation per transaction, and old snapshots kept: each
    /// still iterates exactly what the map held when it was taken.
    #[test]
    fn colliding_keys_and_kept_snapshots_match_a_hashmap(
        ops in prop::collection::vec(prop_oneof![
            5 => (0u16..400, any::<u32>()).prop_map(|(k, v)| FewOp::Insert(k, v)),
            3 => (0u16..400).prop_map(FewOp::Remove),
            2 => (0u16..400).prop_map(FewOp::Get),
            1 => Just(FewOp::Iter),
        ], 1..800),
    ) {
        let map: TMap<Few, u32> = TMap::new();
        let mut model: HashMap<u16, u32> = HashMap::new();
        let mut kept = Vec::new();
        for op in &ops {
            match *op {
                FewOp::Insert(k, v) => {
                    prop_assert_eq!(atomically(|tx| map.insert(tx, Few(k), v)), model.insert(k, v));
                }
                FewOp::Remove(k) => {
                    prop_assert_eq!(atomically(|tx| map.remove(tx, &Few(k))), model.remove(&k));
                }
                FewOp::Get(k) => {
                    prop_assert_eq!(atomically(|tx| map.get(tx, &Few(k))), model.get(&k).copied());
                }
                FewOp::Iter => kept.push((atomically(|tx| map.iter(tx)), model.clone())),
            }
        }
        kept.push((atomically(|tx| map.iter(tx)), model.clone()));
        for (it, want) in kept {
            prop_assert_eq!(it.len(), want.len());
            let got: HashMap<u16, u32> = it.map(|(Few(k), v)| (k, v)).collect();
            prop_assert_eq!(got, want);
        }
        prop_assert_eq!(atomically(|tx| map.len(tx)), model.len());
    }
}

#[test]
fn a_snapshot_taken_before_a_batch_of_writes_iterates_the_old_content() {
    let map: TMap<u32, String> = TMap::new();
    atomically(|tx| (0..2_000).try_for_each(|i| map.insert(tx, i, i.to_string()).map(drop)));
    let before = atomically(|tx| map.iter(tx));
    let half_read = {
        // An iterator part-way through, cloned: the clone resumes from the same position.
        let mut it = atomically(|tx| map.iter(tx));
        let first: Vec<(u32, String)> = it.by_ref().take(700).collect();
        (first, it)
    };
    // Overwrite, remove and add, in every bucket, in one big and many small transactions.
    atomically(|tx| {
        for i in (0..2_000).step_by(3) {
            map.insert(tx, i, "new".to_string())?;
        }
        Ok(())
    });
    for i in (1..2_000).step_by(3) {
        atomically(|tx| map.remove(tx, &i).map(drop));
    }
    atomically(|tx| (2_000..3_000).try_for_each(|i| map.insert(tx, i, i.to_string()).map(drop)));

    let want: Vec<(u32, String)> = (0..2_000).map(|i| (i, i.to_string())).collect();
    assert_eq!(before.len(), 2_000);
    let mut old: Vec<(u32, String)> = before.clone().collect();
    old.sort();
    assert_eq!(old, want, "the snapshot changed under later writes");
    let (mut first, rest) = half_read;
    assert_eq!(rest.len(), 1_300);
    first.extend(rest.clone());
    first.sort();
    assert_eq!(
        first, want,
        "a part-read snapshot changed under later writes"
    );
    // The map itself moved on.
    assert_eq!(atomically(|tx| map.len(tx)), 2_000 - 667 + 1_000);
    assert_eq!(atomically(|tx| map.get(tx, &0)), Some("new".to_string()));
}

#[test]
fn iterators_see_consistent_snapshots_during_concurrent_inserts_and_removes() {
    // Writers keep two invariants in every transaction: key k is present exactly when key
    // k + PAIR is (inserted and removed together), and the values of the keys below PAIR sum
    // to TOTAL (a transfer between two of them). Readers take iterators in read-only
    // transactions, count the bodies (a read-only snapshot never re-runs), and consume each
    // iterator slowly, after the transaction and while the writers go on.
    let _serial = common::one_at_a_time();
    const KEYS: u64 = 200;
    const PAIR: u64 = 1_000_000;
    const TOTAL: u64 = 100 * KEYS;
    let map: TMap<u64, u64> = TMap::new();
    atomically(|tx| (0..KEYS).try_for_each(|k| map.insert(tx, k, 100).map(drop)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let (map, stop) = (map.clone(), stop.clone());
            thread::spawn(move || {
                let mut rng = common::Rng(t + 11);
                let mut commits = 0u64;
                while !stop.load(Ordering::Relaxed) || commits < 2_000 {
                    let (a, b) = (
                        rng.below(KEYS as usize) as u64,
                        rng.below(KEYS as usize) as u64,
                    );
                    let extra = 10_000 + rng.below(5_000) as u64;
                    atomically(|tx| {
                        let x = map.get(tx, &a)?.expect("a base key is never removed");
                        let n = x.min(3);
                        map.insert(tx, a, x - n)?;
                        map.update(tx, b, |y| Some(y.expect("present") + n))?;
                        if map.remove(tx, &extra)?.is_some() {
                            assert!(map.remove(tx, &(extra + PAIR))?.is_some());
                        } else {
                            map.insert(tx, extra, t)?;
                            map.insert(tx, extra + PAIR, t)?;
                        }
                        Ok(())
                    });
                    commits += 1;
                }
                commits
            })
        })
        .collect();
    let bodies = AtomicUsize::new(0);
    let mut snapshots = 0;
    while snapshots < 50 || writers.iter().any(|w| !w.is_finished()) && snapshots < 2_000 {
        let before = bodies.load(Ordering::Relaxed);
        let it = atomically(|tx| {
            bodies.fetch_add(1, Ordering::Relaxed);
            map.iter(tx)
        });
        assert_eq!(
            bodies.load(Ordering::Relaxed) - before,
            1,
            "a read-only snapshot re-ran"
        );
        let len = it.len();
        let (mut sum, mut seen, mut extras) = (0, 0, std::collections::HashSet::new());
        for (i, (k, v)) in it.enumerate() {
            if i % 64 == 0 {
                thread::yield_now(); // let writers commit while this snapshot is read
            }
            seen += 1;
            if k < KEYS {
                sum += v;
            } else {
                extras.insert(k);
            }
        }
        assert_eq!(seen, len, "the iterator's length was not its count");
        assert_eq!(sum, TOTAL, "a snapshot saw a torn transfer");
        for &k in &extras {
            let other = if k >= PAIR { k - PAIR } else { k + PAIR };
            assert!(extras.contains(&other), "a snapshot saw half of a pair");
        }
        snapshots += 1;
        if snapshots == 50 {
            stop.store(true, Ordering::Relaxed);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let commits: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    println!("{snapshots} consistent snapshots during {commits} commits");
}

#[test]
fn every_value_is_dropped_once() {
    // Values overwritten, removed, held by a kept snapshot, and left in the map when it is
    // dropped: each freed exactly once (PITFALLS 11).
    let drops = common::DropCounter::new();
    {
        let map: TMap<u32, common::Counted> = TMap::new();
        for i in 0..3_000u32 {
            atomically(|tx| map.insert(tx, i, drops.value(u64::from(i))).map(drop));
        }
        let snapshot = atomically(|tx| map.iter(tx));
        for i in (0..3_000u32).step_by(2) {
            atomically(|tx| map.insert(tx, i, drops.value(0)).map(drop));
        }
        for i in (0..3_000u32).step_by(3) {
            atomically(|tx| map.remove(tx, &i).map(drop));
        }
        let ids: u64 = snapshot.map(|(_, v)| v.id).sum();
        assert_eq!(
            ids,
            (0..3_000u64).sum::<u64>(),
            "the snapshot kept the old values"
        );
    }
    drops.assert_all_dropped("TMap values");
}
