//! `Store`: opening a database by URL (its schema is in `schema.rs`), a small connection pool,
//! and the one place where transactions begin, commit, roll back and re-run.
//!
//! # Transactions
//!
//! Every operation of the records, the queue and the locks is one database transaction, run by
//! [`Store::run`]: begin, the closure, commit; roll back on any error. A transaction that fails
//! with a retryable error (PostgreSQL serialization failure `40001` or deadlock `40P01`, SQLite
//! `BUSY` after its busy timeout) is re-run from the start, up to [`TX_ATTEMPTS`] times, with a
//! short growing pause. The closure must therefore be safe to run again: it only talks to the
//! database, whose earlier attempt was rolled back.
//!
//! # Connections
//!
//! A store keeps the connections it opened in a pool (a `Mutex<Vec<_>>`): an operation takes one
//! or opens a new one, and gives it back when done, unless it is broken or still inside a
//! transaction. Threads that share a `Store` therefore run their transactions in parallel on
//! their own connections, as separate processes would.

use crate::db::{Backend, Begin, Conn, Db};
use crate::error::{redact, Error, Result};
use crate::schema::migrate;
use mvstm_core::{StmResult, Txn};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many times a transaction that hits a serialization failure or a busy database runs
/// before the error is returned.
pub const TX_ATTEMPTS: u32 = 8;

/// How long an SQLite connection waits for another writer's lock before `BUSY`.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `Store::open` waits for a PostgreSQL server that does not answer.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on one database: SQLite in a file or PostgreSQL. Cheap to clone (shared).
///
/// ```
/// use mvstm::durable::Store;
/// let store = Store::open("sqlite://target/doc-store.db")?;
/// let again = store.clone(); // the same pool
/// assert_eq!(store.url(), again.url());
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    target: Target,
    pool: Mutex<Vec<Conn>>,
}

