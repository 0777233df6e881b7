//! The queue's transactions: take and give back the queue's lease, insert a command, claim the
//! oldest due one (the one place where the two databases' SQL differs: `FOR UPDATE SKIP
//! LOCKED` on PostgreSQL), and record an attempt's outcome only if this worker still holds
//! the command. The module comment of `queue` tells why each step is shaped this way.

use super::{ms, OutcomeKind, Queue, MAX_BACKOFF};
use crate::db::{Backend, Begin, Db, Value};
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// What one claim transaction came to.
pub(super) enum Claim {
    /// The queue's lease was lost, or nothing is due.
    Stop,
    Got {
        id: i64,
        payload: String,
        attempt: u32,
    },
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    pub(super) fn insert_command(&self, db: &mut Db<'_>, json: &str) -> Result<u64> {
        let now = db.now_ms()?;
        let id = db.query_i64(
            "INSERT INTO mvstm_commands (queue, payload, state, attempts, due_ms, enqueued_ms) \
             VALUES ($1, $2, 'ready', 0, $3, $3) RETURNING id",
            &[self.name.as_str().into(), json.into(), now.into()],
        )?;
        id.map(|id| id as u64)
            .ok_or_else(|| Error::database("INSERT ... RETURNING id returned no row"))
    }
    pub(super) fn take_queue_lease(&self) -> Result<bool> {
        self.store.run(Begin::Write, |db| {
            let now = db.now_ms()?;
            db.execute_params(
                "INSERT INTO mvstm_queue_leases (queue, worker, until_ms) VALUES ($1, NULL, 0) \
                 ON CONFLICT (queue) DO NOTHING",
                &[self.name.as_str().into()],
            )?;
            let n = db.execute_params(
                "UPDATE mvstm_queue_leases SET worker = $2, until_ms = $3 \
                 WHERE queue = $1 AND (worker IS NULL OR worker = $2 OR until_ms <= $4)",
                &[
                    self.name.as_str().into(),
                    self.worker.as_str().into(),
                    (now + ms(self.lease)).into(),
                    now.into(),
                ],
            )?;
            Ok(n == 1)
        })
    }

    pub(super) fn release_queue_lease(&self) -> Result<()> {
        self.store.run(Begin::Write, |db| {
            db.execute_params(
                "UPDATE mvstm_queue_leases SET worker = NULL, until_ms = 0 \
                 WHERE queue = $1 AND worker = $2",
                &[self.name.as_str().into(), self.worker.as_str().into()],
            )
        })?;
        Ok(())
    }

