//! A multi-version software transactional memory for Rust, with side effects that are safe
//! inside transactions.
//!
//! You put shared state in [`TVar`]s and change it inside [`atomically`]. Transactions compose,
//! block with [`retry`] until the state they need shows up, choose between alternatives with
//! [`Txn::or_else`], contain the failure of a part with [`Txn::nested`], and attach side effects
//! through hooks that run exactly when they should: on every abandoned attempt, at the commit
//! point, or once the commit is visible. The engine is **multi-version**: a read-only
//! transaction reads a consistent snapshot, never aborts and never waits for a writer, however
//! long it runs; update transactions are serializable, and every attempt sees a consistent state
//! (opacity), so a doomed attempt cannot panic or loop on a torn view.
//!
//! - The engine: [`TVar`], [`atomically`], [`try_atomically`], [`retry`] and the operations on
//!   [`Txn`] (this page).
//! - [`collections`]: `TQueue`, `TBQueue`, `TMap`, `TSet`, `TArray`, `TChan` (broadcast),
//!   `TPriorityQueue`, `TMVar`, `TSemaphore`, `LockTable` and `Versioned` records, composable
//!   inside one transaction.
//! - [`lifecycle`]: services started and stopped from concurrent requests (`Lifecycle`), a
//!   `Registry` with dependencies, and a `CommandQueue`; with async faces (`AsyncLifecycle`,
//!   the `*_async` calls) for code on an executor.
//! - [`stats()`] and [`stats`](mod@stats): counters of commits, re-runs by cause and time
//!   blocked, and the TVars that conflict most.
//!
//! Cargo features: `collections`, `lifecycle` and `async` (on by default; `async` adds the
//! lifecycle's async faces), `serde` and `tracing` (for the lifecycle), `durable`; with
//! `default-features = false` only the engine is built, `atomically_async` included.
//!
//! # A short tour
//!
//! ```
//! use mvstm::{atomically, retry, try_atomically, StmResult, TVar, Txn};
//!
//! let alice = TVar::new(100i64); // a cheap Clone handle, Send + Sync
//! let bob = TVar::new(0i64);
//!
//! // Helpers compose by taking the transaction.
//! fn transfer(tx: &mut Txn, from: &TVar<i64>, to: &TVar<i64>, n: i64) -> StmResult<()> {
//!     let balance = tx.read(from)?;
//!     if balance < n {
//!         return retry(); // park until `from` changes, then run again
//!     }
//!     tx.write(from, balance - n)?;
//!     tx.modify(to, |b| b + n)
//! }
//!
//! atomically(|tx| transfer(tx, &alice, &bob, 30));
//! assert_eq!((alice.load(), bob.load()), (70, 30)); // `load`: the newest committed value
//!
//! // Take from whichever account can pay; wait while neither can. Bob holds 30, so his branch
//! // retries: its writes and hooks are undone and Alice's branch runs.
//! atomically(|tx| {
//!     tx.or_else(|tx| transfer(tx, &bob, &alice, 50), |tx| transfer(tx, &alice, &bob, 50))
//! });
//! assert_eq!((alice.load(), bob.load()), (20, 80));
//!
//! // Abort with a typed error: the writes are discarded and the error is returned.
//! let r: Result<(), &str> = try_atomically(|tx| {
//!     tx.write(&bob, 0)?;
//!     if tx.read(&alice)? < 1_000 {
//!         return tx.abort("insufficient funds");
//!     }
//!     tx.modify(&alice, |b| b - 1_000)
//! });
//! assert_eq!(r, Err("insufficient funds"));
//! assert_eq!(bob.load(), 80);
//!
//! // Closed nesting: a part that aborts is rolled back alone (its writes and hooks), and the
//! // enclosing body gets its error as a value and goes on.
//! let outcome: Result<(), &str> = atomically(|tx| {
//!     tx.modify(&bob, |b| b + 1)?;
//!     tx.nested(|tx| {
//!         tx.write(&alice, 0)?;
//!         tx.abort("refused")
//!     })
//! });
//! assert_eq!(outcome, Err("refused"));
//! assert_eq!((alice.load(), bob.load()), (20, 81));
//!
//! // Side effects run for the attempt that commits, exactly once.
//! atomically(|tx| {
//!     tx.modify(&bob, |b| b + 1)?;
//!     tx.on_abort(|cause| eprintln!("attempt abandoned: {cause:?}"));
//!     tx.on_commit(|| println!("commit is certain; not yet visible"));
//!     tx.after_commit(|| println!("visible; locks released"));
//!     Ok(())
//! });
//! ```
//!
//! Beyond [`retry`]: [`Txn::retry_on`] waits for any of the named TVars to change,
//! [`Txn::retry_all`] for all of them, [`Txn::retry_until`] until a predicate holds, and
//! [`Txn::retry_for`] gives up waiting once the whole `atomically` call has spent that long
//! blocked (a total over the call, unlike ScalaSTM's per-call `retryFor`) and lets the body go
//! on:
//!
//! ```
//! use mvstm::{atomically, TVar};
//! use std::time::Duration;
//!
//! let (ready, other) = (TVar::new(false), TVar::new(0u32));
//! let setter = ready.clone();
//! std::thread::spawn(move || atomically(|tx| tx.write(&setter, true)));
//! // Block until `ready` or `other` changes, then run the body again.
//! atomically(|tx| if tx.read(&ready)? { Ok(()) } else { tx.retry_on(&[&ready, &other]) });
//!
//! // Wait at most 10 ms in total for a value that never comes, then go on.
//! let never = TVar::new(false);
//! let waited_out = atomically(|tx| {
//!     if tx.read(&never)? {
//!         return Ok(false);
//!     }
//!     tx.retry_for(Duration::from_millis(10))?;
//!     Ok(true)
//! });
//! assert!(waited_out);
//! ```
//!
//! The [`collections`] and the [`lifecycle`] are built on this API and compose with it:
//!
//! ```
//! use mvstm::atomically;
//! use mvstm::collections::{TMap, TQueue};
//!
//! let (jobs, results) = (TQueue::new(), TMap::new());
//! atomically(|tx| jobs.push(tx, 7u64));
//! // Take a job and record its result in one atomic step: never lost, never done twice.
//! atomically(|tx| {
//!     let job = jobs.pop(tx)?; // blocks (retries) while the queue is empty
//!     results.insert(tx, job, job * job)?;
//!     Ok(())
//! });
//! assert_eq!(atomically(|tx| results.get(tx, &7)), Some(49));
//! ```
//!
//! # Hooks
//!
//! | hook | when it runs | locks | on failure |
//! |---|---|---|---|
//! | [`on_abort(FnOnce(AbortCause))`](Txn::on_abort) | after every abandoned attempt (conflict, retry, abort, panic), before the re-run, block or return; LIFO | none | a panic resumes after the rest ran |
//! | [`on_commit`](Txn::on_commit), [`try_on_commit`](Txn::try_on_commit) | commit decided: writes locked, reads validated, values not yet visible; FIFO | write set exclusively, reads shared (committers that only read them go on) | `Err(e)` or a panic vetoes: nothing is published, `try_atomically` returns `Err(e)` |
//! | [`after_commit(FnOnce())`](Txn::after_commit) | values visible, locks released, waiters woken; FIFO | none | the commit stands; all hooks run; the first panic resumes |
//!
//! Hooks belong to one attempt: an abandoned attempt's commit hooks never run, and an `or_else`
//! branch that retried takes its hooks with it. A [`Txn::nested`] part that aborts drops its
//! commit hooks, and its `on_abort` hooks run (told `Abort`) when the attempt ends, whether it
//! commits or not. All hooks run on the thread that called `atomically`, before it returns. A
//! vetoing hook:
//!
//! ```
//! use mvstm::{try_atomically, TVar};
//!
//! let a = TVar::new(1);
//! let r: Result<(), String> = try_atomically(|tx| {
//!     tx.write(&a, 0)?;
//!     tx.try_on_commit(|| Err::<(), String>("database refused".into()));
//!     Ok(())
//! });
//! assert_eq!((r, a.load()), (Err("database refused".to_string()), 1));
//! ```
//!
//! The full contract: [docs/hooks.md](https://github.com/mvstm/mvstm/blob/main/docs/hooks.md).
//!
//! # Guarantees
//!
//! - **Opacity**: every attempt sees one consistent snapshot, even one that will abort.
//! - **Serializable, strictly**: update transactions validate their whole read set (no write
//!   skew); a transaction that starts after another returned sees its writes.
//! - **Read-only transactions** never abort, never block and take no lock.
//! - **`retry`** parks the thread (no CPU while blocked) and never loses a wake-up; `or_else`
//!   waits on the union of what every branch read.
//! - **Progress**: conflicts are retried with backoff, and a transaction that keeps losing takes
//!   a priority token and commits within a few attempts.
//! - **Panics** in a body abort the attempt and resume; no TVar is ever poisoned.
//! - **Memory**: old versions are reclaimed with crossbeam-epoch once no snapshot can read them;
//!   each value is dropped exactly once, never inside a transaction body or a commit (a value's
//!   `Drop` may even start a transaction; it should not panic).
//! - **Misuse is loud**: `atomically` inside a transaction or an `on_commit` hook, `tx.abort` in
//!   plain `atomically`, and a `retry` with nothing to wait on panic with a message that says so.
//!
//! The design: [docs/architecture.md](https://github.com/mvstm/mvstm/blob/main/docs/architecture.md);
//! how it is tested: [docs/testing.md](https://github.com/mvstm/mvstm/blob/main/docs/testing.md);
//! figures beside locks and other STMs:
//! [docs/benchmarks.md](https://github.com/mvstm/mvstm/blob/main/docs/benchmarks.md).