enum Target {
    Sqlite(PathBuf),
    Postgres(Box<postgres::Config>),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open the database at `url` and create or migrate its schema.
    ///
    /// - `sqlite://path` opens (or creates, with its folder) an SQLite file, relative to the
    ///   current directory (`sqlite:///abs/path` for an absolute one), in WAL mode with a busy
    ///   timeout;
    /// - `postgres://user@host:port/db` (or `postgresql://`) connects to PostgreSQL; any
    ///   libpq-style parameter the `postgres` crate accepts works, e.g. `?host=/tmp` for a Unix
    ///   socket directory.
    ///
    /// The schema (tables prefixed `mvstm_`) is created if missing; opening is idempotent and
    /// safe from several processes at once.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownScheme`] for any other URL; [`Error::Connect`] when the database cannot
    /// be opened or reached.
    ///
    /// ```
    /// use mvstm::durable::{Error, Store};
    /// assert!(Store::open("sqlite://target/doc-open.db").is_ok());
    /// assert!(matches!(Store::open("mysql://x"), Err(Error::UnknownScheme { .. })));
    /// ```
    pub fn open(url: &str) -> Result<Store> {
        let target = if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(Error::Connect {
                    url: url.to_string(),
                    reason: "no file path after sqlite://".into(),
                });
            }
            Target::Sqlite(PathBuf::from(path))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut config: postgres::Config = url.parse().map_err(|e| Error::Connect {
                url: redact(url),
                reason: format!("{e}"),
            })?;
            if config.get_connect_timeout().is_none() {
                config.connect_timeout(PG_CONNECT_TIMEOUT);
            }
            Target::Postgres(Box::new(config))
        } else {
            return Err(Error::UnknownScheme { url: redact(url) });
        };
        let store = Store {
            inner: Arc::new(Inner {
                url: redact(url),
                target,
                pool: Mutex::new(Vec::new()),
            }),
        };
        let mut conn = store.connect()?;
        migrate(&mut conn)?;
        store.give_back(conn);
        Ok(store)
    }

    /// The URL this store was opened with (any password removed).
    ///
    /// ```
    /// let store = mvstm::durable::Store::open("sqlite://target/doc-store.db")?;
    /// assert_eq!(store.url(), "sqlite://target/doc-store.db");
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Which database this store talks to.
    ///
    /// ```
    /// let store = mvstm::durable::Store::open("sqlite://target/doc-store.db")?;
    /// assert_eq!(store.backend(), mvstm::durable::Backend::Sqlite);
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn backend(&self) -> Backend {
        match self.inner.target {
            Target::Sqlite(_) => Backend::Sqlite,
            Target::Postgres(_) => Backend::Postgres,
        }
    }

    /// Run `f` in one database transaction (serializable) and commit it; roll back if `f`
    /// returns `Err`. A serialization failure re-runs `f` (up to [`TX_ATTEMPTS`] times).
    ///
    /// ```
    /// let store = mvstm::durable::Store::open("sqlite://target/doc-store.db")?;
    /// let one = store.transaction(|db| db.query_i64("SELECT 1", &[]))?;
    /// assert_eq!(one, Some(1));
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn transaction<T>(&self, f: impl FnMut(&mut Db<'_>) -> Result<T>) -> Result<T> {
        self.run(Begin::Serializable, f)
    }

    /// Commit the STM transaction `tx` and one database transaction together (ScalaSTM's
    /// external decider).
    ///
    /// `f` runs in a `try_on_commit` hook of `tx`: once the STM commit is certain (write set
    /// locked, reads validated, nothing visible yet). There it runs as one serializable
    /// database transaction, re-run on serialization failures; if it commits, the STM
    /// transaction publishes; if it fails, the STM transaction is vetoed: nothing is
    /// published, `on_abort` hooks run, and `try_atomically` returns the [`Error`]. An attempt
    /// of `tx` that conflicts or aborts never runs `f`.
    ///
    /// Register it last among `try_on_commit` hooks: a later hook that vetoes would leave the
    /// database committed and the STM not (see `docs/durable.md`). While `f` runs, `tx`'s
    /// write set stays locked: keep it short.
    ///
    /// ```
    /// use mvstm::{try_atomically, TVar};
    /// use mvstm::durable::{Error, Store};
    /// let store = Store::open("sqlite://target/doc-commit-with.db")?;
    /// store.transaction(|db| db.execute("CREATE TABLE IF NOT EXISTS audit (msg TEXT)"))?;
    /// let balance = TVar::new(100i64);
    /// try_atomically::<_, Error>(|tx| {
    ///     tx.modify(&balance, |b| b - 10)?;
    ///     store.commit_with(tx, |db| db.execute("INSERT INTO audit (msg) VALUES ('withdrew 10')"))
    /// })?;
    /// assert_eq!(balance.load(), 90);
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn commit_with<F, T>(&self, tx: &mut Txn, f: F) -> StmResult<()>
    where
        F: FnMut(&mut Db<'_>) -> Result<T> + 'static,
    {
        let store = self.clone();
        tx.try_on_commit(move || store.run(Begin::Serializable, f).map(drop));
        Ok(())
    }

    /// Run `f` in one transaction begun as `begin`, re-running it on retryable failures.
    pub(crate) fn run<T>(
        &self,
        begin: Begin,
        mut f: impl FnMut(&mut Db<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 1;
        loop {
            let mut conn = self.take()?;
            let result = run_once(&mut conn, begin, &mut f);
            self.give_back(conn);
            match result {
                Err(e) if e.is_retryable() && attempt < TX_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(2u64 << attempt.min(6)));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn take(&self) -> Result<Conn> {
        let pooled = self
            .inner
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
    }

    fn give_back(&self, mut conn: Conn) {
        if conn.is_usable() {
            self.inner
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }

    fn connect(&self) -> Result<Conn> {
        let url = &self.inner.url;
        let fail = |reason: String| Error::Connect {
            url: url.clone(),
            reason,
        };
        match &self.inner.target {
            Target::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
                }
                let c = rusqlite::Connection::open(path).map_err(|e| fail(e.to_string()))?;
                c.busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .map_err(|e| fail(e.to_string()))?;
                // WAL: readers never wait for the writer. synchronous=FULL: a transaction
                // that returned is on disk, even across a power cut.
                c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
                    .map_err(|e| fail(e.to_string()))?;
                Ok(Conn::Sqlite(c))
            }
            Target::Postgres(config) => {
                let client = config
                    .connect(postgres::NoTls)
                    .map_err(|e| fail(e.to_string()))?;
                Ok(Conn::Pg(Box::new(client)))
            }
        }
    }
}

fn run_once<T>(
    conn: &mut Conn,
    begin: Begin,
    f: &mut impl FnMut(&mut Db<'_>) -> Result<T>,
) -> Result<T> {
    conn.begin(begin)?;
    let result = f(&mut Db::new(conn));
    match result {
        Ok(v) => match conn.batch("COMMIT") {
            Ok(()) => Ok(v),
            Err(e) => {
                // A failed COMMIT leaves the transaction rolled back (PostgreSQL) or still
                // open (SQLite BUSY): roll back so the connection can be reused.
                let _ = conn.batch("ROLLBACK");
                Err(e)
            }
        },
        Err(e) => {
            // If the rollback fails too, the connection stays inside a transaction and
            // `give_back` drops it.
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Refuse names that cannot be stored faithfully: empty, or with a NUL character (PostgreSQL
/// text cannot hold one). Everything else, quotes and SQL included, is bound as a parameter.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(what, name, "must not be empty"));
    }
    if name.contains('\0') {
        return Err(Error::invalid(
            what,
            name,
            "must not contain a NUL character",
        ));
    }
    Ok(())
}
