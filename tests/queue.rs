//! `TQueue` and `TBQueue`: behaviour against a `VecDeque` model (proptest), exactly-once
//! delivery with 2 producers and 2 consumers, the capacity bound, blocking while full or empty,
//! and no conflicts between a producer and a consumer of a non-empty queue.

mod common;

use common::{finish, spawn_reporting, still_blocked, wait_for_runs, QUIET};
use mvstm::atomically;
use mvstm::collections::{Full, TBQueue, TQueue};
use proptest::prelude::*;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    TryPop,
    TryPeek,
    Len,
    IsEmpty,
    Drain,
    /// Several operations in one transaction.
    Batch(Vec<Op>),
}

fn op() -> impl Strategy<Value = Op> {
    let leaf = prop_oneof![
        4 => any::<u32>().prop_map(Op::Push),
        3 => Just(Op::TryPop),
        1 => Just(Op::TryPeek),
        1 => Just(Op::Len),
        1 => Just(Op::IsEmpty),
        1 => Just(Op::Drain),
    ];
    leaf.prop_recursive(1, 8, 6, |inner| {
        prop::collection::vec(inner, 1..6).prop_map(Op::Batch)
    })
}

/// What an operation returned, comparable between the queue and the model.
#[derive(Debug, PartialEq)]
enum Out {
    Unit,
    Item(Option<u32>),
    Len(usize),
    Empty(bool),
    Items(Vec<u32>),
    Pushed(Result<(), u32>),
}

/// The two queues behind one interface, so one model serves both.
trait Queue {
    fn apply(&self, tx: &mut mvstm::Txn, op: &Op, out: &mut Vec<Out>) -> mvstm::StmResult<()>;
}

impl Queue for TQueue<u32> {
    fn apply(&self, tx: &mut mvstm::Txn, op: &Op, out: &mut Vec<Out>) -> mvstm::StmResult<()> {
        out.push(match op {
            Op::Push(v) => {
                self.push(tx, *v)?;
                Out::Unit
            }
            Op::TryPop => Out::Item(self.try_pop(tx)?),
            Op::TryPeek => Out::Item(self.try_peek(tx)?),
            Op::Len => Out::Len(self.len(tx)?),
            Op::IsEmpty => Out::Empty(self.is_empty(tx)?),
            Op::Drain => Out::Items(self.drain(tx)?),
            Op::Batch(ops) => {
                for op in ops {
                    self.apply(tx, op, out)?;
                }
                return Ok(());
            }
        });
        Ok(())
    }
}

impl Queue for TBQueue<u32> {
    fn apply(&self, tx: &mut mvstm::Txn, op: &Op, out: &mut Vec<Out>) -> mvstm::StmResult<()> {
        out.push(match op {
            Op::Push(v) => Out::Pushed(self.try_push(tx, *v)?.map_err(|Full(v)| v)),
            Op::TryPop => Out::Item(self.try_pop(tx)?),
            Op::TryPeek => Out::Item(self.try_peek(tx)?),
            Op::Len => Out::Len(self.len(tx)?),
            Op::IsEmpty => Out::Empty(self.is_empty(tx)?),
            Op::Drain => Out::Items(self.drain(tx)?),
            Op::Batch(ops) => {
                for op in ops {
                    self.apply(tx, op, out)?;
                }
                return Ok(());
            }
        });
        Ok(())
    }
}

/// The model: a `VecDeque` with an optional capacity.
fn model(queue: &mut VecDeque<u32>, capacity: Option<usize>, op: &Op, out: &mut Vec<Out>) {
    out.push(match op {
        Op::Push(v) => match capacity {
            None => {
                queue.push_back(*v);
                Out::Unit
            }
            Some(cap) if queue.len() < cap => {
                queue.push_back(*v);
                Out::Pushed(Ok(()))
            }
            Some(_) => Out::Pushed(Err(*v)),
        },
        Op::TryPop => Out::Item(queue.pop_front()),
        Op::TryPeek => Out::Item(queue.front().copied()),
        Op::Len => Out::Len(queue.len()),
        Op::IsEmpty => Out::Empty(queue.is_empty()),
        Op::Drain => Out::Items(queue.drain(..).collect()),
        Op::Batch(ops) => {
            for op in ops {
                model(queue, capacity, op, out);
            }
            return;
        }
    });
}

