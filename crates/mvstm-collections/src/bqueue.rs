//! `TBQueue`: a bounded FIFO queue.
//!
//! The items sit in a ring of exactly `capacity` slot TVars (`ring.rs`). A push fills the slot
//! under the producer's index and a pop empties the slot under the consumer's, so producers and
//! consumers of a queue that is neither empty nor full touch disjoint TVars; a push finds the
//! ring full by the slot under its index still being full, without reading the consumer side
//! (the role of GHC's split capacity counters).
//!
//! Capacity 0 is refused with a panic at construction: a transactional rendezvous would need the
//! producer to wait for a consumer after its own commit, which no single transaction can express.
//! A [`TMVar`](crate::TMVar) is the one-slot handoff.

use crate::ring::Ring;
use mvstm_core::{retry, StmResult, Txn};
use std::fmt;

/// A bounded transactional FIFO queue: `push` retries (blocks) while it is full.
///
/// ```
/// use mvstm::atomically;
/// use mvstm::collections::{Full, TBQueue};
/// let q = TBQueue::new(2);
/// atomically(|tx| q.push(tx, 'a'));
/// atomically(|tx| q.push(tx, 'b'));
/// // Full: `try_push` gives the value back.
/// assert_eq!(atomically(|tx| q.try_push(tx, 'c')), Err(Full('c')));
/// assert_eq!(atomically(|tx| q.pop(tx)), 'a');
/// assert_eq!(atomically(|tx| q.try_push(tx, 'c')), Ok(()));
/// ```
pub struct TBQueue<T: Clone + Send + Sync + 'static> {
    ring: Ring<T>,
    capacity: usize,
}

/// The value a `try_push` on a full queue could not take, given back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Full<T>(pub T);

impl<T> Full<T> {
    /// The value that was not pushed.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TBQueue};
    /// let q = TBQueue::new(1);
    /// atomically(|tx| q.push(tx, "first"));
    /// let refused = atomically(|tx| q.try_push(tx, "second")).unwrap_err();
    /// assert_eq!(refused.into_inner(), "second");
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the queue is full")
    }
}

impl<T> std::error::Error for Full<T> {}

