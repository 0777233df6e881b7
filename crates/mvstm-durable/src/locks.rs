//! Locks shared by every process that opens the database: Flower's persistent, distributed
//! locks, with leases and fencing tokens.
//!
//! # Tables
//!
//! `mvstm_locks` has one row per (resource, owner) holding it: the owner's fencing token, when
//! its lease expires, and the owners it agreed to share with (JSON). `mvstm_lock_tokens` keeps,
//! per resource, the last token handed out; every grant takes the next one, so tokens grow
//! monotonically per resource, across owners, processes and restarts.
//!
//! # Taking locks, all or none
//!
//! One transaction takes every resource of a call or none: for each resource, in sorted order
//! (so two callers never wait on each other in a cycle), it locks the resource's token row
//! (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already excludes other
//! writers), deletes holders whose lease has expired, and checks the remaining holders: another
//! owner is compatible only if each of the two names the other in its `shared_with`. If any
//! resource is held incompatibly, nothing is granted and the error names every such resource;
//! otherwise each resource gets a row and the next token. The same owner asking again replaces
//! its own row (and token): the old guard becomes stale.
//!
//! A blocking call polls (5 ms, doubling to 100 ms) until it succeeds or its timeout passes.
//!
//! # Leases and fencing
//!
//! A holder that dies is released by expiry: the next caller deletes its row. A holder that
//! comes back late finds its row gone or re-granted: [`LockGuard::release`],
//! [`LockGuard::renew`] and [`LockGuard::check`] match on `(resource, owner, token)` and an
//! unexpired lease, so they fail with [`Error::LockLost`] (`is_stale()`). A resource that must
//! not be touched by a late holder should also check the token it is shown against the highest
//! it has seen (the fencing token pattern).

use crate::db::{Backend, Begin, Db, Value};
use crate::error::{Error, Result};
use crate::store::{check_name, Store};
use std::fmt;
use std::time::{Duration, Instant};

/// Whether [`Locks::lock`] waits for resources held by others.
///
/// ```
/// use mvstm::durable::{Store, Wait};
/// use std::time::Duration;
/// let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
/// let _held = locks.lock(&["doc/wait"], "a", &[], Wait::NoWait, Duration::from_secs(5))?;
/// let e = locks.lock(&["doc/wait"], "b", &[], Wait::Block(Duration::from_millis(50)), Duration::from_secs(5));
/// assert!(e.unwrap_err().is_refused()); // still held after 50 ms
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once with [`Error::LockRefused`] naming the resources held by others.
    NoWait,
    /// Retry until every resource is free, for at most this long, then fail as `NoWait` does.
    Block(Duration),
}

/// The locks of one database. From [`Store::locks`].
///
/// ```
/// use mvstm::durable::{Store, Wait};
/// use std::time::Duration;
/// let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
/// let a = locks.lock(&["doc/a", "doc/b"], "alice", &[], Wait::NoWait, Duration::from_secs(10))?;
/// let refused = locks.lock(&["doc/b", "doc/c"], "bob", &[], Wait::NoWait, Duration::from_secs(10));
/// assert_eq!(refused.unwrap_err().to_string(), r#"lock refused, held by other owners: "doc/b""#);
/// drop(a); // released
/// locks.lock(&["doc/b"], "bob", &[], Wait::NoWait, Duration::from_secs(10))?;
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Locks {
    store: Store,
}

/// The locks one [`Locks::lock`] call took; releases them when dropped.
///
/// Each resource comes with its fencing token: larger than any token handed out for that
/// resource before.
///
/// ```
/// use mvstm::durable::{Store, Wait};
/// use std::time::Duration;
/// let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
/// let first = locks.lock(&["doc/guard"], "a", &[], Wait::NoWait, Duration::from_secs(5))?;
/// let t1 = first.token("doc/guard").unwrap();
/// drop(first); // released
/// let second = locks.lock(&["doc/guard"], "b", &[], Wait::NoWait, Duration::from_secs(5))?;
/// assert!(second.token("doc/guard").unwrap() > t1);
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
pub struct LockGuard {
    store: Store,
    owner: String,
    held: Vec<(String, u64)>,
    released: bool,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("owner", &self.owner)
            .field("held", &self.held)
            .finish()
    }
}

