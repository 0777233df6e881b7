//! Collection tests of the peers' own suites, ported onto mvstm. Each test names its origin:
//!
//! - GHC `stm`, `tests/cloneTChan001.hs` and `tests/stm050.hs` (github.com/haskell/stm);
//! - ScalaSTM, `shared/src/test/scala/scala/concurrent/stm/TMapSuite.scala`, `TSetSuite.scala`,
//!   `jvm/src/test/scala/scala/concurrent/stm/TMapSuiteJVM.scala` and `HistogramSuite.scala`
//!   (github.com/scala-stm/scala-stm).
//!
//! Where ScalaSTM's `clone` copies a map, the port takes `iter` (an atomic snapshot) or builds a
//! new map from it inside the transaction: `TMap::clone` is another handle to the same map here.
//! Nested `atomic { } orAtomic { }` is `Txn::or_else`. Iteration counts are cut where the
//! original's run long (said at each).

mod common;

use common::scala_hash;

use mvstm::collections::{TArray, TChan, TMap, TSet};
use mvstm::{atomically, retry, StmResult, TVar, Txn};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;

fn value(k: u32) -> String {
    format!("x{k}")
}

fn map_of(range: std::ops::Range<u32>) -> TMap<u32, String> {
    let m = TMap::new();
    atomically(|tx| put_range(tx, &m, range.clone()));
    m
}

fn put_range(tx: &mut Txn, m: &TMap<u32, String>, range: std::ops::Range<u32>) -> StmResult<()> {
    range
        .into_iter()
        .try_for_each(|i| m.insert(tx, i, value(i)).map(drop))
}

fn sorted<T: Ord>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = it.collect();
    v.sort();
    v
}

// ---- GHC stm ----

/// GHC `tests/cloneTChan001.hs`: a clone made after one write reads that write, and both read
/// the next one.
#[test]
fn ghc_clone_tchan_001() {
    let c = TChan::new();
    let r = c.subscribe(); // GHC's newTChanIO has its own read end; here a subscriber is one
    atomically(|tx| c.send(tx, 'a'));
    let r1 = atomically(|tx| r.clone_in(tx));
    let mut out = vec![atomically(|tx| r.recv(tx)), atomically(|tx| r1.recv(tx))];
    atomically(|tx| c.send(tx, 'b'));
    out.push(atomically(|tx| r.recv(tx)));
    out.push(atomically(|tx| r1.recv(tx)));
    assert_eq!(out, vec!['a', 'a', 'b', 'b']); // cloneTChan001.stdout
}

#[derive(Clone, Debug)]
enum DirectoryCommand {
    Add(u32, u32),
    Remove(u32),
}

/// GHC `tests/stm050.hs`: a directory service. Two posters send add and remove commands
/// through a channel, a listener applies them to a table and counts them, and a finder polls
/// the table until the listener says it is done. (The original prints nothing to compare; the
/// port checks that every command was applied and the table is consistent.)
#[test]
fn ghc_stm050_directory_service() {
    let n = 10_000u32; // the original's default
    let chan: TChan<DirectoryCommand> = TChan::new();
    let listener_end = chan.subscribe();
    let table: TVar<Vec<(u32, u32)>> = TVar::new(Vec::new());
    let count = TVar::new(0u32);
    let done = TVar::new(false);
    let listener = {
        let (table, count, done) = (table.clone(), count.clone(), done.clone());
        thread::spawn(move || {
            for _ in 0..2 * n {
                match atomically(|tx| listener_end.recv(tx)) {
                    DirectoryCommand::Add(k, v) => atomically(|tx| {
                        let l = tx.read(&table)?;
                        if l.iter().all(|e| e.0 != k) {
                            let mut l = l;
                            l.insert(0, (k, v));
                            tx.write(&table, l)?;
                        }
                        Ok(())
                    }),
                    DirectoryCommand::Remove(k) => atomically(|tx| {
                        tx.modify(&table, |l| l.into_iter().filter(|e| e.0 != k).collect())
                    }),
                }
                atomically(|tx| tx.modify(&count, |i| i + 1));
            }
            atomically(|tx| tx.write(&done, true));
        })
    };
    let posters: Vec<_> = [DirectoryCommand::Add(1, 2), DirectoryCommand::Remove(1)]
        .into_iter()
        .map(|cmd| {
            let chan = chan.clone();
            thread::spawn(move || {
                for _ in 0..n {
                    atomically(|tx| chan.send(tx, cmd.clone()));
                }
            })
        })
        .collect();
    // The finder: polls until done, and every table it sees holds key 1 at most once.
    loop {
        let (l, finished) = atomically(|tx| Ok((tx.read(&table)?, tx.read(&done)?)));
        assert!(l.iter().filter(|e| e.0 == 1).count() <= 1, "{l:?}");
        if finished {
            break;
        }
        thread::yield_now();
    }
    for p in posters {
        p.join().unwrap();
    }
    listener.join().unwrap();
    assert_eq!(count.load(), 2 * n, "every command was applied");
    assert!(table.load().iter().all(|e| *e == (1, 2)));
}

