//! `TArray`: behaviour against a `Vec` (proptest), transactions on disjoint indices that never
//! conflict (counted attempts), and transfers between slots from real threads that keep the
//! total while consistent readers watch.

mod common;

use mvstm::collections::TArray;
use mvstm::{atomically, StmResult, Txn};
use proptest::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

const LEN: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Get(usize),
    Set(usize, u32),
    Swap(usize, u32),
    Update(usize, u32),
    ToVec,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..LEN).prop_map(Op::Get),
        2 => (0..LEN, any::<u32>()).prop_map(|(i, v)| Op::Set(i, v)),
        1 => (0..LEN, any::<u32>()).prop_map(|(i, v)| Op::Swap(i, v)),
        2 => (0..LEN, any::<u32>()).prop_map(|(i, v)| Op::Update(i, v)),
        1 => Just(Op::ToVec),
    ]
}

#[derive(Debug, PartialEq)]
enum Out {
    Value(u32),
    Unit,
    All(Vec<u32>),
}

fn apply(arr: &TArray<u32>, tx: &mut Txn, op: &Op) -> StmResult<Out> {
    Ok(match *op {
        Op::Get(i) => Out::Value(arr.get(tx, i)?),
        Op::Set(i, v) => {
            arr.set(tx, i, v)?;
            Out::Unit
        }
        Op::Swap(i, v) => Out::Value(arr.swap(tx, i, v)?),
        Op::Update(i, v) => Out::Value(arr.update(tx, i, |old| old.wrapping_add(v))?),
        Op::ToVec => Out::All(arr.to_vec(tx)?),
    })
}

fn model(arr: &mut [u32], op: &Op) -> Out {
    match *op {
        Op::Get(i) => Out::Value(arr[i]),
        Op::Set(i, v) => {
            arr[i] = v;
            Out::Unit
        }
        Op::Swap(i, v) => Out::Value(std::mem::replace(&mut arr[i], v)),
        Op::Update(i, v) => {
            arr[i] = arr[i].wrapping_add(v);
            Out::Value(arr[i])
        }
        Op::ToVec => Out::All(arr.to_vec()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tarray_matches_a_vec(ops in prop::collection::vec(op(), 1..100), batch in 1usize..4) {
        let arr = TArray::new(LEN, 0u32);
        let mut expected = vec![0u32; LEN];
        // Several operations per transaction, so reads see the transaction's own writes.
        for chunk in ops.chunks(batch) {
            let got = atomically(|tx| chunk.iter().map(|op| apply(&arr, tx, op)).collect::<StmResult<Vec<_>>>());
            let want: Vec<Out> = chunk.iter().map(|op| model(&mut expected, op)).collect();
            prop_assert_eq!(got, want, "after {:?}", chunk);
        }
        prop_assert_eq!(arr.len(), LEN);
    }
}

/// Run a transaction updating `first` that, in its first attempt, waits between its update and
/// its commit for another thread to commit an update of `second`; the number of attempts it took.
fn attempts_with_an_interleaved_writer(first: usize, second: usize) -> u32 {
    let arr = TArray::new(4, 0u64);
    let attempts = Arc::new(AtomicU32::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let other = arr.clone();
    let writer = thread::spawn(move || {
        ready_rx
            .recv()
            .expect("the first transaction reached its update");
        atomically(|tx| other.update(tx, second, |n| n + 1));
        done_tx.send(()).unwrap();
    });
    let counted = Arc::clone(&attempts);
    atomically(|tx| {
        counted.fetch_add(1, Ordering::SeqCst);
        arr.update(tx, first, |n| n + 10)?;
        if tx.attempt() == 1 {
            ready_tx.send(()).unwrap();
            done_rx
                .recv_timeout(common::LIMIT)
                .expect("the other writer committed");
        }
        Ok(())
    });
    writer.join().unwrap();
    let mut want = vec![0u64; 4];
    want[first] += 10;
    want[second] += 1;
    assert_eq!(atomically(|tx| arr.to_vec(tx)), want, "no update lost");
    attempts.load(Ordering::SeqCst)
}

#[test]
fn transactions_on_disjoint_indices_never_conflict() {
    let _serial = common::one_at_a_time();
    for _ in 0..20 {
        assert_eq!(
            attempts_with_an_interleaved_writer(0, 1),
            1,
            "a commit on slot 1 made a transaction on slot 0 re-run"
        );
    }
    // The control: the same interleaving on one index does conflict, so the count above can
    // tell the difference.
    assert!(attempts_with_an_interleaved_writer(2, 2) >= 2);
}

#[test]
fn transfers_between_slots_keep_the_total_for_consistent_readers() {
    let _serial = common::one_at_a_time();
    const SLOTS: usize = 16;
    const PER_SLOT: u64 = 1_000;
    let arr = TArray::new(SLOTS, PER_SLOT);
    let movers: Vec<_> = (0..2u64)
        .map(|seed| {
            let arr = arr.clone();
            thread::spawn(move || {
                let mut rng = common::Rng(seed + 1);
                for _ in 0..5_000 {
                    let (from, to) = (rng.below(SLOTS), rng.below(SLOTS));
                    atomically(|tx| {
                        let have = arr.get(tx, from)?;
                        let n = have.min(7);
                        arr.set(tx, from, have - n)?;
                        arr.update(tx, to, |v| v + n).map(drop)
                    });
                }
            })
        })
        .collect();
    let mut checks = 0;
    while !movers.iter().all(|m| m.is_finished()) || checks == 0 {
        let total: u64 = atomically(|tx| arr.to_vec(tx)).iter().sum();
        assert_eq!(
            total,
            SLOTS as u64 * PER_SLOT,
            "a reader saw a torn transfer"
        );
        checks += 1;
    }
    for m in movers {
        m.join().unwrap();
    }
    let total: u64 = atomically(|tx| arr.to_vec(tx)).iter().sum();
    assert_eq!(total, SLOTS as u64 * PER_SLOT);
}

#[test]
fn an_index_out_of_bounds_panics_with_the_index_and_the_length() {
    let arr = TArray::new(3, 0u8);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        atomically(|tx| arr.set(tx, 3, 1));
    }))
    .expect_err("an out-of-range set must panic");
    let msg = common::panic_message(&*caught);
    assert!(msg.contains("len is 3 but the index is 3"), "{msg}");
    assert_eq!(
        atomically(|tx| arr.to_vec(tx)),
        vec![0, 0, 0],
        "nothing was written"
    );
}

#[test]
fn construction_from_values_keeps_their_order() {
    let a = TArray::from_vec(vec!["x", "y"]);
    let b: TArray<u32> = (10..13).collect();
    assert_eq!(atomically(|tx| a.to_vec(tx)), vec!["x", "y"]);
    assert_eq!(atomically(|tx| b.to_vec(tx)), vec![10, 11, 12]);
    assert!(TArray::<u8>::from_vec(Vec::new()).is_empty());
    assert_eq!(format!("{a:?}"), "TArray { len: 2, .. }");
}