#![warn(missing_docs, unreachable_pub)]

// The two layers above the engine are modules of this crate rather than bare re-exports of
// their crates, so that rustdoc inlines their items: `mvstm::collections::TMap` has its own
// page in these docs and turns up in their search.

#[cfg(feature = "collections")]
pub mod collections {
    //! Transactional collections and coordination structures (the `mvstm-collections` crate).
    //!
    //! Every structure keeps its state in TVars and every operation takes the transaction, so
    //! they compose with each other and with any other TVar work inside one
    //! [`atomically`](crate::atomically). Independent users do not conflict: the two ends of a
    //! queue touch different slot TVars, and each bucket of a map is its own TVar.
    //!
    //! | structure | what it is |
    //! |---|---|
    //! | [`TQueue`] | unbounded FIFO queue; `pop` retries while empty |
    //! | [`TBQueue`] | bounded FIFO queue; `push` also retries while full |
    //! | [`TMap`] | hash map: a TVar per bucket holding a persistent trie; writers of different keys never conflict, `iter` snapshots without copying |
    //! | [`TSet`] | hash set on the same structure as `TMap` |
    //! | [`TArray`] | fixed-length array with a TVar per slot; disjoint indices never conflict |
    //! | [`TChan`] | broadcast channel (GHC's `TChan`): every [`TChanReader`] sees every later message |
    //! | [`TPriorityQueue`] | priority queue, greatest first; `pop` retries while empty |
    //! | [`TMVar`] | a slot that is full or empty (GHC's `TMVar`): blocking `take` and `put` |
    //! | [`TSemaphore`] | counting semaphore; `acquire` retries while too few permits are left |
    //! | [`LockTable`] | all-or-none locks on named resources, with shared holders and a scope guard |
    //! | [`Versioned`] | a value with a version, for optimistic updates across think time |
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
    //!
    //! The array, set, broadcast channel and priority queue (`API.md` §8):
    //!
    //! ```
    //! use mvstm::atomically;
    //! use mvstm::collections::{TArray, TChan, TMap, TPriorityQueue, TSet};
    //! let arr: TArray<u64> = TArray::new(16, 0); // fixed length; indices never conflict
    //! atomically(|tx| arr.set(tx, 3, 7));
    //! assert_eq!(atomically(|tx| arr.get(tx, 3)), 7);
    //!
    //! let set: TSet<String> = TSet::new(); // also remove, len, iter
    //! assert!(atomically(|tx| set.insert(tx, "a".to_string())));
    //! assert!(atomically(|tx| set.contains(tx, "a")));
    //!
    //! let chan: TChan<u32> = TChan::new(); // broadcast
    //! let (r1, r2) = (chan.subscribe(), chan.subscribe()); // TChanReader<u32>: Send + 'static
    //! atomically(|tx| chan.send(tx, 1));
    //! assert_eq!(atomically(|tx| r1.recv(tx)), 1); // recv retries while nothing is new
    //! assert_eq!(atomically(|tx| r2.recv(tx)), 1);
    //! let r3 = r1.clone(); // cloneTChan: same position, independent
    //! atomically(|tx| chan.send(tx, 2));
    //! assert_eq!(atomically(|tx| r3.recv(tx)), 2);
    //!
    //! let pq: TPriorityQueue<u32> = TPriorityQueue::new(); // pop gives the greatest
    //! atomically(|tx| { pq.push(tx, 2)?; pq.push(tx, 9) });
    //! assert_eq!(atomically(|tx| pq.pop(tx)), 9); // retries while empty
    //!
    //! let m: TMap<u32, u32> = TMap::new();
    //! atomically(|tx| m.insert(tx, 1, 10).map(|_| ()));
    //! let seen: Vec<(u32, u32)> = atomically(|tx| m.iter(tx)).collect(); // a consistent snapshot
    //! assert_eq!(seen, vec![(1, 10)]);
    //! ```
    //!
    //! Design and figures: [docs/collections.md](https://github.com/mvstm/mvstm/blob/main/docs/collections.md).