fn check(queue: &impl Queue, capacity: Option<usize>, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut expected = VecDeque::new();
    for op in ops {
        let mut got = Vec::new();
        atomically(|tx| {
            got.clear();
            queue.apply(tx, op, &mut got)
        });
        let mut want = Vec::new();
        model(&mut expected, capacity, op, &mut want);
        prop_assert_eq!(got, want, "after {:?}", op);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tqueue_matches_a_vecdeque(ops in prop::collection::vec(op(), 1..60)) {
        check(&TQueue::new(), None, &ops)?;
    }

    #[test]
    fn tbqueue_matches_a_bounded_vecdeque(cap in 1usize..6, ops in prop::collection::vec(op(), 1..60)) {
        check(&TBQueue::new(cap), Some(cap), &ops)?;
    }
}

#[test]
fn every_item_is_delivered_exactly_once_with_two_producers_and_two_consumers() {
    const PER_PRODUCER: u32 = 20_000;
    for bounded in [false, true] {
        let unbounded = TQueue::new();
        let bq = TBQueue::new(64);
        let push = {
            let (q, bq) = (unbounded.clone(), bq.clone());
            move |tx: &mut mvstm::Txn, v: u32| {
                if bounded {
                    bq.push(tx, v)
                } else {
                    q.push(tx, v)
                }
            }
        };
        let pop = {
            let (q, bq) = (unbounded.clone(), bq.clone());
            move |tx: &mut mvstm::Txn| if bounded { bq.pop(tx) } else { q.pop(tx) }
        };
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let push = push.clone();
                thread::spawn(move || {
                    for i in 0..PER_PRODUCER {
                        atomically(|tx| push(tx, p * PER_PRODUCER + i));
                    }
                })
            })
            .collect();
        // Bounded: a lost item would leave a consumer blocked, which fails here instead of hanging.
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let pop = pop.clone();
                spawn_reporting(move || {
                    (0..PER_PRODUCER)
                        .map(|_| atomically(|tx| pop(tx)))
                        .collect::<Vec<u32>>()
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut seen = HashSet::new();
        for c in consumers {
            let got = finish(&c, "a consumer (an item lost?)");
            // Per producer, items arrive in the order they were pushed.
            for p in 0..2 {
                let mine: Vec<u32> = got
                    .iter()
                    .copied()
                    .filter(|v| v / PER_PRODUCER == p)
                    .collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "FIFO order broken");
            }
            for v in got {
                assert!(seen.insert(v), "item {v} delivered twice");
            }
        }
        assert_eq!(seen.len(), 2 * PER_PRODUCER as usize, "items lost");
    }
}

#[test]
fn a_bounded_queue_never_exceeds_its_capacity_and_blocks_producers_when_full() {
    const CAP: usize = 8;
    let q = TBQueue::new(CAP);
    for i in 0..CAP {
        atomically(|tx| q.push(tx, i));
    }
    assert!(atomically(|tx| q.is_full(tx)));
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (q, runs) = (q.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                q.push(tx, 99)
            })
        })
    };
    wait_for_runs(&runs, 1);
    thread::sleep(QUIET);
    still_blocked(&rx, "a push into a full queue");
    assert_eq!(atomically(|tx| q.pop(tx)), 0);
    finish(&rx, "the push after a pop freed a slot");
    // Many producers and a slow consumer: the length never exceeds the capacity.
    let producers: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                for i in 0..2_000 {
                    atomically(|tx| q.push(tx, i));
                }
            })
        })
        .collect();
    let mut popped = 0;
    while popped < 6_000 + CAP {
        let len = atomically(|tx| {
            let len = q.len(tx)?;
            q.pop(tx)?;
            Ok(len)
        });
        assert!(len <= CAP, "{len} items in a queue of capacity {CAP}");
        popped += 1;
    }
    for p in producers {
        p.join().unwrap();
    }
    assert!(atomically(|tx| q.is_empty(tx)));
}

#[test]
fn pop_blocks_until_an_item_arrives() {
    let q: TQueue<&str> = TQueue::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (q, runs) = (q.clone(), runs.clone());
        spawn_reporting(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                q.pop(tx)
            })
        })
    };
    wait_for_runs(&runs, 1);
    thread::sleep(QUIET);
    still_blocked(&rx, "a pop from an empty queue");
    assert!(runs.load(Ordering::SeqCst) <= 2, "the blocked pop spun");
    atomically(|tx| q.push(tx, "hello"));
    assert_eq!(finish(&rx, "the pop after a push"), "hello");
}