// Opened from a `Store`; here rather than in `store.rs` (see `records.rs`).
impl Store {
    /// The locks shared by every process that opens this database.
    ///
    /// ```
    /// use mvstm::durable::{Store, Wait};
    /// use std::time::Duration;
    /// let store = Store::open("sqlite://target/doc-store.db")?;
    /// let guard = store.locks()?.lock(&["printer"], "me", &[], Wait::NoWait, Duration::from_secs(5))?;
    /// guard.release()?;
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn locks(&self) -> Result<Locks> {
        Ok(Locks::new(self.clone()))
    }
}

impl Locks {
    pub(crate) fn new(store: Store) -> Locks {
        Locks { store }
    }

    /// Take every resource in `resources` for `owner`, or none of them.
    ///
    /// Another owner's hold is compatible if it lists `owner` in its own `shared_with` and
    /// `owner` lists it in `shared_with` here. The lease lasts `lease`; a holder that dies is
    /// released when it runs out; [`LockGuard::renew`] extends it.
    ///
    /// # Errors
    ///
    /// [`Error::LockRefused`] naming the resources held incompatibly (at once for
    /// [`Wait::NoWait`], after the timeout for [`Wait::Block`]); [`Error::Invalid`] for an
    /// empty resource list, or an empty name.
    ///
    /// ```
    /// use mvstm::durable::{Store, Wait};
    /// use std::time::Duration;
    /// let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
    /// let lease = Duration::from_secs(10);
    /// let p1 = locks.lock(&["doc/shared"], "pid-1", &["pid-2"], Wait::NoWait, lease)?;
    /// let p2 = locks.lock(&["doc/shared"], "pid-2", &["pid-1"], Wait::NoWait, lease)?;
    /// assert!(locks.lock(&["doc/shared"], "pid-3", &[], Wait::NoWait, lease).unwrap_err().is_refused());
    /// assert!(p2.token("doc/shared") > p1.token("doc/shared"));
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn lock(
        &self,
        resources: &[&str],
        owner: &str,
        shared_with: &[&str],
        wait: Wait,
        lease: Duration,
    ) -> Result<LockGuard> {
        check_name("lock owner", owner)?;
        if resources.is_empty() {
            return Err(Error::invalid(
                "lock resources",
                "[]",
                "name at least one resource",
            ));
        }
        for r in resources {
            check_name("lock resource", r)?;
        }
        for s in shared_with {
            check_name("shared-with owner", s)?;
        }
        let mut sorted: Vec<&str> = resources.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let shared_json = serde_json::to_string(shared_with).map_err(|e| Error::Encode {
            reason: e.to_string(),
        })?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let granted = self.store.run(Begin::Write, |db| {
                try_lock(db, &sorted, owner, shared_with, &shared_json, lease)
            })?;
            let refused = match granted {
                Ok(held) => {
                    return Ok(LockGuard {
                        store: self.store.clone(),
                        owner: owner.to_string(),
                        held,
                        released: false,
                    })
                }
                Err(refused) => refused,
            };
            let timeout = match wait {
                Wait::NoWait => Duration::ZERO,
                Wait::Block(timeout) => timeout,
            };
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(Error::LockRefused { resources: refused });
            }
            std::thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The owners holding `resource` now (unexpired leases), with their tokens.
    ///
    /// ```
    /// use mvstm::durable::{Store, Wait};
    /// use std::time::Duration;
    /// let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
    /// let g = locks.lock(&["doc/holders"], "carol", &[], Wait::NoWait, Duration::from_secs(10))?;
    /// let holders = locks.holders("doc/holders")?;
    /// assert_eq!(holders, vec![("carol".to_string(), g.token("doc/holders").unwrap())]);
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn holders(&self, resource: &str) -> Result<Vec<(String, u64)>> {
        check_name("lock resource", resource)?;
        let rows = self.store.run(Begin::Read, |db| {
            let now = db.now_ms()?;
            db.query(
                "SELECT owner, token FROM mvstm_locks \
                 WHERE resource = $1 AND expires_ms > $2 ORDER BY owner",
                &[resource.into(), now.into()],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap_or("").to_string(),
                    r[1].as_i64().unwrap_or(0) as u64,
                )
            })
            .collect())
    }
}

