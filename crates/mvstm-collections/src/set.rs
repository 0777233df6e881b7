//! `TSet`: a transactional hash set, a [`TMap`] from the element to `()`.
//!
//! It shares the map's structure and therefore its conflict behaviour: writers of elements in
//! different buckets touch disjoint TVars and do not conflict; `len` and `iter` read every
//! bucket, and `iter` keeps the persistent tries it read instead of copying the elements.

use crate::map::{TMap, TMapIter};
use mvstm_core::{StmResult, Txn};
use std::borrow::Borrow;
use std::hash::Hash;

/// A transactional hash set (ScalaSTM's `TSet`): a [`TMap`] from the element to `()`.
///
/// ```
/// use mvstm::atomically;
/// use mvstm::collections::TSet;
/// let set: TSet<String> = TSet::new();
/// assert!(atomically(|tx| set.insert(tx, "a".to_string())));
/// assert!(!atomically(|tx| set.insert(tx, "a".to_string()))); // already there
/// assert!(atomically(|tx| set.contains(tx, "a")));
/// assert!(atomically(|tx| set.remove(tx, "a")));
/// assert!(atomically(|tx| set.is_empty(tx)));
/// ```
pub struct TSet<T>
where
    T: Hash + Eq + Clone + Send + Sync + 'static,
{
    map: TMap<T, ()>,
}

impl<T> TSet<T>
where
    T: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// An empty set.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSet};
    /// let s: TSet<u32> = TSet::new();
    /// assert_eq!(atomically(|tx| s.len(tx)), 0);
    /// ```
    pub fn new() -> TSet<T> {
        TSet { map: TMap::new() }
    }

    /// Add `value`; whether it was absent (as `HashSet::insert`).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSet};
    /// let s = TSet::new();
    /// assert!(atomically(|tx| s.insert(tx, 1)));
    /// assert!(!atomically(|tx| s.insert(tx, 1)));
    /// ```
    pub fn insert(&self, tx: &mut Txn, value: T) -> StmResult<bool> {
        Ok(self.map.insert(tx, value, ())?.is_none())
    }

    /// Remove `value` (any borrowed form of the element type); whether it was present.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSet};
    /// let s = TSet::new();
    /// atomically(|tx| s.insert(tx, "x".to_string()));
    /// assert!(atomically(|tx| s.remove(tx, "x")));
    /// assert!(!atomically(|tx| s.remove(tx, "x")));
    /// ```
    pub fn remove<Q>(&self, tx: &mut Txn, value: &Q) -> StmResult<bool>
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        Ok(self.map.remove(tx, value)?.is_some())
    }

    /// Whether `value` (any borrowed form of the element type) is in the set.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSet};
    /// let s = TSet::new();
    /// atomically(|tx| s.insert(tx, 7u8));
    /// assert!(atomically(|tx| s.contains(tx, &7)));
    /// assert!(!atomically(|tx| s.contains(tx, &8)));
    /// ```
    pub fn contains<Q>(&self, tx: &mut Txn, value: &Q) -> StmResult<bool>
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(tx, value)
    }

    /// Number of elements. Reads every bucket, so it conflicts with every writer.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSet};
    /// let s = TSet::new();
    /// atomically(|tx| (0..10u32).try_for_each(|i| s.insert(tx, i % 4).map(drop)));
    /// assert_eq!(atomically(|tx| s.len(tx)), 4);
    /// ```
    pub fn len(&self, tx: &mut Txn) -> StmResult<usize> {
        self.map.len(tx)
    }

    /// Whether the set is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSet};
    /// let s = TSet::new();
    /// assert!(atomically(|tx| s.is_empty(tx)));
    /// atomically(|tx| s.insert(tx, ()));
    /// assert!(!atomically(|tx| s.is_empty(tx)));
    /// ```
    pub fn is_empty(&self, tx: &mut Txn) -> StmResult<bool> {
        self.map.is_empty(tx)
    }

    /// Every element, in no particular order, as an owning iterator over an atomic snapshot (see
    /// [`TMap::iter`]).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSet};
    /// let s = TSet::new();
    /// atomically(|tx| (1..=3).try_for_each(|i| s.insert(tx, i).map(drop)));
    /// let mut all: Vec<i32> = atomically(|tx| s.iter(tx)).collect();
    /// all.sort();
    /// assert_eq!(all, vec![1, 2, 3]);
    /// ```
    pub fn iter(&self, tx: &mut Txn) -> StmResult<TSetIter<T>> {
        Ok(TSetIter {
            entries: self.map.iter(tx)?,
        })
    }
}

/// An owning iterator over a snapshot of a [`TSet`], from [`TSet::iter`].
///
/// ```
/// use mvstm::{atomically, collections::TSet};
/// let s = TSet::new();
/// atomically(|tx| s.insert(tx, 'k'));
/// let mut it = atomically(|tx| s.iter(tx));
/// assert_eq!(it.len(), 1);
/// assert_eq!(it.next(), Some('k'));
/// assert_eq!(it.next(), None);
/// ```
pub struct TSetIter<T> {
    entries: TMapIter<T, ()>,
}

impl<T: Clone> Iterator for TSetIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.entries.next().map(|(value, ())| value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<T: Clone> ExactSizeIterator for TSetIter<T> {}

impl<T: Clone> std::iter::FusedIterator for TSetIter<T> {}

impl<T> Clone for TSetIter<T> {
    /// Another iterator over the same snapshot, from the same position (no element is copied).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSet};
    /// let s = TSet::new();
    /// atomically(|tx| (1..=4u32).try_for_each(|i| s.insert(tx, i).map(drop)));
    /// let snapshot = atomically(|tx| s.iter(tx));
    /// assert_eq!(snapshot.clone().sum::<u32>(), 10);
    /// assert_eq!(snapshot.count(), 4);
    /// ```
    fn clone(&self) -> Self {
        TSetIter {
            entries: self.entries.clone(),
        }
    }
}

impl<T> std::fmt::Debug for TSetIter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TSetIter")
            .field("remaining", &self.entries.remaining())
            .finish()
    }
}

impl<T> Default for TSet<T>
where
    T: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        TSet::new()
    }
}

impl<T> Clone for TSet<T>
where
    T: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Another handle to the same set.
    fn clone(&self) -> Self {
        TSet {
            map: self.map.clone(),
        }
    }
}

impl<T> std::fmt::Debug for TSet<T>
where
    T: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Shows no elements: reading them takes a transaction, and `Debug` may run inside one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TSet").finish_non_exhaustive()
    }
}
