//! `TChan`, the broadcast channel: behaviour against per-reader `VecDeque` models (proptest),
//! every reader seeing the same sequence from real threads, readers that do not conflict with
//! each other or with senders, and messages freed once every reader passed them (a dropped
//! reader holds nothing back).

mod common;

use common::{Counted, DropCounter};
use mvstm::collections::{TChan, TChanReader};
use mvstm::{atomically, StmResult, Txn};
use proptest::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

#[derive(Debug, Clone)]
enum TxOp {
    Send(u32),
    TryRecv(usize),
    TryPeek(usize),
    IsEmpty(usize),
}

#[derive(Debug, Clone)]
enum Step {
    /// Transactional operations, all in one transaction.
    Tx(Vec<TxOp>),
    Subscribe,
    Clone(usize),
    Drop(usize),
}

fn tx_op() -> impl Strategy<Value = TxOp> {
    prop_oneof![
        3 => any::<u32>().prop_map(TxOp::Send),
        3 => any::<usize>().prop_map(TxOp::TryRecv),
        1 => any::<usize>().prop_map(TxOp::TryPeek),
        1 => any::<usize>().prop_map(TxOp::IsEmpty),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => prop::collection::vec(tx_op(), 1..4).prop_map(Step::Tx),
        1 => Just(Step::Subscribe),
        1 => any::<usize>().prop_map(Step::Clone),
        1 => any::<usize>().prop_map(Step::Drop),
    ]
}

#[derive(Debug, PartialEq)]
enum Out {
    Sent,
    Value(Option<u32>),
    Empty(bool),
    NoReader,
}

fn apply(
    chan: &TChan<u32>,
    readers: &[TChanReader<u32>],
    tx: &mut Txn,
    op: &TxOp,
) -> StmResult<Out> {
    let pick = |i: usize| readers.get(i % readers.len().max(1));
    Ok(match *op {
        TxOp::Send(v) => {
            chan.send(tx, v)?;
            Out::Sent
        }
        TxOp::TryRecv(i) => match pick(i) {
            Some(r) => Out::Value(r.try_recv(tx)?),
            None => Out::NoReader,
        },
        TxOp::TryPeek(i) => match pick(i) {
            Some(r) => Out::Value(r.try_peek(tx)?),
            None => Out::NoReader,
        },
        TxOp::IsEmpty(i) => match pick(i) {
            Some(r) => Out::Empty(r.is_empty(tx)?),
            None => Out::NoReader,
        },
    })
}

