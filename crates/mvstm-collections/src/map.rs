//! `TMap`: a transactional hash map whose writers of different keys do not conflict and whose
//! snapshots cost no copy.
//!
//! The map is a fixed row of [`BUCKETS`] TVars chosen by the low bits of the key's hash; each
//! holds the root of a persistent hash array mapped trie (`hamt.rs`) over the rest of the bits.
//! Writers of keys in different buckets touch disjoint TVars, so they commit without conflict;
//! there is no global counter and no table variable for them to meet on.
//!
//! A write copies the path from its bucket's root to the key (a few small nodes) and shares the
//! rest, so the old root stays a complete map: a snapshot ([`TMap::iter`]) reads each bucket
//! once and keeps the roots, and copies no entry. The trie under a bucket grows one node at a
//! time where keys meet; nothing is ever rehashed, so no transaction has to touch the whole
//! map to make room.
//!
//! The row does not grow: [`BUCKETS`] is the constant that trades the cost of a snapshot (one
//! read per bucket) against the chance that two writers of different keys meet in one bucket
//! (one in [`BUCKETS`] for two concurrent writes). `docs/collections.md` has the figures.

use crate::hamt::{Iter, Node};
use mvstm_core::{StmResult, TVar, Txn};
use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// Bucket TVars of every map: what a snapshot reads, and one over the chance that two
/// concurrent writers of different keys share a bucket. It also sets the size of the node an
/// insert copies: a bucket's root branch has up to 32 slots, and each slot holding a subtree
/// costs a reference count up at the copy and down when the old root is freed. On a map of
/// 4,096 keys, 64 buckets made inserts about 2x the cost of the former one-vector buckets,
/// 128 about 1.6x, 256 about 1.5x while doubling the snapshot again (`docs/collections.md`).
const BUCKETS: usize = 128;
const _: () = assert!(
    BUCKETS.is_power_of_two(),
    "the bucket index is a mask of hash bits"
);

/// Hash bits the bucket index takes; each bucket's trie starts at this bit.
const ROOT_SHIFT: u32 = BUCKETS.trailing_zeros();

type Root<K, V> = Arc<Node<K, V>>;

/// A transactional hash map.
///
/// ```
/// use mvstm::{atomically, collections::TMap};
/// let m: TMap<String, u64> = TMap::new();
/// let prev = atomically(|tx| m.insert(tx, "k".to_string(), 1));
/// assert_eq!(prev, None);
/// assert_eq!(atomically(|tx| m.get(tx, &"k".to_string())), Some(1));
/// atomically(|tx| m.update(tx, "k".to_string(), |v| v.map(|n| n + 1)));
/// assert_eq!(atomically(|tx| m.remove(tx, &"k".to_string())), Some(2));
/// assert_eq!(atomically(|tx| m.len(tx)), 0);
/// ```
pub struct TMap<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    buckets: Arc<[TVar<Root<K, V>>]>,
    hasher: RandomState,
}

