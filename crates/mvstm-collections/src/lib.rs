//! Transactional collections and coordination structures for mvstm.
//!
//! Every structure keeps its state in TVars and every operation takes the transaction, so they
//! compose with each other and with any other TVar work inside one `atomically`. They are built
//! on the public API of `mvstm-core` only. Each is designed so that independent users do not
//! conflict: the two ends of a queue touch different slot TVars, each bucket of a map (the root
//! of a persistent trie, so a snapshot shares it instead of copying) and each slot of an array
//! is its own TVar, the readers of a broadcast channel each hold their own
//! position, and a priority queue's pops and its pushes of smaller elements write different
//! chunks.
//!
//! ```
//! use mvstm::atomically;
//! use mvstm::collections::{TBQueue, TQueue};
//! let (jobs, done) = (TQueue::new(), TBQueue::new(8));
//! atomically(|tx| jobs.push(tx, 21));
//! // Move a job from one queue to the other atomically: never lost, never duplicated.
//! atomically(|tx| {
//!     let job = jobs.pop(tx)?;
//!     done.push(tx, job * 2)
//! });
//! assert_eq!(atomically(|tx| done.pop(tx)), 42);
//! ```

#![warn(missing_docs, unreachable_pub)]

mod array;
mod bqueue;
mod chan;
mod hamt;
mod locks;
mod map;
mod mvar;
mod pqueue;
mod queue;
mod ring;
mod semaphore;
mod set;
mod versioned;

/// The value, or `retry` while there is none: the blocking form of every `try_*` read here.
fn or_retry<T>(value: Option<T>) -> mvstm_core::StmResult<T> {
    match value {
        Some(value) => Ok(value),
        None => mvstm_core::retry(),
    }
}

pub use array::TArray;
pub use bqueue::{Full, TBQueue};
pub use chan::{TChan, TChanReader};
pub use locks::{LockGuard, LockTable, NotHeld, Wait};
pub use map::{TMap, TMapIter};
pub use mvar::TMVar;
pub use pqueue::TPriorityQueue;
pub use queue::TQueue;
pub use semaphore::TSemaphore;
pub use set::{TSet, TSetIter};
pub use versioned::{StaleVersion, Versioned};
