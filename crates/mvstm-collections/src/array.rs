//! `TArray`: a fixed-length array with one TVar per slot (GHC's `TArray`, ScalaSTM's `TArray`).
//!
//! The slots never move and the length never changes, so the array needs no table variable:
//! an operation on slot `i` reads or writes that slot's TVar and nothing else. Transactions that
//! touch disjoint indices therefore share no TVar and never conflict (tested by counting
//! attempts). Out-of-range indices panic with the index and the length, as slices do.

use mvstm_core::{StmResult, TVar, Txn};
use std::sync::Arc;

/// A fixed-length transactional array: one TVar per slot, so disjoint indices never conflict.
///
/// ```
/// use mvstm::atomically;
/// use mvstm::collections::TArray;
/// let arr: TArray<u64> = TArray::new(16, 0);
/// atomically(|tx| arr.set(tx, 3, 7));
/// assert_eq!(atomically(|tx| arr.get(tx, 3)), 7);
/// // Move 2 from slot 3 to slot 5 atomically.
/// atomically(|tx| {
///     arr.update(tx, 3, |n| n - 2)?;
///     arr.update(tx, 5, |n| n + 2)
/// });
/// assert_eq!(atomically(|tx| arr.to_vec(tx))[3..6], [5, 0, 2]);
/// ```
pub struct TArray<T: Clone + Send + Sync + 'static> {
    slots: Arc<[TVar<T>]>,
}

impl<T: Clone + Send + Sync + 'static> TArray<T> {
    /// An array of `len` slots, each holding a clone of `value`.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TArray};
    /// let arr = TArray::new(3, "x");
    /// assert_eq!(arr.len(), 3);
    /// assert_eq!(atomically(|tx| arr.get(tx, 2)), "x");
    /// ```
    pub fn new(len: usize, value: T) -> TArray<T> {
        TArray {
            slots: (0..len).map(|_| TVar::new(value.clone())).collect(),
        }
    }

    /// An array holding `values`, in order.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TArray};
    /// let arr = TArray::from_vec(vec![1, 2, 3]);
    /// assert_eq!(atomically(|tx| arr.get(tx, 1)), 2);
    /// ```
    pub fn from_vec(values: Vec<T>) -> TArray<T> {
        TArray {
            slots: values.into_iter().map(TVar::new).collect(),
        }
    }

    /// The number of slots (fixed at construction; no transaction needed).
    ///
    /// ```
    /// use mvstm::collections::TArray;
    /// assert_eq!(TArray::new(8, 0u8).len(), 8);
    /// ```
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the array has no slots.
    ///
    /// ```
    /// use mvstm::collections::TArray;
    /// assert!(TArray::<u8>::from_vec(vec![]).is_empty());
    /// assert!(!TArray::new(1, 0u8).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    #[track_caller]
    fn slot(&self, index: usize) -> &TVar<T> {
        match self.slots.get(index) {
            Some(slot) => slot,
            None => panic!(
                "TArray index out of bounds: the len is {} but the index is {index}",
                self.slots.len()
            ),
        }
    }

    /// The value in slot `index`.
    ///
    /// # Panics
    ///
    /// If `index >= len()`.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TArray};
    /// let arr = TArray::from_vec(vec!['a', 'b']);
    /// assert_eq!(atomically(|tx| arr.get(tx, 1)), 'b');
    /// ```
    #[track_caller]
    pub fn get(&self, tx: &mut Txn, index: usize) -> StmResult<T> {
        tx.read(self.slot(index))
    }

    /// Store `value` in slot `index`.
    ///
    /// # Panics
    ///
    /// If `index >= len()`.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TArray};
    /// let arr = TArray::new(2, 0);
    /// atomically(|tx| arr.set(tx, 0, 9));
    /// assert_eq!(atomically(|tx| arr.to_vec(tx)), vec![9, 0]);
    /// ```
    #[track_caller]
    pub fn set(&self, tx: &mut Txn, index: usize, value: T) -> StmResult<()> {
        tx.write(self.slot(index), value)
    }

    /// Store `value` in slot `index` and return the value it replaces.
    ///
    /// # Panics
    ///
    /// If `index >= len()`.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TArray};
    /// let arr = TArray::new(2, 1);
    /// assert_eq!(atomically(|tx| arr.swap(tx, 1, 5)), 1);
    /// assert_eq!(atomically(|tx| arr.get(tx, 1)), 5);
    /// ```
    #[track_caller]
    pub fn swap(&self, tx: &mut Txn, index: usize, value: T) -> StmResult<T> {
        tx.replace(self.slot(index), value)
    }

    /// Replace the value in slot `index` with `f(value)`; returns the new value.
    ///
    /// # Panics
    ///
    /// If `index >= len()`.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TArray};
    /// let counters = TArray::new(4, 0u32);
    /// assert_eq!(atomically(|tx| counters.update(tx, 2, |n| n + 1)), 1);
    /// ```
    #[track_caller]
    pub fn update(&self, tx: &mut Txn, index: usize, f: impl FnOnce(T) -> T) -> StmResult<T> {
        let slot = self.slot(index);
        let new = f(tx.read(slot)?);
        tx.write(slot, new.clone())?;
        Ok(new)
    }

    /// Every value, in index order: an atomic snapshot (reads every slot, so it conflicts with
    /// every writer when the transaction also writes).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TArray};
    /// let arr = TArray::from_vec(vec![3, 1, 2]);
    /// assert_eq!(atomically(|tx| arr.to_vec(tx)), vec![3, 1, 2]);
    /// ```
    pub fn to_vec(&self, tx: &mut Txn) -> StmResult<Vec<T>> {
        self.slots.iter().map(|slot| tx.read(slot)).collect()
    }
}

impl<T: Clone + Send + Sync + 'static> Clone for TArray<T> {
    /// Another handle to the same array (the slots are shared, not copied).
    fn clone(&self) -> Self {
        TArray {
            slots: Arc::clone(&self.slots),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> FromIterator<T> for TArray<T> {
    /// An array of the iterator's values, in order.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TArray};
    /// let arr: TArray<u32> = (0..5).collect();
    /// assert_eq!(atomically(|tx| arr.get(tx, 4)), 4);
    /// ```
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        TArray {
            slots: iter.into_iter().map(TVar::new).collect(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> std::fmt::Debug for TArray<T> {
    /// Shows the length only: reading the slots takes a transaction, and `Debug` may run inside
    /// one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TArray")
            .field("len", &self.slots.len())
            .finish_non_exhaustive()
    }
}
