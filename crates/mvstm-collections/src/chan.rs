//! `TChan`: a broadcast channel (GHC's broadcast `TChan` with `dupTChan` and `cloneTChan`).
//!
//! # Design
//!
//! The messages form a singly linked list of nodes. Each node has a *hole*, a TVar that is
//! empty until a send fills it (once), and a link to the next node:
//!
//! ```text
//!  reader A ──► pos ─┐         reader B ──► pos ─┐          TChan ──► tail ─┐
//!                    ▼                           ▼                          ▼
//!               [ m1 | ● ]──────────► [ m2 | ● ]──────► [ m3 | ● ]──► [ empty | ● ]──► [ empty | ∅ ]
//! ```
//!
//! The write end holds only its `tail` (the first empty hole); each reader holds only its own
//! position. A send fills the hole under `tail` and moves `tail` one node on; a receive reads the
//! hole under its position and, if it is filled, moves its position one node on. So:
//!
//! - readers never conflict with each other (each writes only its own position), and a reader
//!   that is behind reads only filled holes, which no one writes again, so it does not conflict
//!   with senders either; a reader that is caught up waits (`retry`) on the empty hole that the
//!   next send fills;
//! - senders conflict with each other on `tail`, as in GHC;
//! - a message nobody's position can reach any more is unreachable and freed.
//!
//! # Why the links are not TVars
//!
//! In GHC the link to the next node is the TVar itself. Here a TVar is freed one reclamation
//! round after its last handle goes, and a TVar whose value holds the next TVar's handle releases
//! it only when it is itself freed: a run of passed nodes would then be freed one link per round,
//! slower than a steady sender makes them (the lesson `docs/collections.md` records for queues).
//! So the link is a plain `Arc` in a [`OnceLock`], and only the message sits in a TVar: dropping a
//! passed node frees the whole run of passed nodes behind it at once, and each message's TVar is
//! freed one round later, independently of the others.
//!
//! A link is created by whoever first needs it (the send that moves `tail` onto it, or a reader
//! that moves onto it) with `get_or_init`, outside the transactional log. That is sound because a
//! new node is empty: creating it has no visible effect, so an attempt that creates it and then
//! aborts leaves behind exactly the node the next attempt would create.

use mvstm_core::{StmResult, TVar, Txn};
use std::sync::{Arc, OnceLock};

/// One message slot of the list (see the module documentation).
struct Node<T: Clone + Send + Sync + 'static> {
    /// `None` until a send fills it; filled at most once.
    hole: TVar<Option<T>>,
    /// The next node, created on first use.
    next: OnceLock<Arc<Node<T>>>,
}

impl<T: Clone + Send + Sync + 'static> Node<T> {
    fn empty() -> Arc<Node<T>> {
        Arc::new(Node {
            hole: TVar::new(None),
            next: OnceLock::new(),
        })
    }

    fn next(&self) -> Arc<Node<T>> {
        Arc::clone(self.next.get_or_init(Node::empty))
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for Node<T> {
    /// Frees a run of passed nodes in a loop rather than by recursion, so that a reader dropped
    /// far behind (a list of a million nodes only it could reach) does not overflow the stack.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(node) = next {
            match Arc::try_unwrap(node) {
                // We held the last reference: unlink its successor before it drops.
                Ok(mut node) => next = node.next.take(),
                // Someone else still holds it (and so everything after it).
                Err(_) => break,
            }
        }
    }
}

/// A broadcast channel: every subscriber sees every message sent after it subscribed, in order.
///
/// `TChan` is the write end; [`TChan::subscribe`] makes a [`TChanReader`]. A reader that is
/// behind does not conflict with senders, readers never conflict with each other, and a message
/// is freed once every reader has passed it (a dropped reader holds nothing back). Messages sent
/// while there is no reader are dropped (as with GHC's `newBroadcastTChan`).
///
/// ```
/// use mvstm::atomically;
/// use mvstm::collections::TChan;
/// let chan: TChan<u32> = TChan::new();
/// let (r1, r2) = (chan.subscribe(), chan.subscribe());
/// atomically(|tx| chan.send(tx, 1));
/// assert_eq!(atomically(|tx| r1.recv(tx)), 1); // recv retries while nothing is new
/// assert_eq!(atomically(|tx| r2.recv(tx)), 1);
/// let r3 = r1.clone(); // cloneTChan: same position, independent afterwards
/// atomically(|tx| chan.send(tx, 2));
/// assert_eq!(atomically(|tx| r3.recv(tx)), 2);
/// assert_eq!(atomically(|tx| r1.recv(tx)), 2);
/// ```
pub struct TChan<T: Clone + Send + Sync + 'static> {
    /// The first empty hole: where the next send goes.
    tail: TVar<Arc<Node<T>>>,
}

