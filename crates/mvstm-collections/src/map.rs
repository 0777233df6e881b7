//! `TMap`: a transactional hash map whose writers of different keys do not conflict.
//!
//! The map is a table of buckets, each bucket its own TVar holding a small persistent vector
//! (`Arc<Vec<(K, V)>>`: a read clones the `Arc`, an update copies one bucket). Writers of keys in
//! different buckets touch disjoint TVars, so they commit without conflict; there is no global
//! counter for them to meet on (`len` adds the buckets up instead).
//!
//! The table itself sits in a TVar that every operation reads and only a resize writes. When an
//! insert adds an entry to a bucket that is then longer than `MAX_BUCKET`, it doubles the table in the same
//! transaction, rehashing every entry. That transaction conflicts with the others once; the
//! table grows until buckets stay short, so resizes become rare.

use mvstm_core::{StmResult, TVar, Txn};
use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// Buckets of a new map.
const INITIAL_BUCKETS: usize = 64;

/// A bucket longer than this after an insert doubles the table.
/// An insert that leaves its bucket longer than this doubles the table. A fixed bound keeps the
/// load factor low in large tables (the longest bucket grows like `ln m / ln ln m`); a bound
/// that grew with the table was tried and made resizes long enough to collide badly with
/// concurrent writers, so it waits for a better resize (incremental, not one transaction).
const MAX_BUCKET: usize = 4;

type Bucket<K, V> = Arc<Vec<(K, V)>>;