fn model(readers: &mut [VecDeque<u32>], op: &TxOp) -> Out {
    let n = readers.len();
    match *op {
        TxOp::Send(v) => {
            readers.iter_mut().for_each(|r| r.push_back(v));
            Out::Sent
        }
        _ if n == 0 => Out::NoReader,
        TxOp::TryRecv(i) => Out::Value(readers[i % n].pop_front()),
        TxOp::TryPeek(i) => Out::Value(readers[i % n].front().copied()),
        TxOp::IsEmpty(i) => Out::Empty(readers[i % n].is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tchan_matches_a_queue_per_reader(steps in prop::collection::vec(step(), 1..80)) {
        let chan = TChan::new();
        let mut readers: Vec<TChanReader<u32>> = Vec::new();
        let mut expected: Vec<VecDeque<u32>> = Vec::new();
        for step in &steps {
            match step {
                Step::Tx(ops) => {
                    let got = atomically(|tx| ops.iter().map(|op| apply(&chan, &readers, tx, op)).collect::<StmResult<Vec<_>>>());
                    let want: Vec<Out> = ops.iter().map(|op| model(&mut expected, op)).collect();
                    prop_assert_eq!(got, want, "after {:?}", ops);
                }
                Step::Subscribe => {
                    readers.push(chan.subscribe());
                    expected.push(VecDeque::new());
                }
                Step::Clone(i) if !readers.is_empty() => {
                    let i = i % readers.len();
                    readers.push(readers[i].clone());
                    expected.push(expected[i].clone());
                }
                Step::Drop(i) if !readers.is_empty() => {
                    let i = i % readers.len();
                    readers.remove(i);
                    expected.remove(i);
                }
                Step::Clone(_) | Step::Drop(_) => {}
            }
        }
        for (r, want) in readers.iter().zip(&expected) {
            let rest: Vec<u32> = std::iter::from_fn(|| atomically(|tx| r.try_recv(tx))).collect();
            prop_assert_eq!(rest, want.iter().copied().collect::<Vec<_>>());
        }
    }
}

#[test]
fn every_reader_sees_the_same_sequence_from_concurrent_senders() {
    let _serial = common::one_at_a_time();
    const PER_SENDER: u64 = 3_000;
    let chan = TChan::new();
    let readers: Vec<_> = (0..3).map(|_| chan.subscribe()).collect();
    let senders: Vec<_> = (0..2u64)
        .map(|s| {
            let chan = chan.clone();
            thread::spawn(move || {
                for i in 0..PER_SENDER {
                    atomically(|tx| chan.send(tx, (s, i)));
                }
            })
        })
        .collect();
    // Readers block in `recv` (retry) while the senders are behind them.
    let received: Vec<_> = readers
        .into_iter()
        .map(|r| {
            common::spawn_reporting(move || {
                (0..2 * PER_SENDER)
                    .map(|_| atomically(|tx| r.recv(tx)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let sequences: Vec<Vec<(u64, u64)>> = received
        .iter()
        .map(|rx| common::finish(rx, "a reader"))
        .collect();
    for seq in &sequences {
        assert_eq!(seq, &sequences[0], "readers saw different sequences");
    }
    for s in 0..2 {
        let from_s: Vec<u64> = sequences[0]
            .iter()
            .filter(|m| m.0 == s)
            .map(|m| m.1)
            .collect();
        assert_eq!(
            from_s,
            (0..PER_SENDER).collect::<Vec<_>>(),
            "sender {s}'s order"
        );
    }
}

/// How many attempts a receive on `first` takes when, during its first attempt, `other`
/// commits on another thread.
fn attempts_of_a_recv_interleaved_with(
    first: &TChanReader<u32>,
    other: impl FnOnce() + Send + 'static,
) -> u32 {
    let attempts = AtomicU32::new(0);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let helper = thread::spawn(move || {
        ready_rx.recv().unwrap();
        other();
        done_tx.send(()).unwrap();
    });
    atomically(|tx| {
        attempts.fetch_add(1, Ordering::SeqCst);
        let got = first.recv(tx)?;
        if tx.attempt() == 1 {
            ready_tx.send(()).unwrap();
            done_rx
                .recv_timeout(common::LIMIT)
                .expect("the other side committed");
        }
        Ok(got)
    });
    helper.join().unwrap();
    attempts.load(Ordering::SeqCst)
}

#[test]
fn readers_conflict_neither_with_each_other_nor_with_senders_ahead_of_them() {
    let _serial = common::one_at_a_time();
    let chan = TChan::new();
    let (r1, r2) = (chan.subscribe(), chan.subscribe());
    atomically(|tx| (0..10).try_for_each(|i| chan.send(tx, i)));
    // Another reader receives between our read and our commit.
    let other = r2.clone();
    assert_eq!(
        attempts_of_a_recv_interleaved_with(&r1, move || assert_eq!(
            atomically(|tx| other.recv(tx)),
            0
        )),
        1
    );
    // A sender appends between our read and our commit (we are behind it).
    let sender = chan.clone();
    assert_eq!(
        attempts_of_a_recv_interleaved_with(&r1, move || atomically(|tx| sender.send(tx, 99))),
        1
    );
    // A clone made from the same position receives the same message meanwhile: independent
    // positions, so no conflict either.
    let same = r1.clone();
    assert_eq!(
        attempts_of_a_recv_interleaved_with(&r1, move || assert_eq!(
            atomically(|tx| same.recv(tx)),
            2
        )),
        1
    );
}

#[test]
fn two_receives_through_one_reader_conflict() {
    // The control for the test above: the same interleaving through one reader must re-run,
    // or the attempt count could not tell.
    let _serial = common::one_at_a_time();
    let chan = TChan::new();
    let r = Arc::new(chan.subscribe());
    atomically(|tx| (0..10).try_for_each(|i| chan.send(tx, i)));
    let attempts = AtomicU32::new(0);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let other = Arc::clone(&r);
    let helper = thread::spawn(move || {
        ready_rx.recv().unwrap();
        assert_eq!(atomically(|tx| other.recv(tx)), 0);
        done_tx.send(()).unwrap();
    });
    let got = atomically(|tx| {
        attempts.fetch_add(1, Ordering::SeqCst);
        let got = r.recv(tx)?;
        if tx.attempt() == 1 {
            ready_tx.send(()).unwrap();
            done_rx.recv_timeout(common::LIMIT).unwrap();
        }
        Ok(got)
    });
    helper.join().unwrap();
    assert_eq!(got, 1, "each message goes to one of the two receives");
    assert!(attempts.load(Ordering::SeqCst) >= 2);
}

#[test]
fn a_clone_starts_at_the_same_position_and_moves_on_alone() {
    let chan = TChan::new();
    let r1 = chan.subscribe();
    atomically(|tx| (1..=4).try_for_each(|i| chan.send(tx, i)));
    assert_eq!(atomically(|tx| r1.recv(tx)), 1);
    let r2 = r1.clone();
    assert_eq!(atomically(|tx| r1.recv(tx)), 2);
    assert_eq!(atomically(|tx| r1.recv(tx)), 3);
    assert_eq!(
        atomically(|tx| r2.recv(tx)),
        2,
        "the clone did not move with r1"
    );
    atomically(|tx| chan.send(tx, 5));
    let rest = |r: &TChanReader<i32>| {
        std::iter::from_fn(|| atomically(|tx| r.try_recv(tx))).collect::<Vec<_>>()
    };
    assert_eq!(rest(&r1), vec![4, 5]);
    assert_eq!(rest(&r2), vec![3, 4, 5]);
}

#[test]
fn recv_blocks_until_a_send() {
    let chan = TChan::new();
    let r = chan.subscribe();
    let rx = common::spawn_reporting(move || atomically(|tx| r.recv(tx)));
    assert!(
        rx.recv_timeout(common::QUIET).is_err(),
        "recv returned with nothing sent"
    );
    atomically(|tx| chan.send(tx, "go"));
    assert_eq!(common::finish(&rx, "the blocked reader"), "go");
}

type Msg = Option<Counted>;

fn send_counted(chan: &TChan<Msg>, drops: &DropCounter, n: u64) {
    for i in 0..n {
        atomically(|tx| chan.send(tx, Some(drops.value(i))));
    }
}

fn recv_ids(r: &TChanReader<Msg>, n: u64) -> Vec<u64> {
    (0..n)
        .map(|_| atomically(|tx| r.recv(tx)).expect("a counted message").id)
        .collect()
}

/// Uncounted traffic through the channel, read by `readers`, until `done` (reclamation trims a
/// reader's old positions when it moves again).
fn drive(chan: &TChan<Msg>, readers: &[&TChanReader<Msg>], mut done: impl FnMut() -> bool) -> bool {
    common::drive_reclamation(|| {
        atomically(|tx| chan.send(tx, None));
        for r in readers {
            assert!(atomically(|tx| r.recv(tx)).is_none());
        }
        done()
    })
}

#[test]
fn a_message_is_freed_once_every_reader_passed_it() {
    let drops = DropCounter::new();
    let chan: TChan<Msg> = TChan::new();
    let (r1, r2) = (chan.subscribe(), chan.subscribe());
    send_counted(&chan, &drops, 1_000);
    assert_eq!(recv_ids(&r1, 1_000), (0..1_000).collect::<Vec<_>>());
    assert_eq!(recv_ids(&r2, 600), (0..600).collect::<Vec<_>>());
    // r2 has not passed the last 400: they must stay, whatever reclamation does meanwhile.
    // Run the driver to its bound: nothing may free them.
    let never = drive(&chan, &[&r1], || false);
    assert!(!never);
    assert!(drops.live() >= 400, "a message r2 had not read was freed");
    assert_eq!(recv_ids(&r2, 400), (600..1_000).collect::<Vec<_>>());
    // Now every reader passed every counted message.
    let freed = drive(&chan, &[&r1, &r2], || drops.live() == 0);
    assert!(
        freed,
        "{} messages passed by every reader still allocated",
        drops.live()
    );
    assert!(!drops.dropped_twice());
}

#[test]
fn a_dropped_reader_holds_nothing_back() {
    // r2 stops far behind (100,000 messages it never reads: dropping it frees a long run of
    // nodes at once, which must not recurse) and is dropped.
    let drops = DropCounter::new();
    let chan: TChan<Msg> = TChan::new();
    let (r1, r2) = (chan.subscribe(), chan.subscribe());
    send_counted(&chan, &drops, 100_000);
    assert_eq!(recv_ids(&r1, 100_000).len(), 100_000);
    assert_eq!(drops.live(), 100_000, "r2 still needs every message");
    drop(r2);
    let freed = drive(&chan, &[&r1], || drops.live() == 0);
    assert!(
        freed,
        "{} messages still allocated after the only reader behind was dropped",
        drops.live()
    );
    assert!(!drops.dropped_twice());
}

#[test]
fn a_long_run_of_traffic_leaves_little_allocated() {
    // Steady traffic with two readers: passed messages are freed as fast as they are made (a
    // design that linked TVars freed one link per reclamation round and kept nearly all).
    let drops = DropCounter::new();
    let chan: TChan<Msg> = TChan::new();
    let (r1, r2) = (chan.subscribe(), chan.subscribe());
    for i in 0..100_000u64 {
        atomically(|tx| chan.send(tx, Some(drops.value(i))));
        drop(atomically(|tx| r1.recv(tx)));
        drop(atomically(|tx| r2.recv(tx)));
    }
    let settled = common::drive_reclamation(|| {
        atomically(|tx| chan.send(tx, Some(drops.value(0))));
        drop(atomically(|tx| r1.recv(tx)));
        drop(atomically(|tx| r2.recv(tx)));
        drops.live() <= 1_024
    });
    assert!(
        settled,
        "{} of 100,000 passed messages still allocated",
        drops.live()
    );
    drop((chan, r1, r2));
    drops.assert_all_dropped("after the channel and its readers were dropped");
}

#[test]
fn a_reader_moves_to_another_thread() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let chan: TChan<String> = TChan::new();
    let r = chan.subscribe();
    assert_send_static(&r);
    atomically(|tx| chan.send(tx, "x".to_string()));
    let got = thread::spawn(move || atomically(|tx| r.recv(tx)))
        .join()
        .unwrap();
    assert_eq!(got, "x");
}