impl<T: Clone + Send + Sync + 'static> TChan<T> {
    /// A channel with no messages and no readers.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TChan};
    /// let chan: TChan<String> = TChan::new();
    /// atomically(|tx| chan.send(tx, "nobody listens".to_string())); // dropped: no reader
    /// let r = chan.subscribe();
    /// assert_eq!(atomically(|tx| r.try_recv(tx)), None);
    /// ```
    pub fn new() -> TChan<T> {
        TChan {
            tail: TVar::new(Node::empty()),
        }
    }

    /// Send `value` to every current reader.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TChan};
    /// let chan = TChan::new();
    /// let r = chan.subscribe();
    /// atomically(|tx| {
    ///     chan.send(tx, 'a')?;
    ///     chan.send(tx, 'b')
    /// });
    /// assert_eq!(atomically(|tx| r.recv(tx)), 'a');
    /// assert_eq!(atomically(|tx| r.recv(tx)), 'b');
    /// ```
    pub fn send(&self, tx: &mut Txn, value: T) -> StmResult<()> {
        let node = tx.read(&self.tail)?;
        tx.write(&node.hole, Some(value))?;
        tx.write(&self.tail, node.next())
    }

    /// A new reader that sees every message committed after this call (GHC's `dupTChan`, taken
    /// outside a transaction: its position is the channel's newest committed tail).
    ///
    /// ```
    /// use mvstm::{atomically, collections::TChan};
    /// let chan = TChan::new();
    /// atomically(|tx| chan.send(tx, 1));
    /// let late = chan.subscribe(); // does not see 1
    /// atomically(|tx| chan.send(tx, 2));
    /// assert_eq!(atomically(|tx| late.recv(tx)), 2);
    /// ```
    pub fn subscribe(&self) -> TChanReader<T> {
        TChanReader {
            pos: TVar::new(self.tail.load()),
        }
    }

    /// A new reader, inside a transaction (GHC's `dupTChan`): it sees every message sent after
    /// this point of the transaction, its own later sends included. If the transaction does not
    /// commit, the reader it returned must not be used.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TChan};
    /// let chan = TChan::new();
    /// let r = atomically(|tx| {
    ///     chan.send(tx, 1)?; // before the reader: not seen
    ///     let r = chan.subscribe_in(tx)?;
    ///     chan.send(tx, 2)?;
    ///     Ok(r)
    /// });
    /// assert_eq!(atomically(|tx| r.recv(tx)), 2);
    /// ```
    pub fn subscribe_in(&self, tx: &mut Txn) -> StmResult<TChanReader<T>> {
        Ok(TChanReader {
            pos: TVar::new(tx.read(&self.tail)?),
        })
    }
}

impl<T: Clone + Send + Sync + 'static> Default for TChan<T> {
    fn default() -> Self {
        TChan::new()
    }
}

