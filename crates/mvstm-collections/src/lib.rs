//! Transactional collections and coordination structures for mvstm.
//!
//! Every structure keeps its state in TVars and every operation takes the transaction, so they
//! compose with each other and with any other TVar work inside one `atomically`. They are built
//! on the public API of `mvstm-core` only. Each is designed so that independent users do not
//! conflict: the two ends of a queue touch different slot TVars, and each bucket of a map is
//! its own TVar.
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

mod bqueue;
mod locks;
mod map;
mod mvar;
mod queue;
mod ring;
mod semaphore;
mod versioned;

/// The value, or `retry` while there is none: the blocking form of every `try_*` read here.
fn or_retry<T>(value: Option<T>) -> mvstm_core::StmResult<T> {
    match value {
        Some(value) => Ok(value),
        None => mvstm_core::retry(),
    }
}

pub use bqueue::{Full, TBQueue};
pub use locks::{LockGuard, LockTable, NotHeld, Wait};
pub use map::TMap;
pub use mvar::TMVar;
pub use queue::TQueue;
pub use semaphore::TSemaphore;
pub use versioned::{StaleVersion, Versioned};
