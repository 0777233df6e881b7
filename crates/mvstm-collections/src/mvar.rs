//! `TMVar`: a slot that is empty or full, with blocking `take` and `put` (GHC's `TMVar`).

use mvstm_core::{retry, StmResult, TVar, Txn};

/// A transactional slot: `take` retries (blocks) while it is empty, `put` while it is full.
///
/// A one-item handoff between threads, a lock that carries a value, or a one-shot result.
///
/// ```
/// use mvstm::{atomically, collections::TMVar};
/// let slot = TMVar::new_empty();
/// atomically(|tx| slot.put(tx, 5));
/// assert_eq!(atomically(|tx| slot.try_put(tx, 6)), Err(6)); // full: the value comes back
/// assert_eq!(atomically(|tx| slot.take(tx)), 5);
/// assert!(atomically(|tx| slot.is_empty(tx)));
/// ```
pub struct TMVar<T: Clone + Send + Sync + 'static> {
    slot: TVar<Option<T>>,
}

impl<T: Clone + Send + Sync + 'static> TMVar<T> {
    /// A full slot holding `value`.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMVar};
    /// let slot = TMVar::new(5);
    /// assert!(!atomically(|tx| slot.is_empty(tx)));
    /// ```
    pub fn new(value: T) -> TMVar<T> {
        TMVar {
            slot: TVar::new(Some(value)),
        }
    }

    /// An empty slot.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMVar};
    /// let slot: TMVar<u32> = TMVar::new_empty();
    /// assert!(atomically(|tx| slot.is_empty(tx)));
    /// ```
    pub fn new_empty() -> TMVar<T> {
        TMVar {
            slot: TVar::new(None),
        }
    }

    /// Take the value, leaving the slot empty; retries (blocks) while it is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMVar};
    /// let result = TMVar::new_empty();
    /// let worker = result.clone();
    /// std::thread::spawn(move || atomically(|tx| worker.put(tx, 6 * 7)));
    /// assert_eq!(atomically(|tx| result.take(tx)), 42); // waits for the worker
    /// assert!(atomically(|tx| result.is_empty(tx)));
    /// ```
    pub fn take(&self, tx: &mut Txn) -> StmResult<T> {
        // Read first: writing `None` into an empty slot before retrying would make a stale
        // read a conflict instead of a wait.
        crate::or_retry(self.try_take(tx)?)
    }

    /// Take the value if there is one.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMVar};
    /// let slot = TMVar::new('x');
    /// assert_eq!(atomically(|tx| slot.try_take(tx)), Some('x'));
    /// assert_eq!(atomically(|tx| slot.try_take(tx)), None);
    /// ```
    pub fn try_take(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        let value = tx.read(&self.slot)?;
        if value.is_some() {
            tx.write(&self.slot, None)?;
        }
        Ok(value)
    }

    /// Fill the slot; retries (blocks) while it is full.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMVar};
    /// let slot = TMVar::new_empty();
    /// atomically(|tx| slot.put(tx, "token")); // a second put would block until a take
    /// assert_eq!(atomically(|tx| slot.read(tx)), "token");
    /// ```
    pub fn put(&self, tx: &mut Txn, value: T) -> StmResult<()> {
        match self.try_put(tx, value)? {
            Ok(()) => Ok(()),
            Err(_) => retry(),
        }
    }

    /// Fill the slot, or give the value back in `Err` if it is full.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMVar};
    /// let slot = TMVar::new_empty();
    /// assert_eq!(atomically(|tx| slot.try_put(tx, 1)), Ok(()));
    /// assert_eq!(atomically(|tx| slot.try_put(tx, 2)), Err(2)); // full: 2 comes back
    /// ```
    pub fn try_put(&self, tx: &mut Txn, value: T) -> StmResult<Result<(), T>> {
        if tx.read(&self.slot)?.is_some() {
            return Ok(Err(value));
        }
        tx.write(&self.slot, Some(value))?;
        Ok(Ok(()))
    }

    /// The value without taking it; retries (blocks) while the slot is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMVar};
    /// let slot = TMVar::new(3);
    /// assert_eq!(atomically(|tx| slot.read(tx)), 3);
    /// assert!(!atomically(|tx| slot.is_empty(tx))); // still full
    /// ```
    pub fn read(&self, tx: &mut Txn) -> StmResult<T> {
        crate::or_retry(tx.read(&self.slot)?)
    }

    /// The value without taking it, or `None` if the slot is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMVar};
    /// let slot: TMVar<u8> = TMVar::new_empty();
    /// assert_eq!(atomically(|tx| slot.try_read(tx)), None);
    /// atomically(|tx| slot.put(tx, 9));
    /// assert_eq!(atomically(|tx| slot.try_read(tx)), Some(9));
    /// ```
    pub fn try_read(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        tx.read(&self.slot)
    }

    /// Replace the value and return the old one; retries (blocks) while the slot is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMVar};
    /// let slot = TMVar::new("old");
    /// assert_eq!(atomically(|tx| slot.swap(tx, "new")), "old");
    /// assert_eq!(atomically(|tx| slot.read(tx)), "new");
    /// ```
    pub fn swap(&self, tx: &mut Txn, value: T) -> StmResult<T> {
        let old = self.take(tx)?;
        tx.write(&self.slot, Some(value))?;
        Ok(old)
    }

    /// Whether the slot is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TMVar};
    /// let slot = TMVar::new(1);
    /// assert!(!atomically(|tx| slot.is_empty(tx)));
    /// atomically(|tx| slot.take(tx));
    /// assert!(atomically(|tx| slot.is_empty(tx)));
    /// ```
    pub fn is_empty(&self, tx: &mut Txn) -> StmResult<bool> {
        Ok(tx.read(&self.slot)?.is_none())
    }
}

impl<T: Clone + Send + Sync + 'static> Default for TMVar<T> {
    /// An empty slot.
    fn default() -> Self {
        TMVar::new_empty()
    }
}

impl<T: Clone + Send + Sync + 'static> Clone for TMVar<T> {
    /// Another handle to the same slot.
    fn clone(&self) -> Self {
        TMVar {
            slot: self.slot.clone(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> std::fmt::Debug for TMVar<T> {
    /// Shows nothing of the value: reading it takes a transaction.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TMVar").finish_non_exhaustive()
    }
}