impl<K, V> TMap<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An empty map.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m: TMap<String, u64> = TMap::new();
    /// assert!(atomically(|tx| m.is_empty(tx)));
    /// ```
    pub fn new() -> TMap<K, V> {
        let empty: Root<K, V> = Arc::new(Node::empty());
        TMap {
            buckets: (0..BUCKETS).map(|_| TVar::new(empty.clone())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The hash of `key` and the TVar of its bucket.
    fn bucket<Q: Hash + ?Sized>(&self, key: &Q) -> (u64, &TVar<Root<K, V>>) {
        let hash = self.hasher.hash_one(key);
        (hash, &self.buckets[(hash as usize) & (BUCKETS - 1)])
    }

    /// The value of `key` (any borrowed form of the key type, as with `HashMap::get`).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m: TMap<String, u32> = TMap::new();
    /// atomically(|tx| m.insert(tx, "a".to_string(), 1));
    /// assert_eq!(atomically(|tx| m.get(tx, "a")), Some(1)); // a &str for a String key
    /// assert_eq!(atomically(|tx| m.get(tx, "b")), None);
    /// ```
    pub fn get<Q>(&self, tx: &mut Txn, key: &Q) -> StmResult<Option<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, cell) = self.bucket(key);
        tx.read_with(cell, |root| root.get(hash, ROOT_SHIFT, key).cloned())
    }

    /// Whether `key` is present.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| m.insert(tx, 1u32, "one"));
    /// assert!(atomically(|tx| m.contains_key(tx, &1)));
    /// assert!(!atomically(|tx| m.contains_key(tx, &2)));
    /// ```
    pub fn contains_key<Q>(&self, tx: &mut Txn, key: &Q) -> StmResult<bool>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, cell) = self.bucket(key);
        tx.read_with(cell, |root| root.get(hash, ROOT_SHIFT, key).is_some())
    }

    /// Insert `value` under `key`; the value it replaces, if any.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// assert_eq!(atomically(|tx| m.insert(tx, "k", 1)), None);
    /// assert_eq!(atomically(|tx| m.insert(tx, "k", 2)), Some(1)); // the replaced value
    /// ```
    pub fn insert(&self, tx: &mut Txn, key: K, value: V) -> StmResult<Option<V>> {
        let (hash, cell) = self.bucket(&key);
        let (root, old) = tx.read_with(cell, |root| root.insert(hash, ROOT_SHIFT, key, value))?;
        tx.write(cell, Arc::new(root))?;
        Ok(old)
    }

    /// Remove `key`; its value, if it was present (nothing is written if it was not).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| m.insert(tx, 7u64, 'x'));
    /// assert_eq!(atomically(|tx| m.remove(tx, &7)), Some('x'));
    /// assert_eq!(atomically(|tx| m.remove(tx, &7)), None);
    /// ```
    pub fn remove<Q>(&self, tx: &mut Txn, key: &Q) -> StmResult<Option<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, cell) = self.bucket(key);
        let Some(removed) = tx.read_with(cell, |root| root.remove(hash, ROOT_SHIFT, key))? else {
            return Ok(None);
        };
        tx.write(cell, Arc::new(removed.node))?;
        Ok(Some(removed.value))
    }

    /// Entry-style change: `f` gets the current value (or `None`) and returns the new one (or
    /// `None` to remove the key). Returns the new value.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let hits: TMap<&str, u32> = TMap::new();
    /// for _ in 0..3 {
    ///     atomically(|tx| hits.update(tx, "/", |n| Some(n.unwrap_or(0) + 1)));
    /// }
    /// assert_eq!(atomically(|tx| hits.get(tx, &"/")), Some(3));
    /// ```
    pub fn update(
        &self,
        tx: &mut Txn,
        key: K,
        f: impl FnOnce(Option<V>) -> Option<V>,
    ) -> StmResult<Option<V>> {
        let (hash, cell) = self.bucket(&key);
        let (new, root) = tx.read_with(cell, |root| {
            let old = root.get(hash, ROOT_SHIFT, &key).cloned();
            let present = old.is_some();
            let new = f(old);
            let root = match &new {
                Some(v) => Some(root.insert(hash, ROOT_SHIFT, key, v.clone()).0),
                // Removing an absent key writes nothing.
                None if present => root.remove(hash, ROOT_SHIFT, &key).map(|r| r.node),
                None => None,
            };
            (new, root)
        })?;
        if let Some(root) = root {
            tx.write(cell, Arc::new(root))?;
        }
        Ok(new)
    }

    /// Number of entries: one read per bucket (each trie keeps its count), so it conflicts with
    /// every writer.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| (0..100u32).try_for_each(|i| m.insert(tx, i, i).map(drop)));
    /// assert_eq!(atomically(|tx| m.len(tx)), 100);
    /// ```
    pub fn len(&self, tx: &mut Txn) -> StmResult<usize> {
        let mut n = 0;
        for cell in self.buckets.iter() {
            n += tx.read_with(cell, |root| root.len())?;
        }
        Ok(n)
    }

    /// Whether the map is empty (reads buckets up to the first non-empty one).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// assert!(atomically(|tx| m.is_empty(tx)));
    /// atomically(|tx| m.insert(tx, 'k', ()));
    /// assert!(!atomically(|tx| m.is_empty(tx)));
    /// ```
    pub fn is_empty(&self, tx: &mut Txn) -> StmResult<bool> {
        for cell in self.buckets.iter() {
            if tx.read_with(cell, |root| root.len())? != 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every entry, in no particular order, copied into a `Vec`: an atomic snapshot of the whole
    /// map (in a read-only transaction it never aborts and never blocks writers). It costs a
    /// copy of every entry; [`TMap::iter`] gives the same snapshot without one.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| (0..3).try_for_each(|i| m.insert(tx, i, i * 10).map(drop)));
    /// let mut all = atomically(|tx| m.snapshot(tx));
    /// all.sort();
    /// assert_eq!(all, vec![(0, 0), (1, 10), (2, 20)]);
    /// ```
    pub fn snapshot(&self, tx: &mut Txn) -> StmResult<Vec<(K, V)>> {
        Ok(self.iter(tx)?.collect())
    }

    /// Every entry, in no particular order, as an owning iterator over an atomic snapshot of the
    /// whole map: the iterator borrows nothing, so it can leave the transaction (API.md §8).
    ///
    /// Taking the snapshot reads each of the map's 128 bucket TVars once and keeps their roots:
    /// its cost does not depend on the number of entries, and no entry is copied until the
    /// iterator yields it (each as a clone). Writers that commit later build new roots and
    /// leave the snapshot's alone, so iterating never conflicts with them, inside the
    /// transaction or after it. Like any read, the snapshot joins the transaction's read set:
    /// an update transaction that iterates conflicts with a concurrent writer of any key (that
    /// is what keeps it serializable); a read-only one never aborts and never blocks writers.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m: TMap<u32, u32> = TMap::new();
    /// atomically(|tx| m.insert(tx, 1, 10).map(|_| ()));
    /// let seen: Vec<(u32, u32)> = atomically(|tx| m.iter(tx)).collect();
    /// assert_eq!(seen, vec![(1, 10)]);
    ///
    /// // The snapshot is not affected by later writes.
    /// let before = atomically(|tx| m.iter(tx));
    /// atomically(|tx| m.insert(tx, 2, 20).map(drop));
    /// assert_eq!(before.collect::<Vec<_>>(), vec![(1, 10)]);
    /// ```
    pub fn iter(&self, tx: &mut Txn) -> StmResult<TMapIter<K, V>> {
        let mut roots = Vec::with_capacity(BUCKETS);
        for cell in self.buckets.iter() {
            roots.push(tx.read(cell)?);
        }
        Ok(TMapIter {
            entries: Iter::new(roots),
        })
    }
}

/// An owning iterator over a snapshot of a [`TMap`], from [`TMap::iter`].
///
/// ```
/// use mvstm::{atomically, collections::TMap};
/// let m = TMap::new();
/// atomically(|tx| m.insert(tx, 'k', 1).map(drop));
/// let mut it = atomically(|tx| m.iter(tx));
/// assert_eq!(it.len(), 1);
/// assert_eq!(it.next(), Some(('k', 1)));
/// assert_eq!(it.next(), None);
/// ```
pub struct TMapIter<K, V> {
    entries: Iter<K, V>,
}

impl<K, V> TMapIter<K, V> {
    /// Entries not yet yielded (`len`, without the `Clone` bounds of `ExactSizeIterator`).
    pub(crate) fn remaining(&self) -> usize {
        self.entries.remaining()
    }
}

impl<K: Clone, V: Clone> Iterator for TMapIter<K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        self.entries.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<K: Clone, V: Clone> ExactSizeIterator for TMapIter<K, V> {}

impl<K: Clone, V: Clone> std::iter::FusedIterator for TMapIter<K, V> {}

impl<K, V> Clone for TMapIter<K, V> {
    /// Another iterator over the same snapshot, from the same position: it shares the trie
    /// roots, so it copies no entry.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| (0..10u32).try_for_each(|i| m.insert(tx, i, i).map(drop)));
    /// let snapshot = atomically(|tx| m.iter(tx));
    /// let total: u32 = snapshot.clone().map(|(_, v)| v).sum();
    /// assert_eq!(total, 45);
    /// assert_eq!(snapshot.count(), 10); // the snapshot itself is still whole
    /// ```
    fn clone(&self) -> Self {
        TMapIter {
            entries: self.entries.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for TMapIter<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TMapIter")
            .field("remaining", &self.entries.remaining())
            .finish()
    }
}

impl<K, V> Default for TMap<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        TMap::new()
    }
}

impl<K, V> Clone for TMap<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Another handle to the same map.
    fn clone(&self) -> Self {
        TMap {
            buckets: self.buckets.clone(),
            hasher: self.hasher.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for TMap<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Shows no entries: reading them takes a transaction, and `Debug` may run inside one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TMap").finish_non_exhaustive()
    }
}
