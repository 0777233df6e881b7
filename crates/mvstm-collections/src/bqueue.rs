//! `TBQueue`: a bounded FIFO queue.
//!
//! The items live in a [`TQueue`]; the capacity is tracked as in GHC's `TBQueue`, with one
//! counter per end. The producer side counts the room it knows of (`room`) and takes one for
//! each push; the consumer side counts the slots it freed (`freed`). Only when `room` runs out
//! does a producer read `freed` and move it over, so producers and consumers of a queue that is
//! neither empty nor full touch disjoint TVars and do not conflict.
//!
//! Capacity 0 is refused with a panic at construction: a transactional rendezvous would need the
//! producer to wait for a consumer after its own commit, which no single transaction can express.
//! A [`TMVar`](crate::TMVar) is the one-slot handoff.

use crate::TQueue;
use mvstm_core::{retry, StmResult, TVar, Txn};
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
    items: TQueue<T>,
    /// Free slots known to the producer side.
    room: TVar<usize>,
    /// Slots freed by the consumer side since the producers last collected them.
    freed: TVar<usize>,
    capacity: usize,
}

/// The value a `try_push` on a full queue could not take, given back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Full<T>(pub T);

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
    pub fn new(capacity: usize) -> TBQueue<T> {
        assert!(
            capacity > 0,
            "a TBQueue needs a capacity of at least 1; for a one-slot handoff use a TMVar"
        );
        TBQueue {
            items: TQueue::new(),
            room: TVar::new(capacity),
            freed: TVar::new(0),
            capacity,
        }
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Append `value` at the back; retries (blocks) while the queue is full.
    pub fn push(&self, tx: &mut Txn, value: T) -> StmResult<()> {
        match self.try_push(tx, value)? {
            Ok(()) => Ok(()),
            Err(Full(_)) => retry(),
        }
    }

    /// Append `value` at the back, or give it back in `Err(Full(value))` if the queue is full.
    pub fn try_push(&self, tx: &mut Txn, value: T) -> StmResult<Result<(), Full<T>>> {
        let room = tx.read(&self.room)?;
        if room > 0 {
            tx.write(&self.room, room - 1)?;
        } else {
            // Out of known room: collect what consumers freed (the one place the ends meet).
            let freed = tx.read(&self.freed)?;
            if freed == 0 {
                return Ok(Err(Full(value)));
            }
            tx.write(&self.freed, 0)?;
            tx.write(&self.room, freed - 1)?;
        }
        self.items.push(tx, value)?;
        Ok(Ok(()))
    }

    /// Remove and return the front item; retries (blocks) while the queue is empty.
    pub fn pop(&self, tx: &mut Txn) -> StmResult<T> {
        let value = self.items.pop(tx)?;
        tx.modify(&self.freed, |n| n + 1)?;
        Ok(value)
    }

    /// Remove and return the front item, or `None` if the queue is empty.
    pub fn try_pop(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        let value = self.items.try_pop(tx)?;
        if value.is_some() {
            tx.modify(&self.freed, |n| n + 1)?;
        }
        Ok(value)
    }

    /// The front item without removing it; retries (blocks) while the queue is empty.
    pub fn peek(&self, tx: &mut Txn) -> StmResult<T> {
        self.items.peek(tx)
    }

    /// The front item without removing it, or `None` if the queue is empty.
    pub fn try_peek(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        self.items.try_peek(tx)
    }

    /// Number of items (conflicts with pushes and pops, like [`TQueue::len`]).
    pub fn len(&self, tx: &mut Txn) -> StmResult<usize> {
        self.items.len(tx)
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self, tx: &mut Txn) -> StmResult<bool> {
        self.items.is_empty(tx)
    }

    /// Whether the queue holds `capacity` items.
    pub fn is_full(&self, tx: &mut Txn) -> StmResult<bool> {
        Ok(tx.read(&self.room)? == 0 && tx.read(&self.freed)? == 0)
    }

    /// Remove and return every item, front first (never retries).
    pub fn drain(&self, tx: &mut Txn) -> StmResult<Vec<T>> {
        let items = self.items.drain(tx)?;
        if !items.is_empty() {
            tx.modify(&self.freed, |n| n + items.len())?;
        }
        Ok(items)
    }
}

impl<T: Clone + Send + Sync + 'static> Clone for TBQueue<T> {
    /// Another handle to the same queue.
    fn clone(&self) -> Self {
        TBQueue {
            items: self.items.clone(),
            room: self.room.clone(),
            freed: self.freed.clone(),
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