struct Table<K, V> {
    buckets: Box<[TVar<Bucket<K, V>>]>,
}

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
    table: TVar<Arc<Table<K, V>>>,
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
        TMap {
            table: TVar::new(Arc::new(Table::new(INITIAL_BUCKETS))),
            hasher: RandomState::new(),
        }
    }

    fn bucket<'t, Q: Hash + ?Sized>(
        &self,
        table: &'t Table<K, V>,
        key: &Q,
    ) -> &'t TVar<Bucket<K, V>> {
        let hash = self.hasher.hash_one(key);
        &table.buckets[(hash as usize) & (table.buckets.len() - 1)]
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
        let table = tx.read(&self.table)?;
        let bucket = tx.read(self.bucket(&table, key))?;
        Ok(bucket
            .iter()
            .find(|(k, _)| k.borrow() == key)
            .map(|(_, v)| v.clone()))
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
        let table = tx.read(&self.table)?;
        let bucket = tx.read(self.bucket(&table, key))?;
        Ok(bucket.iter().any(|(k, _)| k.borrow() == key))
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
        let mut old = None;
        self.update(tx, key, |current| {
            old = current;
            Some(value)
        })?;
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
        let table = tx.read(&self.table)?;
        let cell = self.bucket(&table, key);
        let bucket = tx.read(cell)?;
        let Some(at) = bucket.iter().position(|(k, _)| k.borrow() == key) else {
            return Ok(None);
        };
        let old = bucket[at].1.clone();
        let rest: Vec<(K, V)> = bucket
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != at)
            .map(|(_, e)| e.clone())
            .collect();
        tx.write(cell, Arc::new(rest))?;
        Ok(Some(old))
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
        let table = tx.read(&self.table)?;
        let cell = self.bucket(&table, &key);
        let bucket = tx.read(cell)?;
        let at = bucket.iter().position(|(k, _)| *k == key);
        let new = f(at.map(|i| bucket[i].1.clone()));
        if new.is_none() && at.is_none() {
            return Ok(None); // removing an absent key: nothing to write
        }
        let mut entries: Vec<(K, V)> = Vec::with_capacity(bucket.len() + 1);
        entries.extend(
            bucket
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != at)
                .map(|(_, e)| e.clone()),
        );
        let added = at.is_none();
        if let Some(v) = &new {
            entries.push((key, v.clone()));
        }
        // Grow only when this write added an entry to a bucket past the threshold, and only if
        // doubling can split it: keys that all share one full hash stay together whatever the
        // table size (a degenerate `Hash`), so growing for them would never end.
        let grow = added && entries.len() > MAX_BUCKET && !self.same_hash(&entries);
        tx.write(cell, Arc::new(entries))?;
        if grow {
            self.grow(tx, &table)?;
        }
        Ok(new)
    }

    /// Whether every key of `entries` has the same full hash.
    fn same_hash(&self, entries: &[(K, V)]) -> bool {
        let first = self.hasher.hash_one(&entries[0].0);
        entries
            .iter()
            .all(|(k, _)| self.hasher.hash_one(k) == first)
    }

    /// Double the table, rehashing every entry (this transaction's writes included).
    fn grow(&self, tx: &mut Txn, table: &Table<K, V>) -> StmResult<()> {
        let size = table.buckets.len() * 2;
        let mut fresh: Vec<Vec<(K, V)>> = vec![Vec::new(); size];
        for cell in table.buckets.iter() {
            for (k, v) in tx.read(cell)?.iter() {
                fresh[(self.hasher.hash_one(k) as usize) & (size - 1)].push((k.clone(), v.clone()));
            }
        }
        // New TVars already holding their entries: private until the table is published, so
        // they need no transactional write (and no lock at commit).
        let bigger = Table {
            buckets: fresh.into_iter().map(|e| TVar::new(Arc::new(e))).collect(),
        };
        tx.write(&self.table, Arc::new(bigger))
    }

    /// Number of entries. Reads every bucket, so it conflicts with every writer.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m = TMap::new();
    /// atomically(|tx| (0..100u32).try_for_each(|i| m.insert(tx, i, i).map(drop)));
    /// assert_eq!(atomically(|tx| m.len(tx)), 100);
    /// ```
    pub fn len(&self, tx: &mut Txn) -> StmResult<usize> {
        let table = tx.read(&self.table)?;
        let mut n = 0;
        for cell in table.buckets.iter() {
            n += tx.read(cell)?.len();
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
        let table = tx.read(&self.table)?;
        for cell in table.buckets.iter() {
            if !tx.read(cell)?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every entry, in no particular order: an atomic snapshot of the whole map (in a read-only
    /// transaction it never aborts and never blocks writers).
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
        let table = tx.read(&self.table)?;
        let mut all = Vec::new();
        for cell in table.buckets.iter() {
            all.extend(tx.read(cell)?.iter().cloned());
        }
        Ok(all)
    }
    /// Every entry, in no particular order, as an owning iterator over an atomic snapshot of the
    /// whole map: the iterator borrows nothing, so it can leave the transaction (API.md §8).
    ///
    /// Today the snapshot copies the entries (O(n), like [`TMap::snapshot`]); in a read-only
    /// transaction it never aborts and never blocks writers.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMap};
    /// let m: TMap<u32, u32> = TMap::new();
    /// atomically(|tx| m.insert(tx, 1, 10).map(|_| ()));
    /// let seen: Vec<(u32, u32)> = atomically(|tx| m.iter(tx)).collect();
    /// assert_eq!(seen, vec![(1, 10)]);
    /// ```
    pub fn iter(&self, tx: &mut Txn) -> StmResult<TMapIter<K, V>> {
        Ok(TMapIter {
            entries: self.snapshot(tx)?.into_iter(),
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
    entries: std::vec::IntoIter<(K, V)>,
}

impl<K, V> Iterator for TMapIter<K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        self.entries.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<K, V> ExactSizeIterator for TMapIter<K, V> {}

impl<K, V> std::fmt::Debug for TMapIter<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TMapIter")
            .field("remaining", &self.entries.len())
            .finish()
    }
}

impl<K, V> Table<K, V>
where
    K: Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new(buckets: usize) -> Table<K, V> {
        debug_assert!(buckets.is_power_of_two());
        Table {
            buckets: (0..buckets)
                .map(|_| TVar::new(Arc::new(Vec::new())))
                .collect(),
        }
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
            table: self.table.clone(),
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
