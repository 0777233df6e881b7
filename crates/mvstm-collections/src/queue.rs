//! `TQueue`: an unbounded FIFO queue whose two ends live in different TVars.
//!
//! The items sit in a ring of slot TVars (`ring.rs`) that doubles when a push finds it full. A
//! producer and a consumer of a queue that is neither empty nor full touch disjoint TVars, so
//! they do not conflict.

use crate::ring::Ring;
use mvstm_core::{StmResult, Txn};

/// Slots of a new queue's ring.
const INITIAL_CAPACITY: usize = 16;

/// An unbounded transactional FIFO queue.
///
/// Every operation takes the transaction, so queue operations compose with any other TVar work
/// in one atomic step. A producer and a consumer of a non-empty queue do not conflict.
///
/// ```
/// use mvstm::atomically;
/// use mvstm::collections::TQueue;
/// let q = TQueue::new();
/// atomically(|tx| {
///     q.push(tx, 1)?;
///     q.push(tx, 2)
/// });
/// assert_eq!(atomically(|tx| q.pop(tx)), 1);
/// assert_eq!(atomically(|tx| q.try_pop(tx)), Some(2));
/// assert_eq!(atomically(|tx| q.try_pop(tx)), None);
/// ```
pub struct TQueue<T: Clone + Send + Sync + 'static> {
    ring: Ring<T>,
}

impl<T: Clone + Send + Sync + 'static> TQueue<T> {
    /// An empty queue.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TQueue};
    /// let q: TQueue<String> = TQueue::new();
    /// assert!(atomically(|tx| q.is_empty(tx)));
    /// ```
    pub fn new() -> TQueue<T> {
        TQueue {
            ring: Ring::new(INITIAL_CAPACITY, true),
        }
    }

    /// Append `value` at the back.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TQueue};
    /// let q = TQueue::new();
    /// atomically(|tx| q.push(tx, "a"));
    /// assert_eq!(atomically(|tx| q.len(tx)), 1);
    /// ```
    pub fn push(&self, tx: &mut Txn, value: T) -> StmResult<()> {
        match self.ring.try_push(tx, value)? {
            Ok(()) => Ok(()),
            Err(_) => unreachable!("a growable ring always takes the value"),
        }
    }

    /// Remove and return the front item; retries (blocks) while the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TQueue};
    /// let q = TQueue::new();
    /// let producer = q.clone();
    /// std::thread::spawn(move || atomically(|tx| producer.push(tx, 42)));
    /// assert_eq!(atomically(|tx| q.pop(tx)), 42); // waits for the producer
    /// ```
    pub fn pop(&self, tx: &mut Txn) -> StmResult<T> {
        self.ring.pop(tx)
    }

    /// Remove and return the front item, or `None` if the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TQueue};
    /// let q: TQueue<u8> = TQueue::new();
    /// assert_eq!(atomically(|tx| q.try_pop(tx)), None);
    /// ```
    pub fn try_pop(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        self.ring.try_pop(tx)
    }

    /// The front item without removing it; retries (blocks) while the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TQueue};
    /// let q = TQueue::new();
    /// atomically(|tx| q.push(tx, "a"));
    /// assert_eq!(atomically(|tx| q.peek(tx)), "a");
    /// assert_eq!(atomically(|tx| q.len(tx)), 1);
    /// ```
    pub fn peek(&self, tx: &mut Txn) -> StmResult<T> {
        self.ring.peek(tx)
    }

    /// The front item without removing it, or `None` if the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TQueue};
    /// let q = TQueue::new();
    /// assert_eq!(atomically(|tx| q.try_peek(tx)), None);
    /// atomically(|tx| q.push(tx, 5));
    /// assert_eq!(atomically(|tx| q.try_peek(tx)), Some(5));
    /// ```
    pub fn try_peek(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        self.ring.try_peek(tx)
    }

    /// Number of items. Reads both ends' counters, so it conflicts with pushes and pops.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TQueue};
    /// let q = TQueue::new();
    /// atomically(|tx| (0..20).try_for_each(|i| q.push(tx, i))); // grows past its first 16 slots
    /// assert_eq!(atomically(|tx| q.len(tx)), 20);
    /// ```
    pub fn len(&self, tx: &mut Txn) -> StmResult<usize> {
        self.ring.len(tx)
    }

    /// Whether the queue is empty. Reads only the consumer side, so a consumer can check it
    /// without conflicting with producers of a non-empty queue.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TQueue};
    /// let q = TQueue::new();
    /// assert!(atomically(|tx| q.is_empty(tx)));
    /// atomically(|tx| q.push(tx, 1));
    /// assert!(!atomically(|tx| q.is_empty(tx)));
    /// ```
    pub fn is_empty(&self, tx: &mut Txn) -> StmResult<bool> {
        self.ring.is_empty(tx)
    }

    /// Remove and return every item, front first (empty if the queue is empty; never retries).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TQueue};
    /// let q = TQueue::new();
    /// atomically(|tx| (1..=3).try_for_each(|i| q.push(tx, i)));
    /// assert_eq!(atomically(|tx| q.drain(tx)), vec![1, 2, 3]);
    /// ```
    pub fn drain(&self, tx: &mut Txn) -> StmResult<Vec<T>> {
        self.ring.drain(tx)
    }
}

impl<T: Clone + Send + Sync + 'static> Default for TQueue<T> {
    fn default() -> Self {
        TQueue::new()
    }
}

impl<T: Clone + Send + Sync + 'static> Clone for TQueue<T> {
    /// Another handle to the same queue.
    fn clone(&self) -> Self {
        TQueue {
            ring: self.ring.clone(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> std::fmt::Debug for TQueue<T> {
    /// Shows no items: reading them takes a transaction, and `Debug` may run inside one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TQueue").finish_non_exhaustive()
    }
}