    #[doc(inline)]
    pub use mvstm_collections::*;
}

#[cfg(feature = "lifecycle")]
pub mod lifecycle {
    //! Service lifecycles started and stopped from concurrent requests, a registry with
    //! dependencies, and a command queue (the `mvstm-lifecycle` crate).
    //!
    //! A transaction *claims* a start or stop by moving the state to `Starting` or `Stopping`
    //! (refused at once if another operation holds it); the real [`Service::start`] or
    //! [`Service::stop`] runs only in that transaction's `after_commit` hook, outside any
    //! transaction; a second transaction records the outcome, from a guard that records it
    //! whatever fails or panics in between. So two starts never race, a failure never leaves a
    //! service stuck in `Starting`, and a side effect never runs twice.
    //!
    //! ```
    //! use mvstm::lifecycle::{Lifecycle, LifecycleError, Service, State};
    //!
    //! struct Cache;
    //! impl Service for Cache {
    //!     type Running = Vec<u8>; // whatever stopping needs; no Clone required
    //!     type Error = String;
    //!     fn start(&self) -> Result<Vec<u8>, String> { Ok(vec![0; 1024]) }
    //!     fn stop(&self, _buffer: Vec<u8>) -> Result<(), String> { Ok(()) }
    //! }
    //!
    //! let cache = Lifecycle::new(Cache);
    //! cache.start().unwrap();
    //! assert!(matches!(cache.start(), Err(LifecycleError::Refused(_)))); // already running
    //! assert_eq!(cache.state(), State::Running);
    //! cache.stop().unwrap();
    //! assert_eq!(cache.state(), State::Stopped);
    //! ```
    //!
    //! On top: [`Registry`], named services with dependencies, and [`CommandQueue`], commands
    //! handled serially with bounded retries and a dead-letter list. Protocol, failure table and
    //! figures: [docs/lifecycle.md](https://github.com/mvstm/mvstm/blob/main/docs/lifecycle.md).
    //!
    //! With the `async` feature (on by default), each has an async face that works on any
    //! executor: `AsyncLifecycle` for services whose `start`/`stop` are async, the registry's
    //! `start_async`/`stop_async`/`restart_async`/`start_with_deps_async` (for blocking and
    //! async services in one registry), and the command queue's `handler_async`,
    //! `async_processor`, `enqueue_async` and `wait_idle_async`
    //! ([docs/async.md](https://github.com/mvstm/mvstm/blob/main/docs/async.md)).
    //!
    //! ```
    //! # #[cfg(feature = "async")] {
    //! use mvstm::lifecycle::{AsyncLifecycle, AsyncService, Registry, State};
    //! struct Http;
    //! impl AsyncService for Http {
    //!     type Running = ();
    //!     type Error = std::io::Error;
    //!     async fn start(&self) -> std::io::Result<()> { Ok(()) } // bind, spawn the accept loop
    //!     async fn stop(&self, _: ()) -> std::io::Result<()> { Ok(()) }
    //! }
    //! let registry = Registry::new();
    //! registry.register("http", AsyncLifecycle::new(Http), &[]).unwrap();
    //! futures::executor::block_on(registry.start_async("http")).unwrap(); // or on tokio
    //! assert_eq!(registry.state("http").unwrap(), State::Running);
    //! # }
    //! ```