impl<T: Clone + Send + Sync + 'static> TBQueue<T> {
    /// An empty queue that holds at most `capacity` items.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (see the module docs; use a `TMVar` for a one-slot handoff).
    ///
    /// ```
    /// use mvstm::collections::TBQueue;
    /// let q: TBQueue<u32> = TBQueue::new(64);
    /// assert_eq!(q.capacity(), 64);
    /// ```
    #[track_caller]
    pub fn new(capacity: usize) -> TBQueue<T> {
        assert!(
            capacity > 0,
            "a TBQueue needs a capacity of at least 1; for a one-slot handoff use a TMVar"
        );
        TBQueue {
            ring: Ring::new(capacity, false),
            capacity,
        }
    }

    /// The most items the queue holds.
    ///
    /// ```
    /// use mvstm::collections::TBQueue;
    /// let q: TBQueue<String> = TBQueue::new(8);
    /// assert_eq!(q.capacity(), 8);
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Append `value` at the back; retries (blocks) while the queue is full.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TBQueue};
    /// let q = TBQueue::new(2);
    /// atomically(|tx| q.push(tx, 1));
    /// atomically(|tx| q.push(tx, 2)); // a third push would block until a pop makes room
    /// assert!(atomically(|tx| q.is_full(tx)));
    /// ```
    pub fn push(&self, tx: &mut Txn, value: T) -> StmResult<()> {
        match self.try_push(tx, value)? {
            Ok(()) => Ok(()),
            Err(Full(_)) => retry(),
        }
    }

    /// Append `value` at the back, or give it back in `Err(Full(value))` if the queue is full.
    ///
    /// ```
    /// use mvstm::{atomically, collections::{Full, TBQueue}};
    /// let q = TBQueue::new(1);
    /// assert_eq!(atomically(|tx| q.try_push(tx, 'a')), Ok(()));
    /// assert_eq!(atomically(|tx| q.try_push(tx, 'b')), Err(Full('b')));
    /// ```
    pub fn try_push(&self, tx: &mut Txn, value: T) -> StmResult<Result<(), Full<T>>> {
        Ok(self.ring.try_push(tx, value)?.map_err(Full))
    }

    /// Remove and return the front item; retries (blocks) while the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TBQueue};
    /// let q = TBQueue::new(4);
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
    /// use mvstm::{atomically, collections::TBQueue};
    /// let q = TBQueue::new(4);
    /// assert_eq!(atomically(|tx| q.try_pop(tx)), None);
    /// atomically(|tx| q.push(tx, 7));
    /// assert_eq!(atomically(|tx| q.try_pop(tx)), Some(7));
    /// ```
    pub fn try_pop(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        self.ring.try_pop(tx)
    }

    /// The front item without removing it; retries (blocks) while the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TBQueue};
    /// let q = TBQueue::new(4);
    /// atomically(|tx| q.push(tx, "job"));
    /// assert_eq!(atomically(|tx| q.peek(tx)), "job");
    /// assert_eq!(atomically(|tx| q.len(tx)), 1); // still there
    /// ```
    pub fn peek(&self, tx: &mut Txn) -> StmResult<T> {
        self.ring.peek(tx)
    }

    /// The front item without removing it, or `None` if the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TBQueue};
    /// let q: TBQueue<u8> = TBQueue::new(4);
    /// assert_eq!(atomically(|tx| q.try_peek(tx)), None);
    /// atomically(|tx| q.push(tx, 3));
    /// assert_eq!(atomically(|tx| q.try_peek(tx)), Some(3));
    /// ```
    pub fn try_peek(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        self.ring.try_peek(tx)
    }

    /// Number of items (reads both ends, so it conflicts with pushes and pops).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TBQueue};
    /// let q = TBQueue::new(4);
    /// atomically(|tx| (0..3).try_for_each(|i| q.push(tx, i)));
    /// assert_eq!(atomically(|tx| q.len(tx)), 3);
    /// ```
    pub fn len(&self, tx: &mut Txn) -> StmResult<usize> {
        self.ring.len(tx)
    }

    /// Whether the queue is empty (reads the consumer side only).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TBQueue};
    /// let q = TBQueue::new(4);
    /// assert!(atomically(|tx| q.is_empty(tx)));
    /// atomically(|tx| q.push(tx, ()));
    /// assert!(!atomically(|tx| q.is_empty(tx)));
    /// ```
    pub fn is_empty(&self, tx: &mut Txn) -> StmResult<bool> {
        self.ring.is_empty(tx)
    }

    /// Whether the queue holds `capacity` items (reads the producer side only).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TBQueue};
    /// let q = TBQueue::new(1);
    /// assert!(!atomically(|tx| q.is_full(tx)));
    /// atomically(|tx| q.push(tx, 1));
    /// assert!(atomically(|tx| q.is_full(tx)));
    /// ```
    pub fn is_full(&self, tx: &mut Txn) -> StmResult<bool> {
        self.ring.is_full(tx)
    }

    /// Remove and return every item, front first (never retries).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TBQueue};
    /// let q = TBQueue::new(4);
    /// atomically(|tx| (1..=3).try_for_each(|i| q.push(tx, i)));
    /// assert_eq!(atomically(|tx| q.drain(tx)), vec![1, 2, 3]);
    /// assert!(atomically(|tx| q.is_empty(tx)));
    /// ```
    pub fn drain(&self, tx: &mut Txn) -> StmResult<Vec<T>> {
        self.ring.drain(tx)
    }
}

impl<T: Clone + Send + Sync + 'static> Clone for TBQueue<T> {
    /// Another handle to the same queue.
    fn clone(&self) -> Self {
        TBQueue {
            ring: self.ring.clone(),
            capacity: self.capacity,
        }
    }
}

impl<T: Clone + Send + Sync + 'static> fmt::Debug for TBQueue<T> {
    /// Shows the capacity only: reading the items takes a transaction, and `Debug` may run
    /// inside one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TBQueue")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}
