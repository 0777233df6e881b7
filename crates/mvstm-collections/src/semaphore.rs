//! `TSemaphore`: a counting semaphore whose acquire blocks through `retry`.

use mvstm_core::{retry, StmResult, TVar, Txn};

/// A transactional counting semaphore.
///
/// Because it lives in a TVar, taking permits composes with other work: a transaction can take
/// two permits from two semaphores and update state in one atomic step, or take none.
///
/// ```
/// use mvstm::{atomically, collections::TSemaphore};
/// let pool = TSemaphore::new(3);
/// atomically(|tx| pool.acquire(tx, 2));
/// assert!(!atomically(|tx| pool.try_acquire(tx, 2)));
/// atomically(|tx| pool.release(tx, 2));
/// assert_eq!(atomically(|tx| pool.available(tx)), 3);
/// ```
pub struct TSemaphore {
    permits: TVar<u64>,
}

impl TSemaphore {
    /// A semaphore holding `permits` permits.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSemaphore};
    /// let pool = TSemaphore::new(4);
    /// assert_eq!(atomically(|tx| pool.available(tx)), 4);
    /// ```
    pub fn new(permits: u64) -> TSemaphore {
        TSemaphore {
            permits: TVar::new(permits),
        }
    }

    /// Take `n` permits; retries (blocks) until `n` are available.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSemaphore};
    /// let pool = TSemaphore::new(1);
    /// atomically(|tx| pool.acquire(tx, 1));
    /// let other = pool.clone();
    /// std::thread::spawn(move || atomically(|tx| other.release(tx, 1)));
    /// atomically(|tx| pool.acquire(tx, 1)); // waits for the release
    /// assert_eq!(atomically(|tx| pool.available(tx)), 0);
    /// ```
    pub fn acquire(&self, tx: &mut Txn, n: u64) -> StmResult<()> {
        if self.try_acquire(tx, n)? {
            Ok(())
        } else {
            retry()
        }
    }

    /// Take `n` permits if they are available; whether it did.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSemaphore};
    /// let pool = TSemaphore::new(2);
    /// assert!(atomically(|tx| pool.try_acquire(tx, 2)));
    /// assert!(!atomically(|tx| pool.try_acquire(tx, 1))); // none left; nothing taken
    /// ```
    pub fn try_acquire(&self, tx: &mut Txn, n: u64) -> StmResult<bool> {
        let available = tx.read(&self.permits)?;
        if available < n {
            return Ok(false);
        }
        tx.write(&self.permits, available - n)?;
        Ok(true)
    }

    /// Give back `n` permits.
    ///
    /// # Panics
    ///
    /// If the count would overflow `u64` (more releases than any acquire could explain).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSemaphore};
    /// let pool = TSemaphore::new(0);
    /// atomically(|tx| pool.release(tx, 3));
    /// assert_eq!(atomically(|tx| pool.available(tx)), 3);
    /// ```
    #[track_caller]
    pub fn release(&self, tx: &mut Txn, n: u64) -> StmResult<()> {
        let available = tx.read(&self.permits)?;
        let after = available
            .checked_add(n)
            .expect("TSemaphore::release overflowed the permit count");
        tx.write(&self.permits, after)
    }

    /// Permits available now (in this transaction's view).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TSemaphore};
    /// let pool = TSemaphore::new(5);
    /// atomically(|tx| pool.acquire(tx, 2));
    /// assert_eq!(atomically(|tx| pool.available(tx)), 3);
    /// ```
    pub fn available(&self, tx: &mut Txn) -> StmResult<u64> {
        tx.read(&self.permits)
    }
}

impl Clone for TSemaphore {
    /// Another handle to the same semaphore.
    fn clone(&self) -> Self {
        TSemaphore {
            permits: self.permits.clone(),
        }
    }
}

impl std::fmt::Debug for TSemaphore {
    /// Shows the committed permit count (a plain load, fine inside a transaction too).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TSemaphore")
            .field("permits", &self.permits.load())
            .finish()
    }
}
