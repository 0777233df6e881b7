//! The engine of mvstm: a multi-version software transactional memory with commit hooks.
//!
//! # What it does
//!
//! Shared state lives in [`TVar`]s. [`atomically`] runs a closure as a transaction: every
//! attempt sees one consistent snapshot (opacity), update transactions are serializable, and
//! [`retry`] blocks until something the transaction read changes. Side effects attach to the
//! transaction through hooks that run on abort, at the commit point, or after the commit.
//!
//! # How
//!
//! * Each `TVar` holds a chain of immutable versions stamped by a global clock (`tvar.rs`,
//!   `clock.rs`). A read is an atomic pointer load plus a clone: no racy reads.
//! * Read-only transactions read the newest version not newer than their snapshot; they take no
//!   lock, never abort and never wait for a writer.
//! * Update transactions buffer writes (`log.rs`), lock their write set in address order,
//!   validate their reads and publish with a new stamp (`commit.rs`, `lock.rs`).
//! * Old versions are trimmed once no snapshot can read them and freed with crossbeam-epoch
//!   (`reclaim.rs`).
//! * `retry` parks the thread until a variable it read is committed again (`parking.rs`);
//!   [`atomically_async`] registers the task's waker instead and returns `Pending`
//!   (`future.rs`), with one shared timer thread for deadlines (`timer.rs`).
//! * Conflicts back off and escalate to a priority token, so long transactions finish
//!   (`contention.rs`).
//!
//! `docs/architecture.md` in the repository walks through each step with its invariants.
//!
//! ```
//! use mvstm::{atomically, TVar};
//! let counter = TVar::new(0u64);
//! atomically(|tx| tx.modify(&counter, |n| n + 1));
//! assert_eq!(counter.load(), 1);
//! ```

#![warn(missing_docs, unreachable_pub, clippy::undocumented_unsafe_blocks)]

mod alloc;
mod clock;
mod commit;
mod contention;
mod error;
mod future;
mod hooks;
mod lock;
mod log;
mod parking;
mod reclaim;
mod runtime;
pub mod stats;
mod sync;
mod timer;
mod tvar;
mod txn;
mod version;
mod view;

#[cfg(loom)]
#[doc(hidden)]
pub use clock::loom_floor_counts;
pub use error::{retry, AbortCause, OrAbort, StmError, StmResult, TimedOut};
pub use future::{atomically_async, atomically_timeout_async, try_atomically_async};
#[cfg(loom)]
#[doc(hidden)]
pub use runtime::loom_release_thread;
pub use runtime::{atomically, atomically_timeout, try_atomically};
pub use stats::stats;
pub use tvar::TVar;
pub use txn::{AnyTVar, Txn};

/// How many waiters, blocked threads and waiting tasks, are registered on `var` right now (for
/// tests of cancel safety: a dropped future must leave none).
///
/// ```
/// let v = mvstm::TVar::new(0);
/// assert_eq!(mvstm_core::waiters_on(&v), 0);
/// ```
#[doc(hidden)]
pub fn waiters_on<T: Clone + Send + Sync + 'static>(var: &TVar<T>) -> usize {
    // SAFETY: the borrowed handle keeps the header live.
    parking::waiters_on(unsafe { var.header().as_ref() })
}
