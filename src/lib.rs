//! mvstm: a multi-version software transactional memory for Rust, with side effects that are
//! safe inside transactions.
//!
//! This facade re-exports the engine, [`mvstm-core`](mvstm_core). Start with [`atomically`]
//! and [`TVar`]; the repository's `README.md` has a tour and `docs/` the design.
//!
//! ```
//! use mvstm::{atomically, retry, TVar};
//! let account = TVar::new(100i64);
//! let paid = atomically(|tx| {
//!     let balance = tx.read(&account)?;
//!     if balance < 30 {
//!         return retry();
//!     }
//!     tx.write(&account, balance - 30)?;
//!     Ok(30)
//! });
//! assert_eq!((paid, account.load()), (30, 70));
//! ```

#![warn(missing_docs, unreachable_pub)]

pub use mvstm_core::{
    atomically, retry, try_atomically, AbortCause, AnyTVar, StmError, StmResult, TVar, Txn,
};

/// Transactional collections and coordination: queues, map, `TMVar`, semaphore, lock table,
/// versioned records (the `mvstm-collections` crate).
pub use mvstm_collections as collections;

/// Service lifecycles started and stopped from concurrent requests, a registry with
/// dependencies, and a command queue (the `mvstm-lifecycle` crate).
pub use mvstm_lifecycle as lifecycle;

/// Durable records, a command queue and leased locks shared by processes, on SQLite or
/// PostgreSQL, and STM transactions committed with a database transaction (the
/// `mvstm-durable` crate; cargo feature `durable`).
#[cfg(feature = "durable")]
pub use mvstm_durable as durable;

/// The README's examples, compiled and run as doctests so they cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The Rust code in `docs/lifecycle.md`, compiled and run as doctests.
#[doc = include_str!("../docs/lifecycle.md")]
#[cfg(doctest)]
pub struct LifecycleDocDoctests;
