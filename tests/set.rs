//! `TSet`: behaviour against `std::collections::HashSet` (proptest), and writers of disjoint
//! elements from real threads while readers take consistent snapshots.

mod common;

use mvstm::collections::TSet;
use mvstm::{atomically, StmResult, Txn};
use proptest::prelude::*;
use std::collections::HashSet;
use std::thread;

#[derive(Debug, Clone)]
enum Op {
    Insert(u8),
    Remove(u8),
    Contains(u8),
    Len,
    IsEmpty,
    Iter,
}

fn op() -> impl Strategy<Value = Op> {
    // A small range, so inserts and removes meet the same elements and the table grows.
    prop_oneof![
        4 => any::<u8>().prop_map(|k| Op::Insert(k % 48)),
        3 => any::<u8>().prop_map(|k| Op::Remove(k % 48)),
        2 => any::<u8>().prop_map(|k| Op::Contains(k % 48)),
        1 => Just(Op::Len),
        1 => Just(Op::IsEmpty),
        1 => Just(Op::Iter),
    ]
}

#[derive(Debug, PartialEq)]
enum Out {
    Bool(bool),
    Len(usize),
    All(Vec<u8>),
}

fn apply(set: &TSet<u8>, tx: &mut Txn, op: &Op) -> StmResult<Out> {
    Ok(match op {
        Op::Insert(k) => Out::Bool(set.insert(tx, *k)?),
        Op::Remove(k) => Out::Bool(set.remove(tx, k)?),
        Op::Contains(k) => Out::Bool(set.contains(tx, k)?),
        Op::Len => Out::Len(set.len(tx)?),
        Op::IsEmpty => Out::Bool(set.is_empty(tx)?),
        Op::Iter => {
            let mut all: Vec<u8> = set.iter(tx)?.collect();
            all.sort();
            Out::All(all)
        }
    })
}

fn model(set: &mut HashSet<u8>, op: &Op) -> Out {
    match op {
        Op::Insert(k) => Out::Bool(set.insert(*k)),
        Op::Remove(k) => Out::Bool(set.remove(k)),
        Op::Contains(k) => Out::Bool(set.contains(k)),
        Op::Len => Out::Len(set.len()),
        Op::IsEmpty => Out::Bool(set.is_empty()),
        Op::Iter => {
            let mut all: Vec<u8> = set.iter().copied().collect();
            all.sort();
            Out::All(all)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tset_matches_a_hashset(ops in prop::collection::vec(op(), 1..120), batch in 1usize..4) {
        let set = TSet::new();
        let mut expected = HashSet::new();
        for chunk in ops.chunks(batch) {
            let got = atomically(|tx| chunk.iter().map(|op| apply(&set, tx, op)).collect::<StmResult<Vec<_>>>());
            let want: Vec<Out> = chunk.iter().map(|op| model(&mut expected, op)).collect();
            prop_assert_eq!(got, want, "after {:?}", chunk);
        }
    }
}

#[test]
fn moving_elements_between_sets_is_seen_whole() {
    // Two threads move elements between two sets (remove from one, insert into the other, in one
    // transaction); a reader's snapshot of both always holds every element exactly once.
    let _serial = common::one_at_a_time();
    const N: u32 = 200;
    let (a, b) = (TSet::new(), TSet::new());
    atomically(|tx| (0..N).try_for_each(|i| a.insert(tx, i).map(drop)));
    let movers: Vec<_> = (0..2u64)
        .map(|seed| {
            let (a, b) = (a.clone(), b.clone());
            thread::spawn(move || {
                let mut rng = common::Rng(seed + 7);
                for _ in 0..3_000 {
                    let x = rng.below(N as usize) as u32;
                    atomically(|tx| {
                        if a.remove(tx, &x)? {
                            assert!(b.insert(tx, x)?);
                        } else {
                            assert!(b.remove(tx, &x)?);
                            assert!(a.insert(tx, x)?);
                        }
                        Ok(())
                    });
                }
            })
        })
        .collect();
    let mut checks = 0;
    while !movers.iter().all(|m| m.is_finished()) || checks == 0 {
        let (mut in_a, in_b): (Vec<u32>, Vec<u32>) =
            atomically(|tx| Ok((a.iter(tx)?.collect(), b.iter(tx)?.collect())));
        in_a.extend(in_b);
        in_a.sort();
        assert_eq!(in_a, (0..N).collect::<Vec<_>>(), "a torn snapshot");
        checks += 1;
    }
    for m in movers {
        m.join().unwrap();
    }
    assert_eq!(atomically(|tx| Ok(a.len(tx)? + b.len(tx)?)), N as usize);
}

#[test]
fn lookups_take_borrowed_forms() {
    let s: TSet<String> = TSet::new();
    assert!(atomically(|tx| s.insert(tx, "a".to_string())));
    assert!(atomically(|tx| s.contains(tx, "a")));
    assert!(!atomically(|tx| s.contains(tx, "b")));
    assert!(atomically(|tx| s.remove(tx, "a")));
    assert_eq!(format!("{s:?}"), "TSet { .. }");
}