// ---- ScalaSTM TMapSuite / TSetSuite ----

#[derive(Clone, PartialEq, Eq, Debug)]
struct BadHash(i32);

impl Hash for BadHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (if self.0 > 500 { self.0 / 5 } else { 0 }).hash(state)
    }
}

/// ScalaSTM `TMapSuite`, "correct despite poor hash function" (501 keys share one hash).
#[test]
fn scala_tmap_correct_despite_poor_hash_function() {
    let m = TMap::new();
    atomically(|tx| (0..1000).try_for_each(|i| m.insert(tx, BadHash(i), i).map(drop)));
    for i in -500..1500 {
        let want = (0..1000).contains(&i).then_some(i);
        assert_eq!(atomically(|tx| m.get(tx, &BadHash(i))), want, "key {i}");
    }
}

/// ScalaSTM `TSetSuite`, "correct despite poor hash function".
#[test]
fn scala_tset_correct_despite_poor_hash_function() {
    let s = TSet::new();
    atomically(|tx| (0..1000).try_for_each(|i| s.insert(tx, BadHash(i)).map(drop)));
    for i in -500..1500 {
        assert_eq!(
            atomically(|tx| s.contains(tx, &BadHash(i))),
            (0..1000).contains(&i),
            "{i}"
        );
    }
}

/// ScalaSTM `TMapSuite`, "clone captures correct atomic writes": a snapshot taken mid-way
/// through a transaction holds its writes so far and none after.
#[test]
fn scala_tmap_clone_captures_correct_atomic_writes() {
    let m = map_of(0..100);
    let z: Vec<(u32, String)> = atomically(|tx| {
        put_range(tx, &m, 100..200)?;
        let z = m.iter(tx)?.collect();
        put_range(tx, &m, 200..300)?;
        Ok(z)
    });
    assert_eq!(
        sorted(z.into_iter()),
        (0..200).map(|i| (i, value(i))).collect::<Vec<_>>()
    );
}

/// ScalaSTM `TMapSuite`, "clone doesn't include discarded writes": the writes of an `or_else`
/// branch that retried are not in the snapshot.
#[test]
fn scala_tmap_clone_does_not_include_discarded_writes() {
    let m = map_of(0..100);
    let z: Vec<(u32, String)> = atomically(|tx| {
        tx.or_else(
            |tx| {
                put_range(tx, &m, 100..200)?;
                retry()
            },
            |tx| put_range(tx, &m, 200..300),
        )?;
        let z = m.iter(tx)?.collect();
        tx.or_else(
            |tx| {
                put_range(tx, &m, 300..400)?;
                retry()
            },
            |tx| put_range(tx, &m, 400..500),
        )?;
        Ok(z)
    });
    let want: Vec<_> = (0..100).chain(200..300).map(|i| (i, value(i))).collect();
    assert_eq!(sorted(z.into_iter()), want);
}

