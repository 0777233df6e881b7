//! `Versioned<T>`: optimistic concurrency across a user's think time.
//!
//! A transaction cannot stay open while a person edits a form. The usual answer (JPA's
//! `@Version` on a database row) is to read the value with a version number, let the user work,
//! and write back naming the version that was read: if another update landed meanwhile, the write
//! is refused with [`StaleVersion`] and the caller re-reads and merges. The value and its version
//! live in one TVar, so the check and the write are atomic, and both compose with other work in
//! the same transaction.

use mvstm_core::{StmResult, TVar, Txn};
use std::fmt;

/// A value with a version that increases by one per committed update.
///
/// ```
/// use mvstm::{atomically, collections::{StaleVersion, Versioned}};
/// let doc = Versioned::new(String::from("draft"));
/// let (text, version) = doc.load();                      // read, then think
/// assert_eq!((text.as_str(), version), ("draft", 0));
/// let v1 = atomically(|tx| doc.update(tx, version, "final".into())).unwrap();
/// assert_eq!(v1, 1);
/// // A second editor who also read version 0 is refused:
/// let stale = atomically(|tx| doc.update(tx, version, "other".into()));
/// assert_eq!(stale, Err(StaleVersion { expected: 0, actual: 1 }));
/// ```
pub struct Versioned<T: Clone + Send + Sync + 'static> {
    cell: TVar<(T, u64)>,
}

/// An update named a version that is no longer current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleVersion {
    /// The version the update was based on.
    pub expected: u64,
    /// The current version.
    pub actual: u64,
}

impl fmt::Display for StaleVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stale version: the update was based on version {} but the record is at version {}",
            self.expected, self.actual
        )
    }
}

impl std::error::Error for StaleVersion {}

impl<T: Clone + Send + Sync + 'static> Versioned<T> {
    /// A record holding `value` at version 0.
    ///
    /// ```
    /// use mvstm::collections::Versioned;
    /// let record = Versioned::new(vec![1, 2]);
    /// assert_eq!(record.load(), (vec![1, 2], 0));
    /// ```
    pub fn new(value: T) -> Versioned<T> {
        Versioned {
            cell: TVar::new((value, 0)),
        }
    }

    /// The value and its version, in this transaction.
    ///
    /// ```
    /// use mvstm::{atomically, collections::Versioned};
    /// let record = Versioned::new("v0");
    /// assert_eq!(atomically(|tx| record.read(tx)), ("v0", 0));
    /// ```
    pub fn read(&self, tx: &mut Txn) -> StmResult<(T, u64)> {
        tx.read(&self.cell)
    }

    /// The newest committed value and its version, without a transaction (what an editor
    /// reads before its think time).
    ///
    /// ```
    /// use mvstm::{atomically, collections::Versioned};
    /// let record = Versioned::new(10);
    /// atomically(|tx| record.modify(tx, |n| n + 1));
    /// assert_eq!(record.load(), (11, 1));
    /// ```
    pub fn load(&self) -> (T, u64) {
        self.cell.load()
    }

    /// The current version, in this transaction.
    ///
    /// ```
    /// use mvstm::{atomically, collections::Versioned};
    /// let record = Versioned::new(());
    /// assert_eq!(atomically(|tx| record.version(tx)), 0);
    /// atomically(|tx| record.modify(tx, |()| ()));
    /// assert_eq!(atomically(|tx| record.version(tx)), 1);
    /// ```
    pub fn version(&self, tx: &mut Txn) -> StmResult<u64> {
        Ok(tx.read(&self.cell)?.1)
    }

    /// Replace the value if the record is still at `expected`; the new version, or
    /// [`StaleVersion`] if another update landed since `expected` was read (nothing is written
    /// then, and the transaction goes on: abort it or merge, as the caller decides).
    ///
    /// ```
    /// use mvstm::{atomically, collections::{StaleVersion, Versioned}};
    /// let price = Versioned::new(100);
    /// let (_, seen) = price.load();
    /// assert_eq!(atomically(|tx| price.update(tx, seen, 120)), Ok(1));
    /// // Based on version 0 again: refused, nothing written.
    /// let stale = atomically(|tx| price.update(tx, seen, 90));
    /// assert_eq!(stale, Err(StaleVersion { expected: 0, actual: 1 }));
    /// assert_eq!(price.load(), (120, 1));
    /// ```
    pub fn update(
        &self,
        tx: &mut Txn,
        expected: u64,
        value: T,
    ) -> StmResult<Result<u64, StaleVersion>> {
        let actual = tx.read(&self.cell)?.1;
        if actual != expected {
            return Ok(Err(StaleVersion { expected, actual }));
        }
        tx.write(&self.cell, (value, actual + 1))?;
        Ok(Ok(actual + 1))
    }

    /// Apply `f` to the current value unconditionally (within this transaction the read is
    /// current by construction); the new version.
    ///
    /// ```
    /// use mvstm::{atomically, collections::Versioned};
    /// let counter = Versioned::new(0u32);
    /// assert_eq!(atomically(|tx| counter.modify(tx, |n| n + 5)), 1);
    /// assert_eq!(counter.load(), (5, 1));
    /// ```
    pub fn modify(&self, tx: &mut Txn, f: impl FnOnce(T) -> T) -> StmResult<u64> {
        let (value, version) = tx.read(&self.cell)?;
        tx.write(&self.cell, (f(value), version + 1))?;
        Ok(version + 1)
    }
}

impl<T: Clone + Send + Sync + 'static> Clone for Versioned<T> {
    /// Another handle to the same record.
    fn clone(&self) -> Self {
        Versioned {
            cell: self.cell.clone(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static + fmt::Debug> fmt::Debug for Versioned<T> {
    /// Shows the newest committed value and version (a plain load).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (value, version) = self.cell.load();
        f.debug_struct("Versioned")
            .field("value", &value)
            .field("version", &version)
            .finish()
    }
}
