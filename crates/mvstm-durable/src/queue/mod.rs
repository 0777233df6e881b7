//! The durable command queue: EDC's `CommandQueue` across processes.
//!
//! This file holds the API; `claim.rs` the transactions that take the queue's lease, claim a
//! command and record its outcome; `outcome.rs` what handlers and the outcome log see.
//!
//! # Tables
//!
//! A command is a row of `mvstm_commands`: its queue, its JSON payload, a state (`ready`,
//! `running`, `done`, `dead`), its attempt count, when it is next due, and, while it runs, the
//! worker that claimed it and until when (its lease). `mvstm_queue_leases` holds one row per
//! queue naming the worker that may run that queue's handlers now, and until when;
//! `mvstm_outcomes` logs the outcome of every attempt.
//!
//! # One handler at a time per queue, across processes
//!
//! [`Queue::process_due`] first takes the queue's lease: one conditional `UPDATE` that succeeds
//! only if the lease is free, expired or already this worker's. A worker that does not get it
//! returns 0 at once: someone else is processing the queue. Before each command the lease is
//! renewed in the same transaction that claims the command; if it was lost (this worker stalled
//! past it), processing stops.
//!
//! # Claiming, leases and redelivery
//!
//! A claim moves the oldest due command to `running` with this worker's name and a lease, and
//! counts the attempt, in one statement: on PostgreSQL
//! `UPDATE ... WHERE id = (SELECT id ... ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING`,
//! on SQLite the same `UPDATE ... RETURNING` without the row lock (SQLite's one writer already
//! excludes every other claimer). A `running` command whose lease has passed counts as due: its
//! worker died or stalled, and the command runs again elsewhere. That is why the handler gets
//! the command's id ([`Delivery`]): an effect outside the database may have happened already,
//! and the id makes it idempotent. A command whose worker died on its last allowed attempt is
//! dead-lettered instead of run again, so a command that kills its worker cannot loop forever.
//!
//! The handler runs outside any database transaction. Its result is recorded by one more
//! transaction that changes the command only if this worker still holds it
//! (`WHERE id = $1 AND worker = $2 AND state = 'running'`): a worker that comes back after its
//! lease was taken over records `lease_lost` and changes nothing.
//!
//! # Retries
//!
//! A failed attempt (the handler returned `Err` or panicked) puts the command back as `ready`,
//! due after a backoff of `backoff * 2^(attempt - 1)` (at most [`MAX_BACKOFF`]), with the error
//! kept as `last_error`; after `max_attempts` failed attempts it is `dead`, listed by
//! [`Queue::dead_letters`]. Commands are claimed in id order, so one producer's commands run in
//! the order it enqueued them; a command waiting out its backoff does not hold back those
//! behind it (as the in-memory `CommandQueue` moves a failed command to the back).

mod claim;
mod outcome;

pub use outcome::{DeadLetter, Delivery, Outcome, OutcomeKind};

use crate::db::{Begin, Db};
use crate::error::{Error, Result};
use crate::records::encode;
use crate::store::{check_name, Store};
use claim::Claim;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The longest pause between two attempts of one command.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A queue's lease, and a command's, unless [`Queue::with_lease`] says otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The pause after a command's first failed attempt, unless [`Queue::with_backoff`] says
/// otherwise; it doubles with each further attempt.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(250);

/// A handle on one durable command queue, commands of type `T` as JSON. From [`Store::queue`].
///
/// ```
/// use mvstm::durable::Store;
/// let store = Store::open("sqlite://target/doc-queue.db")?;
/// let q = store.queue::<String>("doc-greetings", 3)?;
/// q.enqueue(&"world".to_string())?;
/// let mut seen = Vec::new();
/// q.process_due(|name: String| -> Result<(), String> {
///     seen.push(name);
///     Ok(())
/// })?;
/// assert!(seen.contains(&"world".to_string()));
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
pub struct Queue<T> {
    store: Store,
    name: String,
    max_attempts: u32,
    lease: Duration,
    backoff: Duration,
    batch: usize,
    worker: String,
    /// Held for the length of a `process_due` call: calls through one handle share its worker
    /// name, which the queue's lease cannot tell apart, so they run one after the other.
    busy: Mutex<()>,
    _commands: PhantomData<fn(T) -> T>,
}

// Opened from a `Store`; here rather than in `store.rs` (see `records.rs`).
impl Store {
    /// The durable command queue `name`, whose commands of type `T` are tried at most
    /// `max_attempts` times before they are dead-lettered.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if `name` is empty or contains a NUL character, or if
    /// `max_attempts` is 0.
    ///
    /// ```
    /// let store = mvstm::durable::Store::open("sqlite://target/doc-store.db")?;
    /// let q = store.queue::<String>("mail", 5)?;
    /// assert_eq!(q.name(), "mail");
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn queue<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        max_attempts: u32,
    ) -> Result<Queue<T>> {
        check_name("queue name", name)?;
        if max_attempts == 0 {
            return Err(Error::invalid(
                "max_attempts",
                "0",
                "a command needs at least one attempt",
            ));
        }
        Ok(Queue::new(self.clone(), name.to_string(), max_attempts))
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("lease", &self.lease)
            .field("worker", &self.worker)
            .finish()
    }
}

