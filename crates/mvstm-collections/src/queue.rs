//! `TQueue`: an unbounded FIFO queue whose two ends live in different TVars.
//!
//! The queue is a linked list of TVar cells, like GHC's `TChan`: `read` points at the oldest
//! cell, `write` at the *hole*, an empty cell at the end. A push fills the hole and links a new
//! one; a pop takes the oldest full cell and moves `read` along. When the queue is not empty the
//! two ends touch disjoint TVars (the consumer never reads the hole, the producer never reads
//! `read` or a full cell), so a producer and a consumer do not conflict. The length is kept in
//! two counters, one per end, for the same reason.

use mvstm_core::{retry, StmResult, TVar, Txn};

/// A cell of the list: the hole at the end, or an item and the link to the next cell.
#[derive(Clone)]
enum Node<T> {
    Hole,
    Item(T, TVar<Node<T>>),
}

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
    /// The oldest cell (the hole when empty). Consumer side.
    read: TVar<TVar<Node<T>>>,
    /// The hole at the end. Producer side.
    write: TVar<TVar<Node<T>>>,
    /// Items ever pushed (producer side) and popped (consumer side).
    pushed: TVar<u64>,
    popped: TVar<u64>,
}

impl<T: Clone + Send + Sync + 'static> TQueue<T> {
    /// An empty queue.
    pub fn new() -> TQueue<T> {
        let hole = TVar::new(Node::Hole);
        TQueue {
            read: TVar::new(hole.clone()),
            write: TVar::new(hole),
            pushed: TVar::new(0),
            popped: TVar::new(0),
        }
    }

    /// Append `value` at the back.
    pub fn push(&self, tx: &mut Txn, value: T) -> StmResult<()> {
        let hole = tx.read(&self.write)?;
        let next = TVar::new(Node::Hole);
        tx.write(&hole, Node::Item(value, next.clone()))?;
        tx.write(&self.write, next)?;
        tx.modify(&self.pushed, |n| n + 1)
    }

    /// Remove and return the front item; retries (blocks) while the queue is empty.
    pub fn pop(&self, tx: &mut Txn) -> StmResult<T> {
        match self.try_pop(tx)? {
            Some(value) => Ok(value),
            None => retry(),
        }
    }

    /// Remove and return the front item, or `None` if the queue is empty.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TQueue};
    /// let q: TQueue<u8> = TQueue::new();
    /// assert_eq!(atomically(|tx| q.try_pop(tx)), None);
    /// ```
    pub fn try_pop(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        let front = tx.read(&self.read)?;
        match tx.read(&front)? {
            Node::Hole => Ok(None),
            Node::Item(value, next) => {
                tx.write(&self.read, next)?;
                tx.modify(&self.popped, |n| n + 1)?;
                Ok(Some(value))
            }
        }
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
        match self.try_peek(tx)? {
            Some(value) => Ok(value),
            None => retry(),
        }
    }

    /// The front item without removing it, or `None` if the queue is empty.
    pub fn try_peek(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        let front = tx.read(&self.read)?;
        match tx.read(&front)? {
            Node::Hole => Ok(None),
            Node::Item(value, _) => Ok(Some(value)),
        }
    }

    /// Number of items. Reads both ends' counters, so it conflicts with pushes and pops.
    pub fn len(&self, tx: &mut Txn) -> StmResult<usize> {
        let pushed = tx.read(&self.pushed)?;
        let popped = tx.read(&self.popped)?;
        Ok((pushed - popped) as usize)
    }

    /// Whether the queue is empty. Reads only the front cell, so a consumer can check it
    /// without conflicting with producers of a non-empty queue.
    pub fn is_empty(&self, tx: &mut Txn) -> StmResult<bool> {
        let front = tx.read(&self.read)?;
        Ok(matches!(tx.read(&front)?, Node::Hole))
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
        let mut items = Vec::new();
        while let Some(value) = self.try_pop(tx)? {
            items.push(value);
        }
        Ok(items)
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
            read: self.read.clone(),
            write: self.write.clone(),
            pushed: self.pushed.clone(),
            popped: self.popped.clone(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> std::fmt::Debug for TQueue<T> {
    /// Shows no items: reading them takes a transaction, and `Debug` may run inside one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TQueue").finish_non_exhaustive()
    }
}