/// ScalaSTM `TMapSuite`, "clone is transactional": a copy made inside the transaction takes
/// later `or_else` branches like any map.
#[test]
fn scala_tmap_clone_is_transactional() {
    let m = map_of(0..100);
    let z = atomically(|tx| {
        tx.or_else(
            |tx| {
                put_range(tx, &m, 100..105)?;
                retry()
            },
            |tx| put_range(tx, &m, 200..205),
        )?;
        let z = TMap::new();
        for (k, v) in m.iter(tx)? {
            z.insert(tx, k, v)?;
        }
        tx.or_else(
            |tx| {
                put_range(tx, &z, 300..305)?;
                retry()
            },
            |tx| put_range(tx, &z, 400..405),
        )?;
        Ok(z)
    });
    let want: Vec<_> = (0..100)
        .chain(200..205)
        .chain(400..405)
        .map(|i| (i, value(i)))
        .collect();
    assert_eq!(atomically(|tx| z.len(tx)), 110);
    assert_eq!(sorted(atomically(|tx| z.iter(tx))), want);
    assert_eq!(
        atomically(|tx| m.len(tx)),
        105,
        "the copy is a different map"
    );
}

/// ScalaSTM `TSetSuite`, "clone captures correct atomic writes" and "clone doesn't include
/// discarded writes", together.
#[test]
fn scala_tset_snapshots_capture_atomic_writes_and_not_discarded_ones() {
    let s = TSet::new();
    atomically(|tx| (0..100u32).try_for_each(|i| s.insert(tx, i).map(drop)));
    let z: Vec<u32> = atomically(|tx| {
        tx.or_else(
            |tx| {
                (100..200u32).try_for_each(|i| s.insert(tx, i).map(drop))?;
                retry()
            },
            |tx| (200..300u32).try_for_each(|i| s.insert(tx, i).map(drop)),
        )?;
        let z = s.iter(tx)?.collect();
        (300..400u32).try_for_each(|i| s.insert(tx, i).map(drop))?;
        Ok(z)
    });
    assert_eq!(
        sorted(z.into_iter()),
        (0..100).chain(200..300).collect::<Vec<_>>()
    );
    assert_eq!(atomically(|tx| s.len(tx)), 300);
}

/// ScalaSTM `TMapSuite`, "null key" and "null value", with `Option` for Java's null.
#[test]
fn scala_tmap_none_key_and_none_value() {
    let m: TMap<Option<&str>, Option<&str>> = TMap::new();
    atomically(|tx| {
        m.insert(tx, None, Some("abc"))?;
        m.insert(tx, Some("def"), None).map(drop)
    });
    assert_eq!(atomically(|tx| m.len(tx)), 2);
    assert_eq!(atomically(|tx| m.get(tx, &None)), Some(Some("abc")));
    assert_eq!(atomically(|tx| m.remove(tx, &None)), Some(Some("abc")));
    assert_eq!(atomically(|tx| m.len(tx)), 1);
    assert_eq!(atomically(|tx| m.insert(tx, None, Some("jkl"))), None);
    assert_eq!(atomically(|tx| m.get(tx, &Some("def"))), Some(None));
    assert_eq!(atomically(|tx| m.len(tx)), 2);
}

/// ScalaSTM `TMapSuite`, "iterator crossing a txn boundary".
#[test]
fn scala_tmap_iterator_crossing_a_txn_boundary() {
    let kvs: HashMap<u32, String> = (0..100).map(|i| (i % 37, value(i))).collect();
    let m = TMap::new();
    // Later writes of a key win, as with Scala's `TMap(kvs: _*)`.
    atomically(|tx| (0..100).try_for_each(|i| m.insert(tx, i % 37, value(i)).map(drop)));
    let iter = atomically(|tx| m.iter(tx));
    assert_eq!(iter.collect::<HashMap<_, _>>(), kvs);
}

/// ScalaSTM `TMapSuite` and `TSetSuite`, "iterator after many removes".
#[test]
fn scala_iterator_after_many_removes() {
    let m = TMap::new();
    let s = TSet::new();
    for i in 0..100_000u32 {
        atomically(|tx| m.insert(tx, i, i).map(drop));
        atomically(|tx| s.insert(tx, i).map(drop));
    }
    for i in 0..100_000u32 {
        atomically(|tx| m.remove(tx, &i).map(drop));
        atomically(|tx| s.remove(tx, &i).map(drop));
    }
    assert_eq!(atomically(|tx| m.iter(tx)).next(), None);
    assert_eq!(atomically(|tx| s.iter(tx)).next(), None);
    assert!(atomically(|tx| m.is_empty(tx)));
    assert_eq!(atomically(|tx| m.len(tx)), 0);
    assert!(atomically(|tx| s.is_empty(tx)));
    assert_eq!(atomically(|tx| s.len(tx)), 0);
}