static WORKERS: AtomicU64 = AtomicU64::new(0);

fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    // Relaxed: a counter whose only job is to make names unique within the process.
    let n = WORKERS.fetch_add(1, Ordering::Relaxed);
    format!("{host}/{}/{n}", std::process::id())
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    pub(crate) fn new(store: Store, name: String, max_attempts: u32) -> Queue<T> {
        Queue {
            store,
            name,
            max_attempts,
            lease: DEFAULT_LEASE,
            backoff: DEFAULT_BACKOFF,
            batch: usize::MAX,
            worker: worker_name(),
            busy: Mutex::new(()),
            _commands: PhantomData,
        }
    }

    /// The queue's name.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// assert_eq!(store.queue::<u8>("jobs", 1)?.name(), "jobs");
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This handle's worker name, as recorded in leases and the outcome log
    /// (`host/pid/n` unless [`Queue::with_worker`] set one).
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<u8>("jobs", 1)?.with_worker("w1")?;
    /// assert_eq!(q.worker(), "w1");
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Use `lease` for the queue's lease and each claimed command's: a worker that dies is
    /// replaced after it. It must exceed the longest handler run, or a slow handler's command
    /// runs again elsewhere while it is still running.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<u8>("jobs", 1)?.with_lease(std::time::Duration::from_secs(5));
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Wait `backoff` after a command's first failed attempt, doubling each time after.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<u8>("jobs", 3)?.with_backoff(std::time::Duration::from_millis(10));
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Handle at most `batch` commands per [`Queue::process_due`] call (default: every due
    /// command), then give the queue's lease back so other workers get their turn.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<u8>("doc-batch", 1)?.with_batch_limit(1);
    /// q.enqueue(&1)?;
    /// q.enqueue(&2)?;
    /// assert_eq!(q.process_due(|_: u8| Ok::<(), String>(()))?, 1);
    /// # q.process_due(|_: u8| Ok::<(), String>(()))?;
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn with_batch_limit(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Name this handle's worker. The name must be unique among the workers sharing the queue:
    /// the queue's lease tells workers apart by name, so two live handles with one name could
    /// run handlers at the same time. (A restarted process may reuse its name: it takes its
    /// old lease back at once.)
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for an empty name or one with a NUL character.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// assert!(store.queue::<u8>("jobs", 1)?.with_worker("").is_err());
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn with_worker(mut self, worker: &str) -> Result<Self> {
        crate::store::check_name("worker name", worker)?;
        self.worker = worker.to_string();
        Ok(self)
    }

    /// Add `command` to the queue; it is durable (committed) once this returns. Returns the
    /// command's id.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<u8>("doc-enqueue", 1)?;
    /// let a = q.enqueue(&1)?;
    /// let b = q.enqueue(&2)?;
    /// assert!(b > a);
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn enqueue(&self, command: &T) -> Result<u64> {
        let json = encode(command)?;
        self.store
            .run(Begin::Write, |db| self.insert_command(db, &json))
    }

    /// Add `command` inside the caller's own database transaction (the outbox pattern): it
    /// commits, or rolls back, with the caller's other changes.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<String>("doc-outbox", 1)?;
    /// store.transaction(|db| db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT)"))?;
    /// store.transaction(|db| {
    ///     db.execute("INSERT INTO orders (id) VALUES ('o-1')")?;
    ///     q.enqueue_in(db, &"ship o-1".to_string())
    /// })?;
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn enqueue_in(&self, db: &mut Db<'_>, command: &T) -> Result<u64> {
        let json = encode(command)?;
        self.insert_command(db, &json)
    }

    /// Run the handler on every command that is due now (at most the batch limit), one at a
    /// time, and return how many attempts it ran. Returns 0 at once if another worker is
    /// processing this queue.
    ///
    /// Calls through one handle from several threads run one after the other; for several
    /// workers, give each its own handle ([`Store::queue`]), hence its own worker name.
    ///
    /// A handler's `Err` (or panic) is a failed attempt: the command is retried after its
    /// backoff, or dead-lettered after `max_attempts`.
    ///
    /// # Errors
    ///
    /// A database error; [`Error::CorruptPayload`] if a command cannot be decoded as `T` (it
    /// is dead-lettered first, so the next call goes on with the others).
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<u64>("doc-process", 3)?;
    /// q.enqueue(&42)?;
    /// let done = q.process_due(|cmd: u64| -> Result<(), String> { Ok(()) })?;
    /// assert!(done >= 1);
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn process_due<E: fmt::Display>(
        &self,
        mut handler: impl FnMut(T) -> std::result::Result<(), E>,
    ) -> Result<usize> {
        self.process_due_with(|_, command| handler(command))
    }

    /// Like [`Queue::process_due`], but the handler also gets the command's id and attempt
    /// number, to make effects outside the database idempotent.
    ///
    /// ```
    /// use mvstm::durable::Delivery;
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<u64>("doc-process-with", 3)?;
    /// let id = q.enqueue(&7)?;
    /// let mut seen = Vec::new();
    /// q.process_due_with(|d: Delivery, cmd: u64| -> Result<(), String> {
    ///     seen.push((d.id, d.attempt, cmd));
    ///     Ok(())
    /// })?;
    /// assert!(seen.contains(&(id, 1, 7)));
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn process_due_with<E: fmt::Display>(
        &self,
        mut handler: impl FnMut(Delivery, T) -> std::result::Result<(), E>,
    ) -> Result<usize> {
        // A panicking handler is caught below, so the lock is never poisoned by one; if it
        // were, the `()` it guards holds no state to distrust.
        let _one_call_at_a_time = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !self.take_queue_lease()? {
            return Ok(0);
        }
        let result = self.process_while_leased(&mut handler);
        let released = self.release_queue_lease();
        let handled = result?;
        released?;
        Ok(handled)
    }

    fn process_while_leased<E: fmt::Display>(
        &self,
        handler: &mut impl FnMut(Delivery, T) -> std::result::Result<(), E>,
    ) -> Result<usize> {
        let mut handled = 0;
        while handled < self.batch {
            let (id, payload, attempt) = match self.store.run(Begin::Write, |db| self.claim(db))? {
                Claim::Stop => return Ok(handled),
                Claim::Got {
                    id,
                    payload,
                    attempt,
                } => (id, payload, attempt),
            };
            let command: T = match serde_json::from_str(&payload) {
                Ok(command) => command,
                Err(e) => {
                    let reason = format!("corrupt payload: {e}");
                    self.finish(id, attempt, Err(reason.clone()), true)?;
                    return Err(Error::CorruptPayload {
                        what: "command",
                        id: format!("{} #{id}", self.name),
                        reason: e.to_string(),
                    });
                }
            };
            let delivery = Delivery {
                id: id as u64,
                attempt,
            };
            let result = match catch_unwind(AssertUnwindSafe(|| handler(delivery, command))) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(panic) => Err(format!("handler panicked: {}", panic_message(&*panic))),
            };
            handled += 1;
            self.finish(id, attempt, result, false)?;
        }
        Ok(handled)
    }

    /// The dead-lettered commands, oldest first, each with its last error.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<u8>("doc-dead", 1)?;
    /// q.enqueue(&0)?;
    /// q.process_due(|_: u8| Err("no"))?;
    /// let dead = q.dead_letters()?;
    /// assert_eq!(dead.last().map(|d| d.error.as_str()), Some("no"));
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter<T>>> {
        let rows = self.store.run(Begin::Read, |db| {
            db.query(
                "SELECT id, payload, attempts, last_error FROM mvstm_commands \
                 WHERE queue = $1 AND state = 'dead' ORDER BY id",
                &[self.name.as_str().into()],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let payload = row[1].as_str().unwrap_or("").to_string();
                DeadLetter {
                    id: row[0].as_i64().unwrap_or(0) as u64,
                    command: serde_json::from_str(&payload).ok(),
                    payload,
                    attempts: row[2].as_i64().unwrap_or(0) as u32,
                    error: row[3].as_str().unwrap_or("").to_string(),
                }
            })
            .collect())
    }

    /// The outcome log: every attempt's outcome, oldest first.
    ///
    /// ```
    /// use mvstm::durable::OutcomeKind;
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<u8>("doc-outcomes", 1)?;
    /// let id = q.enqueue(&1)?;
    /// q.process_due(|_: u8| Ok::<(), String>(()))?;
    /// assert!(q.outcomes()?.iter().any(|o| o.command_id == id && o.kind == OutcomeKind::Done));
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn outcomes(&self) -> Result<Vec<Outcome>> {
        let rows = self.store.run(Begin::Read, |db| {
            db.query(
                "SELECT command_id, attempt, worker, outcome, error FROM mvstm_outcomes \
                 WHERE queue = $1 ORDER BY id",
                &[self.name.as_str().into()],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|row| Outcome {
                command_id: row[0].as_i64().unwrap_or(0) as u64,
                attempt: row[1].as_i64().unwrap_or(0) as u32,
                worker: row[2].as_str().unwrap_or("").to_string(),
                kind: OutcomeKind::parse(row[3].as_str().unwrap_or("")),
                error: row[4].as_str().map(str::to_string),
            })
            .collect())
    }

    /// How many commands are waiting or running (not done, not dead).
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
    /// let q = store.queue::<u8>("doc-pending", 1)?;
    /// q.process_due(|_: u8| Ok::<(), String>(()))?;
    /// assert_eq!(q.pending()?, 0);
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn pending(&self) -> Result<usize> {
        let n = self.store.run(Begin::Read, |db| {
            db.query_i64(
                "SELECT COUNT(*) FROM mvstm_commands \
                 WHERE queue = $1 AND state IN ('ready', 'running')",
                &[self.name.as_str().into()],
            )
        })?;
        Ok(n.unwrap_or(0) as usize)
    }
}

pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".into()
    }
}
