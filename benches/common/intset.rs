//! intset, the classic STM benchmark: a set of integers from a key range of 512 that starts
//! with 256 of them; each operation is a lookup, or (with the update percentage) an insert or a
//! remove of a random key, alternating per thread so that the size stays near 256.
//!
//! Structures built from TVars, the same code on every STM:
//! - a skip list: each node's `next` pointers are TVars of `Option<Arc<Node>>` (heights drawn
//!   with p = 1/2, at most [`MAX_LEVEL`]);
//! - a hash set: 256 buckets, each a TVar holding an immutable `Arc<[u64]>` that a writer
//!   replaces.
//!
//! Baselines: `Mutex<BTreeSet>`, `RwLock<BTreeSet>`, `Mutex<HashSet>` (std's default hasher,
//! as a user would write it), a hash set with a `Mutex` per bucket (the per-item-lock form), and
//! mvstm's own `TMap`. The 1-thread groups add a `BTreeSet` with no lock.

use super::{min_ops, run_threads, wanted, AsyncStm, FastStm, Mvstm, Rng, RustStm, Stm};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use parking_lot::{Mutex, RwLock};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

pub const KEY_RANGE: u64 = 512;
pub const INITIAL_SIZE: usize = 256;
/// Enough levels for 512 keys with p = 1/2.
pub const MAX_LEVEL: usize = 9;
pub const BUCKETS: usize = 256;
/// The update percentages of the suite.
pub const UPDATES: [u64; 3] = [0, 20, 50];

/// One implementation of the set. `coin` is random bits the skip lists draw node heights from
/// (drawn outside the transaction, so a re-executed body builds the same node).
pub trait IntSet {
    fn contains(&self, key: u64) -> bool;
    fn insert(&self, key: u64, coin: u64) -> bool;
    fn remove(&self, key: u64) -> bool;
}

// ---------------------------------------------------------------------------------------------
// Skip list from TVars

type Link<S> = Option<Arc<Node<S>>>;

pub struct Node<S: Stm> {
    key: u64,
    next: Box<[<S as Stm>::Var<Link<S>>]>,
}

pub struct SkipList<S: Stm> {
    /// The sentinel before every key; its key is never compared.
    head: Node<S>,
}

/// `preds[l]` is the last node before `key` on level `l` (`None`: the head); `succs[l]` the
/// node after it.
struct Search<S: Stm> {
    preds: [Link<S>; MAX_LEVEL],
    succs: [Link<S>; MAX_LEVEL],
}

impl<S: Stm> SkipList<S> {
    pub fn new() -> Self {
        SkipList {
            head: Node {
                key: 0,
                next: (0..MAX_LEVEL).map(|_| S::new_var(None)).collect(),
            },
        }
    }

    #[inline]
    fn node<'a>(&'a self, link: &'a Link<S>) -> &'a Node<S> {
        link.as_deref().unwrap_or(&self.head)
    }

    fn search(&self, tx: &mut S::Tx, key: u64) -> Result<Search<S>, S::Error> {
        let mut s = Search {
            preds: Default::default(),
            succs: Default::default(),
        };
        let mut pred: Link<S> = None;
        for level in (0..MAX_LEVEL).rev() {
            loop {
                match S::read(tx, &self.node(&pred).next[level])? {
                    Some(next) if next.key < key => pred = Some(next),
                    succ => {
                        s.succs[level] = succ;
                        break;
                    }
                }
            }
            s.preds[level] = pred.clone();
        }
        Ok(s)
    }
}

impl<S: Stm> IntSet for SkipList<S> {
    fn contains(&self, key: u64) -> bool {
        S::atomically(|tx| {
            let mut pred: Link<S> = None;
            for level in (0..MAX_LEVEL).rev() {
                loop {
                    match S::read(tx, &self.node(&pred).next[level])? {
                        Some(next) if next.key < key => pred = Some(next),
                        Some(next) if next.key == key => return Ok(true),
                        _ => break,
                    }
                }
            }
            Ok(false)
        })
    }

    fn insert(&self, key: u64, coin: u64) -> bool {
        let height = 1 + (coin.trailing_ones() as usize).min(MAX_LEVEL - 1);
        S::atomically(|tx| {
            let s = self.search(tx, key)?;
            if s.succs[0].as_ref().is_some_and(|n| n.key == key) {
                return Ok(false);
            }
            let node = Arc::new(Node {
                key,
                next: (0..height)
                    .map(|l| S::new_var(s.succs[l].clone()))
                    .collect(),
            });
            for level in 0..height {
                S::write(
                    tx,
                    &self.node(&s.preds[level]).next[level],
                    Some(node.clone()),
                )?;
            }
            Ok(true)
        })
    }