/// What one attempt to lock came to: `Ok(tokens)` granted, `Err(resources)` refused.
type Attempt = std::result::Result<Vec<(String, u64)>, Vec<String>>;

/// One attempt, in one transaction.
fn try_lock(
    db: &mut Db<'_>,
    sorted: &[&str],
    owner: &str,
    shared_with: &[&str],
    shared_json: &str,
    lease: Duration,
) -> Result<Attempt> {
    let now = db.now_ms()?;
    let mut refused = Vec::new();
    for &resource in sorted {
        db.execute_params(
            "INSERT INTO mvstm_lock_tokens (resource, last_token) VALUES ($1, 0) \
             ON CONFLICT (resource) DO NOTHING",
            &[resource.into()],
        )?;
        if db.backend() == Backend::Postgres {
            db.query(
                "SELECT last_token FROM mvstm_lock_tokens WHERE resource = $1 FOR UPDATE",
                &[resource.into()],
            )?;
        }
        db.execute_params(
            "DELETE FROM mvstm_locks WHERE resource = $1 AND expires_ms <= $2",
            &[resource.into(), now.into()],
        )?;
        let holders = db.query(
            "SELECT owner, shared_with FROM mvstm_locks WHERE resource = $1 AND owner <> $2",
            &[resource.into(), owner.into()],
        )?;
        let compatible = holders.iter().all(|h| {
            let holder = h[0].as_str().unwrap_or("");
            let theirs: Vec<String> =
                serde_json::from_str(h[1].as_str().unwrap_or("[]")).unwrap_or_default();
            shared_with.contains(&holder) && theirs.iter().any(|o| o == owner)
        });
        if !compatible {
            refused.push(resource.to_string());
        }
    }
    if !refused.is_empty() {
        return Ok(Err(refused));
    }
    let expires = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4));
    let mut held = Vec::with_capacity(sorted.len());
    for &resource in sorted {
        let token = db
            .query_i64(
                "UPDATE mvstm_lock_tokens SET last_token = last_token + 1 WHERE resource = $1 \
                 RETURNING last_token",
                &[resource.into()],
            )?
            .ok_or_else(|| Error::database("lock token row vanished"))?;
        db.execute_params(
            "INSERT INTO mvstm_locks (resource, owner, token, expires_ms, shared_with) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (resource, owner) DO UPDATE SET token = excluded.token, \
             expires_ms = excluded.expires_ms, shared_with = excluded.shared_with",
            &[
                resource.into(),
                owner.into(),
                token.into(),
                expires.into(),
                shared_json.into(),
            ],
        )?;
        held.push((resource.to_string(), token as u64));
    }
    Ok(Ok(held))
}

impl LockGuard {
    /// The owner the locks were taken for.
    ///
    /// ```
    /// # use mvstm::durable::{Store, Wait};
    /// # let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
    /// let g = locks.lock(&["doc/owner"], "dave", &[], Wait::NoWait, std::time::Duration::from_secs(5))?;
    /// assert_eq!(g.owner(), "dave");
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Every resource held, with its fencing token, in sorted order.
    ///
    /// ```
    /// # use mvstm::durable::{Store, Wait};
    /// # let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
    /// let g = locks.lock(&["doc/y", "doc/x"], "erin", &[], Wait::NoWait, std::time::Duration::from_secs(5))?;
    /// assert_eq!(g.tokens().iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(), ["doc/x", "doc/y"]);
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn tokens(&self) -> &[(String, u64)] {
        &self.held
    }

    /// The fencing token of `resource`, if this guard holds it.
    ///
    /// ```
    /// # use mvstm::durable::{Store, Wait};
    /// # let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
    /// let g = locks.lock(&["doc/t"], "fred", &[], Wait::NoWait, std::time::Duration::from_secs(5))?;
    /// assert!(g.token("doc/t").is_some() && g.token("doc/other").is_none());
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn token(&self, resource: &str) -> Option<u64> {
        self.held
            .iter()
            .find(|(r, _)| r == resource)
            .map(|(_, t)| *t)
    }