    #[doc(inline)]
    pub use mvstm_lifecycle::*;
}

pub use mvstm_core::{
    atomically, atomically_async, atomically_timeout, atomically_timeout_async, retry,
    try_atomically, try_atomically_async, AbortCause, AnyTVar, OrAbort, StmError, StmResult, TVar,
    TimedOut, Txn,
};

/// The counters behind [`stats()`]: what one snapshot holds, and opt-in tracking of the TVars
/// that conflict most. Design and cost:
/// [docs/observability.md](https://github.com/mvstm/mvstm/blob/main/docs/observability.md).
pub mod stats {
    #[doc(inline)]
    pub use mvstm_core::stats::*;
}

#[doc(inline)]
pub use mvstm_core::stats::stats;

#[cfg(feature = "durable")]
pub mod durable {
    //! Durable records, a command queue and leased locks shared by processes on one or many
    //! hosts, on SQLite (a file, nothing to run) or PostgreSQL, and STM transactions committed
    //! together with a database transaction (the `mvstm-durable` crate, behind the cargo feature
    //! `durable`). Design, limits and figures:
    //! [docs/durable.md](https://github.com/mvstm/mvstm/blob/main/docs/durable.md).

    #[doc(inline)]
    pub use mvstm_durable::*;
}

/// The README's examples, compiled and run as doctests so they cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(all(
    doctest,
    feature = "collections",
    feature = "lifecycle",
    feature = "async"
))]
pub struct ReadmeDoctests;

/// The Rust code in `docs/observability.md`, compiled and run as doctests.
#[doc = include_str!("../docs/observability.md")]
#[cfg(doctest)]
pub struct ObservabilityDocDoctests;

/// The Rust code in `docs/lifecycle.md`, compiled and run as doctests.
#[doc = include_str!("../docs/lifecycle.md")]
#[cfg(all(doctest, feature = "lifecycle"))]
pub struct LifecycleDocDoctests;

/// The Rust code in `docs/async.md`, compiled and run as doctests.
#[doc = include_str!("../docs/async.md")]
#[cfg(all(doctest, feature = "lifecycle", feature = "async"))]
pub struct AsyncDocDoctests;