    fn remove(&self, key: u64) -> bool {
        S::atomically(|tx| {
            let s = self.search(tx, key)?;
            let victim = match &s.succs[0] {
                Some(n) if n.key == key => n,
                _ => return Ok(false),
            };
            for level in 0..victim.next.len() {
                let after = S::read(tx, &victim.next[level])?;
                S::write(tx, &self.node(&s.preds[level]).next[level], after)?;
            }
            Ok(true)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Hash set from TVars

#[inline]
fn bucket_of(key: u64) -> usize {
    // Fibonacci hashing: the top 8 bits of key * 2^64/phi.
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BUCKETS.trailing_zeros())) as usize
}

pub struct HashSetStm<S: Stm> {
    buckets: Box<[S::Var<Arc<[u64]>>]>,
}

impl<S: Stm> HashSetStm<S> {
    pub fn new() -> Self {
        HashSetStm {
            buckets: (0..BUCKETS).map(|_| S::new_var(Arc::from([]))).collect(),
        }
    }
}

impl<S: Stm> IntSet for HashSetStm<S> {
    fn contains(&self, key: u64) -> bool {
        let bucket = &self.buckets[bucket_of(key)];
        S::atomically(|tx| Ok(S::read(tx, bucket)?.contains(&key)))
    }

    fn insert(&self, key: u64, _coin: u64) -> bool {
        let bucket = &self.buckets[bucket_of(key)];
        S::atomically(|tx| {
            let keys = S::read(tx, bucket)?;
            if keys.contains(&key) {
                return Ok(false);
            }
            let grown: Arc<[u64]> = keys.iter().copied().chain([key]).collect();
            S::write(tx, bucket, grown)?;
            Ok(true)
        })
    }

    fn remove(&self, key: u64) -> bool {
        let bucket = &self.buckets[bucket_of(key)];
        S::atomically(|tx| {
            let keys = S::read(tx, bucket)?;
            if !keys.contains(&key) {
                return Ok(false);
            }
            let shrunk: Arc<[u64]> = keys.iter().copied().filter(|&k| k != key).collect();
            S::write(tx, bucket, shrunk)?;
            Ok(true)
        })
    }
}

/// mvstm's own transactional hash map, as a set.
pub struct TMapSet(mvstm::collections::TMap<u64, ()>);

impl IntSet for TMapSet {
    fn contains(&self, key: u64) -> bool {
        mvstm::atomically(|tx| self.0.contains_key(tx, &key))
    }
    fn insert(&self, key: u64, _coin: u64) -> bool {
        mvstm::atomically(|tx| Ok(self.0.insert(tx, key, ())?.is_none()))
    }
    fn remove(&self, key: u64) -> bool {
        mvstm::atomically(|tx| Ok(self.0.remove(tx, &key)?.is_some()))
    }
}

// ---------------------------------------------------------------------------------------------
// Lock baselines

pub struct MutexBTree(Mutex<BTreeSet<u64>>);

impl IntSet for MutexBTree {
    fn contains(&self, key: u64) -> bool {
        self.0.lock().contains(&key)
    }
    fn insert(&self, key: u64, _coin: u64) -> bool {
        self.0.lock().insert(key)
    }
    fn remove(&self, key: u64) -> bool {
        self.0.lock().remove(&key)
    }
}

pub struct RwLockBTree(RwLock<BTreeSet<u64>>);

impl IntSet for RwLockBTree {
    fn contains(&self, key: u64) -> bool {
        self.0.read().contains(&key)
    }
    fn insert(&self, key: u64, _coin: u64) -> bool {
        self.0.write().insert(key)
    }
    fn remove(&self, key: u64) -> bool {
        self.0.write().remove(&key)
    }
}

pub struct MutexHashSet(Mutex<HashSet<u64>>);

impl IntSet for MutexHashSet {
    fn contains(&self, key: u64) -> bool {
        self.0.lock().contains(&key)
    }
    fn insert(&self, key: u64, _coin: u64) -> bool {
        self.0.lock().insert(key)
    }
    fn remove(&self, key: u64) -> bool {
        self.0.lock().remove(&key)
    }
}

/// The same buckets as [`HashSetStm`], each behind its own lock.
pub struct MutexPerBucket(Box<[Mutex<Vec<u64>>]>);

impl IntSet for MutexPerBucket {
    fn contains(&self, key: u64) -> bool {
        self.0[bucket_of(key)].lock().contains(&key)
    }
    fn insert(&self, key: u64, _coin: u64) -> bool {
        let mut keys = self.0[bucket_of(key)].lock();
        if keys.contains(&key) {
            return false;
        }
        keys.push(key);
        true
    }
    fn remove(&self, key: u64) -> bool {
        let mut keys = self.0[bucket_of(key)].lock();
        match keys.iter().position(|&k| k == key) {
            Some(i) => {
                keys.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// No lock: the single-thread floor.
pub struct SequentialBTree(RefCell<BTreeSet<u64>>);

impl IntSet for SequentialBTree {
    fn contains(&self, key: u64) -> bool {
        self.0.borrow().contains(&key)
    }
    fn insert(&self, key: u64, _coin: u64) -> bool {
        self.0.borrow_mut().insert(key)
    }
    fn remove(&self, key: u64) -> bool {
        self.0.borrow_mut().remove(&key)
    }
}

// ---------------------------------------------------------------------------------------------
// Driver

/// Fill `set` with the same 256 keys for every implementation.
fn populate(set: &impl IntSet) {
    let mut rng = Rng::with_seed(42);
    let mut added = 0;
    while added < INITIAL_SIZE {
        if set.insert(1 + rng.next() % KEY_RANGE, rng.next()) {
            added += 1;
        }
    }
}

/// Run `ops` operations of the mix from this thread.
fn run_ops(set: &impl IntSet, ops: u64, update_pct: u64) {
    let mut rng = Rng::new();
    let mut insert_next = true;
    for _ in 0..ops {
        let r = rng.next();
        let key = 1 + (r >> 8) % KEY_RANGE;
        if r % 100 < update_pct {
            if insert_next {
                black_box(set.insert(key, rng.next()));
            } else {
                black_box(set.remove(key));
            }
            insert_next = !insert_next;
        } else {
            black_box(set.contains(key));
        }
    }
}

fn bench_one<I: IntSet + Sync>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    threads: usize,
    update_pct: u64,
    set: I,
) {
    populate(&set);
    g.bench_function(name, |b| {
        b.iter_custom(|iters| run_threads(threads, iters, |ops| run_ops(&set, ops, update_pct)))
    });
}

/// Groups `{prefix}intset_{u}pct_threads_{n}` for each update percentage and thread count.
pub fn bench(
    c: &mut Criterion,
    prefix: &str,
    updates: &[u64],
    threads: &[usize],
    only: Option<&[&str]>,
) {
    for &u in updates {
        for &n in threads {
            let mut g = c.benchmark_group(format!("{prefix}intset_{u}pct_threads_{n}"));
            macro_rules! stm {
                ($s:ty) => {
                    let name = format!("{}_skiplist", <$s>::NAME);
                    if wanted(only, &name) {
                        bench_one(&mut g, &name, n, u, SkipList::<$s>::new());
                    }
                    let name = format!("{}_hashset", <$s>::NAME);
                    if wanted(only, &name) {
                        bench_one(&mut g, &name, n, u, HashSetStm::<$s>::new());
                    }
                };
            }
            stm!(Mvstm);
            stm!(FastStm);
            stm!(AsyncStm);
            stm!(RustStm);
            if wanted(only, "mvstm_tmap") {
                let set = TMapSet(mvstm::collections::TMap::new());
                bench_one(&mut g, "mvstm_tmap", n, u, set);
            }
            if wanted(only, "mutex_btreeset") {
                bench_one(
                    &mut g,
                    "mutex_btreeset",
                    n,
                    u,
                    MutexBTree(Default::default()),
                );
            }
            if wanted(only, "rwlock_btreeset") {
                bench_one(
                    &mut g,
                    "rwlock_btreeset",
                    n,
                    u,
                    RwLockBTree(Default::default()),
                );
            }
            if wanted(only, "mutex_hashset") {
                bench_one(
                    &mut g,
                    "mutex_hashset",
                    n,
                    u,
                    MutexHashSet(Default::default()),
                );
            }
            if wanted(only, "mutex_per_bucket") {
                let set = MutexPerBucket((0..BUCKETS).map(|_| Mutex::default()).collect());
                bench_one(&mut g, "mutex_per_bucket", n, u, set);
            }
            if n == 1 && wanted(only, "sequential_btreeset") {
                let set = SequentialBTree(Default::default());
                populate(&set);
                g.bench_function("sequential_btreeset", |b| {
                    b.iter_custom(|iters| {
                        let ops = iters.max(min_ops());
                        let began = Instant::now();
                        run_ops(&set, ops, u);
                        began.elapsed().mul_f64(iters as f64 / ops as f64)
                    })
                });
            }
            g.finish();
        }
    }
}