    /// Extend every lease to `lease` from now.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] if a lease already ran out or the resource was taken over (then no
    /// lease is extended).
    ///
    /// ```
    /// # use mvstm::durable::{Store, Wait};
    /// # use std::time::Duration;
    /// # let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
    /// let g = locks.lock(&["doc/renew"], "gina", &[], Wait::NoWait, Duration::from_secs(5))?;
    /// g.renew(Duration::from_secs(60))?;
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn renew(&self, lease: Duration) -> Result<()> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4);
        self.store.run(Begin::Write, |db| {
            let now = db.now_ms()?;
            for (resource, token) in &self.held {
                let n = db.execute_params(
                    "UPDATE mvstm_locks SET expires_ms = $4 \
                     WHERE resource = $1 AND owner = $2 AND token = $3 AND expires_ms > $5",
                    &[
                        resource.as_str().into(),
                        self.owner.as_str().into(),
                        token_param(*token),
                        now.saturating_add(lease_ms).into(),
                        now.into(),
                    ],
                )?;
                if n != 1 {
                    // Err rolls back the renewals already made: all or none.
                    return Err(self.lost(resource, *token));
                }
            }
            Ok(())
        })
    }

    /// Check that every lease is still this guard's and unexpired.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] for the first resource whose token is stale.
    ///
    /// ```
    /// # use mvstm::durable::{Store, Wait};
    /// # let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
    /// let g = locks.lock(&["doc/check"], "hal", &[], Wait::NoWait, std::time::Duration::from_secs(5))?;
    /// g.check()?;
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn check(&self) -> Result<()> {
        self.store.run(Begin::Read, |db| {
            let now = db.now_ms()?;
            for (resource, token) in &self.held {
                let n = db.query_i64(
                    "SELECT COUNT(*) FROM mvstm_locks \
                     WHERE resource = $1 AND owner = $2 AND token = $3 AND expires_ms > $4",
                    &[
                        resource.as_str().into(),
                        self.owner.as_str().into(),
                        token_param(*token),
                        now.into(),
                    ],
                )?;
                if n != Some(1) {
                    return Err(self.lost(resource, *token));
                }
            }
            Ok(())
        })
    }

    /// Release every lock now.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] if a lease had run out or been taken over: the holder acted on a
    /// lock it no longer had. The others are released all the same.
    ///
    /// ```
    /// # use mvstm::durable::{Store, Wait};
    /// # let locks = Store::open("sqlite://target/doc-locks.db")?.locks()?;
    /// let g = locks.lock(&["doc/release"], "ivy", &[], Wait::NoWait, std::time::Duration::from_secs(5))?;
    /// g.release()?;
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.release_all()
    }

    fn release_all(&self) -> Result<()> {
        let lost = self.store.run(Begin::Write, |db| {
            let now = db.now_ms()?;
            let mut lost = None;
            for (resource, token) in &self.held {
                let rows = db.query(
                    "DELETE FROM mvstm_locks WHERE resource = $1 AND owner = $2 AND token = $3 \
                     RETURNING expires_ms",
                    &[
                        resource.as_str().into(),
                        self.owner.as_str().into(),
                        token_param(*token),
                    ],
                )?;
                let live = rows
                    .first()
                    .and_then(|r| r[0].as_i64())
                    .is_some_and(|expires| expires > now);
                if !live && lost.is_none() {
                    lost = Some(self.lost(resource, *token));
                }
            }
            Ok(lost)
        })?;
        lost.map_or(Ok(()), Err)
    }

    fn lost(&self, resource: &str, token: u64) -> Error {
        Error::LockLost {
            resource: resource.to_string(),
            token,
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released {
            // A failure here (database gone, lease lost) leaves nothing to undo: the lease
            // runs out by itself.
            let _ = self.release_all();
        }
    }
}

fn token_param(token: u64) -> Value {
    Value::Int(i64::try_from(token).unwrap_or(-1))
}
