//! Durable state shared by processes: versioned records, a command queue and leased locks on
//! SQLite or PostgreSQL, and STM transactions committed together with a database transaction.
//!
//! The in-memory layers of mvstm (`Versioned`, `CommandQueue`, `LockTable`) end at the process:
//! a crash loses every queued command and every lock, and two processes share nothing. This
//! crate gives the same abstractions on a real database, chosen by the URL given to
//! [`Store::open`]: SQLite in a file (embedded, nothing to install or run) or PostgreSQL (shared
//! by processes on many hosts).
//!
//! - [`Records`]: JPA's `@Version`. A save names the version it read and is one conditional
//!   `UPDATE`; among any number of concurrent savers of one version exactly one wins.
//! - [`Queue`]: EDC's command queue. Commands are serde data, durable once enqueued (or
//!   enqueued inside the caller's own transaction, the outbox pattern); handlers run one at a
//!   time per queue across processes; failures are retried with backoff, then dead-lettered;
//!   a worker that dies loses its lease and the command runs again elsewhere.
//! - [`Locks`]: Flower's persistent locks. Several resources all or none, owners that share,
//!   blocking or not, a lease with a fencing token per resource.
//! - [`Store::commit_with`]: ScalaSTM's external decider. A database transaction runs inside the
//!   STM commit, after validation and before publication; a database refusal vetoes the STM
//!   transaction.
//!
//! Every operation is one database transaction (module `store`), every caller-given name, key
//! and payload is a bound parameter, and every lease is measured on the database's clock.
//! `docs/durable.md` in the repository has the schema, the claim queries and the limits.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let _ = std::fs::remove_file("target/demo.db");
//! use mvstm::durable::{Store, Wait};
//! use std::time::Duration;
//! let store = Store::open("sqlite://target/demo.db")?;  // or "postgres://user@host/db"
//! # store.transaction(|db| db.execute("CREATE TABLE IF NOT EXISTS audit (msg TEXT)"))?;
//!
//! // Versioned records (JPA @Version): a save names the version it read.
//! let names = store.records::<String>("names")?;          // values: serde Serialize + Deserialize
//! names.create("joe", &"Joe".to_string())?;               // version 1; Err if it exists
//! let (name, version) = names.get("joe")?.expect("created");
//! names.save("joe", version, &"Jack".to_string())?;       // version 2
//! let stale = names.save("joe", version, &"Jill".to_string()).unwrap_err();
//! assert!(stale.is_stale());                              // StaleVersion { expected: 1, actual: 2 }
//!
//! // A durable command queue: durable once `enqueue` returns, one handler at a time per queue.
//! let q = store.queue::<u64>("greetings", 3)?;
//! q.enqueue(&42)?;
//! let done = q.process_due(|cmd: u64| -> Result<(), String> { println!("hello {cmd}"); Ok(()) })?;
//! assert_eq!(done, 1);
//!
//! // Locks shared across processes and hosts, with a lease; released by the guard.
//! let locks = store.locks()?;
//! let guard = locks.lock(&["/Sets/Shared/MyResource"], "pid-1", &["pid-2"], Wait::NoWait, Duration::from_secs(30))?;
//! drop(guard);
//!
//! // An STM transaction and a database transaction committed together.
//! let balance = mvstm::TVar::new(100i64);
//! mvstm::try_atomically::<_, mvstm::durable::Error>(|tx| {
//!     tx.modify(&balance, |b| b - 10)?;
//!     store.commit_with(tx, |db| db.execute("INSERT INTO audit(msg) VALUES ('withdrew 10')"))
//! })?;
//! # assert_eq!(balance.load(), 90);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs, unreachable_pub)]

mod db;
mod error;
mod locks;
mod queue;
mod records;
mod schema;
mod store;

pub use db::{Backend, Db, Value};
pub use error::{Error, Result};
pub use locks::{LockGuard, Locks, Wait};
pub use queue::{
    DeadLetter, Delivery, Outcome, OutcomeKind, Queue, DEFAULT_BACKOFF, DEFAULT_LEASE, MAX_BACKOFF,
};
pub use records::Records;
pub use store::{Store, TX_ATTEMPTS};