#[test]
fn a_producer_and_a_consumer_of_a_non_empty_queue_do_not_conflict() {
    const PREFILL: u32 = 20_000;
    const OPS: u32 = 10_000;
    let unbounded = TQueue::new();
    let bounded = TBQueue::new(100_000);
    for i in 0..PREFILL {
        atomically(|tx| {
            unbounded.push(tx, i)?;
            bounded.push(tx, i)
        });
    }
    let reruns = Arc::new(AtomicUsize::new(0));
    let count = |reruns: &Arc<AtomicUsize>, attempt: u32| {
        if attempt > 1 {
            reruns.fetch_add(1, Ordering::Relaxed);
        }
    };
    let producer = {
        let (q, bq, reruns) = (unbounded.clone(), bounded.clone(), reruns.clone());
        thread::spawn(move || {
            for i in 0..OPS {
                atomically(|tx| {
                    count(&reruns, tx.attempt());
                    q.push(tx, PREFILL + i)
                });
                atomically(|tx| {
                    count(&reruns, tx.attempt());
                    bq.push(tx, PREFILL + i)
                });
            }
        })
    };
    let consumer = {
        let (q, bq, reruns) = (unbounded.clone(), bounded.clone(), reruns.clone());
        thread::spawn(move || {
            for i in 0..OPS {
                let a = atomically(|tx| {
                    count(&reruns, tx.attempt());
                    q.pop(tx)
                });
                let b = atomically(|tx| {
                    count(&reruns, tx.attempt());
                    bq.pop(tx)
                });
                assert_eq!((a, b), (i, i));
            }
        })
    };
    producer.join().unwrap();
    consumer.join().unwrap();
    assert_eq!(
        reruns.load(Ordering::Relaxed),
        0,
        "producer and consumer conflicted"
    );
}

#[test]
fn capacity_zero_is_refused_clearly() {
    let r = std::panic::catch_unwind(|| TBQueue::<u8>::new(0));
    let msg = common::panic_message(&*r.expect_err("capacity 0 was accepted"));
    assert!(
        msg.contains("capacity of at least 1") && msg.contains("TMVar"),
        "{msg}"
    );
}

#[test]
fn consumed_items_are_freed() {
    // A long run of push/pop pairs through a queue that never holds more than one item: every
    // consumed item is eventually dropped (an earlier design linked a TVar per item, and the
    // chain was freed one link per reclamation round, so nearly every item stayed allocated).
    let drops = common::DropCounter::new();
    let unbounded = TQueue::new();
    let bounded = TBQueue::new(4);
    for i in 0..100_000u64 {
        atomically(|tx| unbounded.push(tx, drops.value(i)));
        drop(atomically(|tx| unbounded.pop(tx)));
        atomically(|tx| bounded.push(tx, drops.value(i)));
        drop(atomically(|tx| bounded.pop(tx)));
    }
    // Keep the queues' own traffic going while reclamation catches up: a slot's old versions are
    // trimmed when that slot is written again (committing elsewhere would not touch them).
    let mut i = 100_000u64;
    let settled = common::drive_reclamation(|| {
        i += 1;
        atomically(|tx| unbounded.push(tx, drops.value(i)));
        drop(atomically(|tx| unbounded.pop(tx)));
        atomically(|tx| bounded.push(tx, drops.value(i)));
        drop(atomically(|tx| bounded.pop(tx)));
        drops.live() <= 1_024
    });
    assert!(
        settled,
        "{} of 200,000 consumed items still allocated",
        drops.live()
    );
    drop((unbounded, bounded));
    drops.assert_all_dropped("after the queues were dropped");
}

#[test]
fn the_unbounded_queue_grows_and_keeps_its_order() {
    let q = TQueue::new();
    // Interleave so that the ring wraps before it grows, several times over.
    let mut expected = VecDeque::new();
    for round in 0..10u32 {
        for i in 0..(round * 37) {
            atomically(|tx| q.push(tx, round * 1_000 + i));
            expected.push_back(round * 1_000 + i);
        }
        for _ in 0..(round * 20) {
            assert_eq!(atomically(|tx| q.try_pop(tx)), expected.pop_front());
        }
    }
    assert_eq!(atomically(|tx| q.len(tx)), expected.len());
    assert_eq!(atomically(|tx| q.drain(tx)), Vec::from(expected));
}

#[test]
fn or_else_rolls_queue_operations_back() {
    let q = TQueue::new();
    let bq = TBQueue::new(2);
    atomically(|tx| q.push(tx, 1));
    let taken = atomically(|tx| {
        tx.or_else(
            |tx| {
                // Pops, pushes (enough to grow the ring) and a bounded push, all undone.
                q.pop(tx)?;
                for i in 0..40 {
                    q.push(tx, 100 + i)?;
                }
                bq.push(tx, 9)?;
                mvstm::retry()
            },
            |tx| q.pop(tx),
        )
    });
    assert_eq!(taken, 1);
    assert!(
        atomically(|tx| q.is_empty(tx)),
        "the retried branch's pushes survived"
    );
    assert_eq!(atomically(|tx| bq.len(tx)), 0);
    // Both queues still work normally afterwards.
    atomically(|tx| q.push(tx, 2));
    assert_eq!(atomically(|tx| q.pop(tx)), 2);
}