/// ScalaSTM `TMapSuite`, "view snapshot foreach" and "txn snapshot foreach".
#[test]
fn scala_tmap_snapshot_foreach() {
    let m = TMap::new();
    atomically(|tx| (0..100u32).try_for_each(|i| m.insert(tx, i, value(i % 37)).map(drop)));
    let n: u32 = atomically(|tx| m.iter(tx)).map(|(k, _)| k).sum();
    assert_eq!(n, 4950);
    let n: u32 = atomically(|tx| Ok(m.snapshot(tx)?.iter().map(|(k, _)| k).sum()));
    assert_eq!(n, 4950);
}

/// ScalaSTM `TMapSuiteJVM`, "atomicity violation": a reader outside the writer's transaction
/// never sees the value the writer sets and restores around a snapshot. The original's 100,000
/// iterations per thread; the snapshot is `TMap::iter`, which like ScalaSTM's `snapshot` shares
/// the trie instead of copying the 1,000 entries.
#[test]
fn scala_tmap_atomicity_violation() {
    let m = map_of(0..1000);
    atomically(|tx| m.insert(tx, 0, "okay".to_string()).map(drop));
    let failed = Arc::new(AtomicI64::new(-1));
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let (m, failed) = (m.clone(), failed.clone());
            thread::spawn(move || {
                let mut r = common::Rng(t + 3);
                for i in 0..100_000 {
                    if r.below(2) == 0 {
                        if atomically(|tx| m.get(tx, &0)).as_deref() != Some("okay") {
                            failed.store(i, Ordering::SeqCst);
                            return;
                        }
                    } else {
                        atomically(|tx| {
                            m.insert(tx, 0, "should be isolated".to_string())?;
                            std::hint::black_box(m.iter(tx)?);
                            m.insert(tx, 0, "okay".to_string()).map(drop)
                        });
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), -1);
}

// ---- ScalaSTM HistogramSuite, with a TArray ----

/// ScalaSTM `HistogramSuite.histogram` with `useTArray` and `singlePct = 0` (the single-op
/// half uses `Ref.View`, which `TArray` does not expose): workers add `samples_per_txn`
/// samples per transaction to hashed buckets; the buckets then hold every sample.
fn histogram(buckets: usize, workers: i32, samples_per_worker: i32, samples_per_txn: i32) {
    let hist = TArray::new(buckets, 0i64);
    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let hist = hist.clone();
            thread::spawn(move || {
                let mut i = 0;
                while i < samples_per_worker {
                    atomically(|tx| {
                        let mut j = 0;
                        while j < samples_per_txn && i + j < samples_per_worker {
                            let b = (scala_hash(worker, i + j) % buckets as i32).unsigned_abs()
                                as usize;
                            hist.update(tx, b, |n| n + 1)?;
                            j += 1;
                        }
                        Ok(())
                    });
                    i += samples_per_txn;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let sum: i64 = atomically(|tx| hist.to_vec(tx)).iter().sum();
    assert_eq!(sum, (samples_per_worker * workers) as i64);
}

/// ScalaSTM `HistogramSuite`, the "txn, ... TArray[Int], ... 10K" cases for 1, 30 and 10,000
/// buckets, 1, 2 and 4 threads (the original goes up to twice the processors), 1, 3 and 100
/// increments per transaction.
#[test]
fn scala_histogram_with_a_tarray() {
    let _serial = common::one_at_a_time();
    for buckets in [1, 30, 10_000] {
        for threads in [1, 2, 4] {
            for accesses in [1, 3, 100] {
                histogram(buckets, threads, 10_000 / threads, accesses);
            }
        }
    }
}