    /// One transaction: renew the queue's lease, dead-letter commands whose worker died on
    /// their last attempt, claim the oldest due command.
    pub(super) fn claim(&self, db: &mut Db<'_>) -> Result<Claim> {
        let now = db.now_ms()?;
        let until = now + ms(self.lease);
        let queue: Value = self.name.as_str().into();
        let worker: Value = self.worker.as_str().into();
        let renewed = db.execute_params(
            "UPDATE mvstm_queue_leases SET until_ms = $3 WHERE queue = $1 AND worker = $2",
            &[queue.clone(), worker.clone(), until.into()],
        )?;
        if renewed == 0 {
            return Ok(Claim::Stop);
        }
        let abandoned = db.query(
            "UPDATE mvstm_commands SET state = 'dead', worker = NULL, lease_until_ms = NULL, \
             last_error = $3 \
             WHERE queue = $1 AND state = 'running' AND lease_until_ms <= $2 AND attempts >= $4 \
             RETURNING id, attempts",
            &[
                queue.clone(),
                now.into(),
                "the worker's lease ran out during the last attempt".into(),
                i64::from(self.max_attempts).into(),
            ],
        )?;
        for row in abandoned {
            let (id, attempts) = (row[0].as_i64().unwrap_or(0), row[1].as_i64().unwrap_or(0));
            self.log(
                db,
                id,
                attempts as u32,
                OutcomeKind::DeadLettered,
                Some("the worker's lease ran out during the last attempt"),
                now,
            )?;
        }
        let sql = match db.backend() {
            Backend::Postgres => {
                "UPDATE mvstm_commands SET state = 'running', attempts = attempts + 1, \
                 worker = $2, lease_until_ms = $3 \
                 WHERE id = (SELECT id FROM mvstm_commands WHERE queue = $1 \
                   AND ((state = 'ready' AND due_ms <= $4) OR (state = 'running' AND lease_until_ms <= $4)) \
                   ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, payload, attempts"
            }
            Backend::Sqlite => {
                "UPDATE mvstm_commands SET state = 'running', attempts = attempts + 1, \
                 worker = $2, lease_until_ms = $3 \
                 WHERE id = (SELECT id FROM mvstm_commands WHERE queue = $1 \
                   AND ((state = 'ready' AND due_ms <= $4) OR (state = 'running' AND lease_until_ms <= $4)) \
                   ORDER BY id LIMIT 1) \
                 RETURNING id, payload, attempts"
            }
        };
        let rows = db.query(sql, &[queue, worker, until.into(), now.into()])?;
        Ok(match rows.into_iter().next() {
            None => Claim::Stop,
            Some(row) => Claim::Got {
                id: row[0].as_i64().unwrap_or(0),
                payload: row[1].as_str().unwrap_or("").to_string(),
                attempt: row[2].as_i64().unwrap_or(0) as u32,
            },
        })
    }

    /// Record an attempt's result, if this worker still holds the command.
    pub(super) fn finish(
        &self,
        id: i64,
        attempt: u32,
        result: std::result::Result<(), String>,
        dead_now: bool,
    ) -> Result<()> {
        self.store.run(Begin::Write, |db| {
            let now = db.now_ms()?;
            let held: [Value; 2] = [id.into(), self.worker.as_str().into()];
            let (kind, changed) = match &result {
                Ok(()) => (
                    OutcomeKind::Done,
                    db.execute_params(
                        "UPDATE mvstm_commands SET state = 'done', worker = NULL, \
                         lease_until_ms = NULL \
                         WHERE id = $1 AND worker = $2 AND state = 'running'",
                        &held,
                    )?,
                ),
                Err(error) if dead_now || attempt >= self.max_attempts => (
                    OutcomeKind::DeadLettered,
                    db.execute_params(
                        "UPDATE mvstm_commands SET state = 'dead', worker = NULL, \
                         lease_until_ms = NULL, last_error = $3 \
                         WHERE id = $1 AND worker = $2 AND state = 'running'",
                        &[held[0].clone(), held[1].clone(), error.as_str().into()],
                    )?,
                ),
                Err(error) => (
                    OutcomeKind::Failed,
                    db.execute_params(
                        "UPDATE mvstm_commands SET state = 'ready', worker = NULL, \
                         lease_until_ms = NULL, last_error = $3, due_ms = $4 \
                         WHERE id = $1 AND worker = $2 AND state = 'running'",
                        &[
                            held[0].clone(),
                            held[1].clone(),
                            error.as_str().into(),
                            (now + ms(self.backoff_after(attempt))).into(),
                        ],
                    )?,
                ),
            };
            let kind = if changed == 1 {
                kind
            } else {
                OutcomeKind::LeaseLost
            };
            self.log(
                db,
                id,
                attempt,
                kind,
                result.as_ref().err().map(String::as_str),
                now,
            )
        })
    }

    pub(super) fn log(
        &self,
        db: &mut Db<'_>,
        id: i64,
        attempt: u32,
        kind: OutcomeKind,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        db.execute_params(
            "INSERT INTO mvstm_outcomes (queue, command_id, attempt, worker, outcome, error, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                self.name.as_str().into(),
                id.into(),
                i64::from(attempt).into(),
                self.worker.as_str().into(),
                kind.as_str().into(),
                error.into(),
                now.into(),
            ],
        )?;
        Ok(())
    }

    pub(super) fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }
}
