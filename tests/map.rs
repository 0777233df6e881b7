//! `TMap`: behaviour against `std::collections::HashMap` (proptest), writers of disjoint keys
//! that (almost) never conflict, and atomic snapshots that stay consistent while writers move
//! value between keys and the table grows.

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
