//! `TPriorityQueue`: behaviour against `std::collections::BinaryHeap` (proptest), a push below
//! the top chunk that does not conflict with a pop, and producers and consumers on real threads
//! that deliver every element once, each consumer in non-increasing order per transaction.

mod common;

use mvstm::collections::TPriorityQueue;
use mvstm::{atomically, StmResult, Txn};
use proptest::prelude::*;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;

#[derive(Debug, Clone)]
enum Op {
    Push(u16),
    TryPop,
    TryPeek,
    Len,
    IsEmpty,
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    // Values from a narrow range (many equal ones) and a wide one; enough pushes for chunks to
    // split and pops for top chunks to empty.
    prop_oneof![
        4 => (0u16..20).prop_map(Op::Push),
        4 => any::<u16>().prop_map(Op::Push),
        4 => Just(Op::TryPop),
        1 => Just(Op::TryPeek),
        1 => Just(Op::Len),
        1 => Just(Op::IsEmpty),
        1 => prop::bool::weighted(0.1).prop_map(|_| Op::Drain),
    ]
}

#[derive(Debug, PartialEq)]
enum Out {
    Unit,
    Value(Option<u16>),
    Len(usize),
    Bool(bool),
    All(Vec<u16>),
}

fn apply(pq: &TPriorityQueue<u16>, tx: &mut Txn, op: &Op) -> StmResult<Out> {
    Ok(match op {
        Op::Push(v) => {
            pq.push(tx, *v)?;
            Out::Unit
        }
        Op::TryPop => Out::Value(pq.try_pop(tx)?),
        Op::TryPeek => Out::Value(pq.try_peek(tx)?),
        Op::Len => Out::Len(pq.len(tx)?),
        Op::IsEmpty => Out::Bool(pq.is_empty(tx)?),
        Op::Drain => Out::All(pq.drain(tx)?),
    })
}

fn model(heap: &mut BinaryHeap<u16>, op: &Op) -> Out {
    match op {
        Op::Push(v) => {
            heap.push(*v);
            Out::Unit
        }
        Op::TryPop => Out::Value(heap.pop()),
        Op::TryPeek => Out::Value(heap.peek().copied()),
        Op::Len => Out::Len(heap.len()),
        Op::IsEmpty => Out::Bool(heap.is_empty()),
        Op::Drain => Out::All(
            std::mem::take(heap)
                .into_sorted_vec()
                .into_iter()
                .rev()
                .collect(),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tpriorityqueue_matches_a_binary_heap(ops in prop::collection::vec(op(), 1..400), batch in 1usize..5) {
        let pq = TPriorityQueue::new();
        let mut expected = BinaryHeap::new();
        for chunk in ops.chunks(batch) {
            let got = atomically(|tx| chunk.iter().map(|op| apply(&pq, tx, op)).collect::<StmResult<Vec<_>>>());
            let want: Vec<Out> = chunk.iter().map(|op| model(&mut expected, op)).collect();
            prop_assert_eq!(got, want, "after {:?}", chunk);
        }
        let rest: Vec<u16> = std::iter::from_fn(|| atomically(|tx| pq.try_pop(tx))).collect();
        prop_assert_eq!(rest, expected.into_sorted_vec().into_iter().rev().collect::<Vec<_>>());
    }
}

#[test]
fn many_equal_elements_and_long_runs_come_out_in_order() {
    let pq = TPriorityQueue::new();
    // 300 equal elements cannot be split by value; they stay in one long chunk.
    atomically(|tx| (0..300).try_for_each(|_| pq.push(tx, 5u32)));
    atomically(|tx| (0..3_000u32).try_for_each(|i| pq.push(tx, (i * 7_919) % 3_001)));
    let all = atomically(|tx| pq.drain(tx));
    assert_eq!(all.len(), 3_300);
    assert!(all.windows(2).all(|w| w[0] >= w[1]), "not greatest first");
    assert_eq!(all.iter().filter(|&&x| x == 5).count(), 301);
}

/// The attempts of a pop that, in its first attempt, waits for a push of `pushed` on another
/// thread to commit between its read and its commit.
fn attempts_of_a_pop_interleaved_with_a_push(pushed: u32) -> u32 {
    let pq = TPriorityQueue::new();
    // 1,000 elements: many chunks, the top one holding (roughly) the greatest 32 to 64.
    atomically(|tx| (0..1_000u32).try_for_each(|i| pq.push(tx, i * 10)));
    let attempts = AtomicU32::new(0);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let other = pq.clone();
    let pusher = thread::spawn(move || {
        ready_rx.recv().unwrap();
        atomically(|tx| other.push(tx, pushed));
        done_tx.send(()).unwrap();
    });
    let got = atomically(|tx| {
        attempts.fetch_add(1, Ordering::SeqCst);
        let got = pq.pop(tx)?;
        if tx.attempt() == 1 {
            ready_tx.send(()).unwrap();
            done_rx.recv_timeout(common::LIMIT).unwrap();
        }
        Ok(got)
    });
    pusher.join().unwrap();
    assert_eq!(
        got,
        9_990.max(if attempts.load(Ordering::SeqCst) > 1 {
            pushed
        } else {
            0
        })
    );
    assert_eq!(atomically(|tx| pq.len(tx)), 1_000, "one pushed, one popped");
    attempts.load(Ordering::SeqCst)
}

#[test]
fn a_push_below_the_top_chunk_does_not_conflict_with_a_pop() {
    let _serial = common::one_at_a_time();
    for pushed in [5u32, 1_234, 5_001] {
        assert_eq!(
            attempts_of_a_pop_interleaved_with_a_push(pushed),
            1,
            "push of {pushed}"
        );
    }
    // The control: a push of a new greatest element must make the pop re-run (and return it).
    assert!(attempts_of_a_pop_interleaved_with_a_push(100_000) >= 2);
}

#[test]
fn producers_and_consumers_deliver_every_element_once() {
    let _serial = common::one_at_a_time();
    const PER_PRODUCER: u32 = 4_000;
    let pq = TPriorityQueue::new();
    let producers: Vec<_> = (0..2u32)
        .map(|p| {
            let pq = pq.clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    atomically(|tx| pq.push(tx, (i * 2 + p) * 7_919 % 1_000_003));
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let pq = pq.clone();
            common::spawn_reporting(move || {
                let mut got = Vec::new();
                // Each consumer takes half of the 2 * PER_PRODUCER elements, two at a time.
                for _ in 0..PER_PRODUCER / 2 {
                    // Two pops in one transaction come out greatest first.
                    let (a, b) = atomically(|tx| Ok((pq.pop(tx)?, pq.pop(tx)?)));
                    assert!(a >= b);
                    got.extend([a, b]);
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut all: Vec<u32> = consumers
        .iter()
        .flat_map(|rx| common::finish(rx, "a consumer"))
        .collect();
    all.sort();
    let mut want: Vec<u32> = (0..2 * PER_PRODUCER)
        .map(|i| i * 7_919 % 1_000_003)
        .collect();
    want.sort();
    assert_eq!(all, want, "an element lost or delivered twice");
    assert!(atomically(|tx| pq.is_empty(tx)));
}