impl<T: Clone + Send + Sync + 'static> Clone for TChan<T> {
    /// Another handle to the same write end.
    fn clone(&self) -> Self {
        TChan {
            tail: self.tail.clone(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> std::fmt::Debug for TChan<T> {
    /// Shows no messages: reading them takes a transaction, and `Debug` may run inside one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TChan").finish_non_exhaustive()
    }
}

/// A reader of a [`TChan`], from [`TChan::subscribe`]: it holds its own position in the channel.
///
/// `Clone` gives a reader at the same position that moves on independently afterwards (GHC's
/// `cloneTChan`). Dropping a reader releases every message only it still needed.
///
/// ```
/// use mvstm::{atomically, collections::TChan};
/// let chan = TChan::new();
/// let reader = chan.subscribe();
/// let worker = std::thread::spawn(move || atomically(|tx| reader.recv(tx))); // Send + 'static
/// atomically(|tx| chan.send(tx, 5));
/// assert_eq!(worker.join().unwrap(), 5);
/// ```
pub struct TChanReader<T: Clone + Send + Sync + 'static> {
    /// The node whose hole holds the next message for this reader (empty while there is none).
    pos: TVar<Arc<Node<T>>>,
}

impl<T: Clone + Send + Sync + 'static> TChanReader<T> {
    /// The next message; retries (blocks) while there is nothing new.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TChan};
    /// let chan = TChan::new();
    /// let r = chan.subscribe();
    /// let sender = chan.clone();
    /// std::thread::spawn(move || atomically(|tx| sender.send(tx, "hi")));
    /// assert_eq!(atomically(|tx| r.recv(tx)), "hi"); // waits for the sender
    /// ```
    pub fn recv(&self, tx: &mut Txn) -> StmResult<T> {
        crate::or_retry(self.try_recv(tx)?)
    }

    /// The next message, or `None` if there is nothing new.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TChan};
    /// let chan = TChan::new();
    /// let r = chan.subscribe();
    /// assert_eq!(atomically(|tx| r.try_recv(tx)), None);
    /// atomically(|tx| chan.send(tx, 3));
    /// assert_eq!(atomically(|tx| r.try_recv(tx)), Some(3));
    /// ```
    pub fn try_recv(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        let node = tx.read(&self.pos)?;
        let Some(value) = tx.read(&node.hole)? else {
            return Ok(None);
        };
        tx.write(&self.pos, node.next())?;
        Ok(Some(value))
    }

    /// The next message without consuming it; retries (blocks) while there is nothing new.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TChan};
    /// let chan = TChan::new();
    /// let r = chan.subscribe();
    /// atomically(|tx| chan.send(tx, 8));
    /// assert_eq!(atomically(|tx| r.peek(tx)), 8);
    /// assert_eq!(atomically(|tx| r.recv(tx)), 8); // still there
    /// ```
    pub fn peek(&self, tx: &mut Txn) -> StmResult<T> {
        crate::or_retry(self.try_peek(tx)?)
    }

    /// The next message without consuming it, or `None` if there is nothing new.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TChan};
    /// let chan = TChan::new();
    /// let r = chan.subscribe();
    /// assert_eq!(atomically(|tx| r.try_peek(tx)), None);
    /// atomically(|tx| chan.send(tx, 1));
    /// assert_eq!(atomically(|tx| r.try_peek(tx)), Some(1));
    /// ```
    pub fn try_peek(&self, tx: &mut Txn) -> StmResult<Option<T>> {
        let node = tx.read(&self.pos)?;
        tx.read(&node.hole)
    }

    /// Whether there is nothing new for this reader.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TChan};
    /// let chan = TChan::new();
    /// let r = chan.subscribe();
    /// assert!(atomically(|tx| r.is_empty(tx)));
    /// atomically(|tx| chan.send(tx, ()));
    /// assert!(!atomically(|tx| r.is_empty(tx)));
    /// ```
    pub fn is_empty(&self, tx: &mut Txn) -> StmResult<bool> {
        let node = tx.read(&self.pos)?;
        tx.read_with(&node.hole, Option::is_none)
    }

    /// A reader at this reader's position as seen by the transaction (GHC's `cloneTChan` inside
    /// a transaction; [`Clone`] does the same from the newest committed position). If the
    /// transaction does not commit, the reader it returned must not be used.
    ///
    /// ```
    /// use mvstm::{atomically, collections::TChan};
    /// let chan = TChan::new();
    /// let r = chan.subscribe();
    /// atomically(|tx| (1..=2).try_for_each(|i| chan.send(tx, i)));
    /// let (first, copy) = atomically(|tx| {
    ///     let first = r.recv(tx)?;
    ///     Ok((first, r.clone_in(tx)?)) // positioned after `first`
    /// });
    /// assert_eq!(first, 1);
    /// assert_eq!(atomically(|tx| copy.recv(tx)), 2);
    /// assert_eq!(atomically(|tx| r.recv(tx)), 2);
    /// ```
    pub fn clone_in(&self, tx: &mut Txn) -> StmResult<TChanReader<T>> {
        Ok(TChanReader {
            pos: TVar::new(tx.read(&self.pos)?),
        })
    }
}

impl<T: Clone + Send + Sync + 'static> Clone for TChanReader<T> {
    /// A reader at this reader's newest committed position that moves on independently
    /// afterwards (GHC's `cloneTChan`).
    fn clone(&self) -> Self {
        TChanReader {
            pos: TVar::new(self.pos.load()),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> std::fmt::Debug for TChanReader<T> {
    /// Shows no messages: reading them takes a transaction, and `Debug` may run inside one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TChanReader").finish_non_exhaustive()
    }
}
