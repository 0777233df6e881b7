//! Handling one command: the handler's transaction, and the retry-or-dead-letter policy for an
//! attempt that failed. Shared by every processor.

use super::outcome::{DeadLetter, EnqueueError, HandlerError, Outcome, OutcomeKind};
use super::{Envelope, Job, Shared};
use crate::error::panic_message;
use mvstm_core::{atomically, try_atomically, StmResult, TVar, Txn};
use parking_lot::Mutex;
use std::any::{type_name, Any, TypeId};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Shared {
    pub(super) fn job<C: Send + 'static>(&self, command: C) -> Result<Job, EnqueueError<C>> {
        if !self.handlers.contains_key(&TypeId::of::<C>()) {
            return Err(EnqueueError::NoHandler(command));
        }
        Ok(Job {
            envelope: Arc::new(Envelope {
                // Relaxed: ids only need to be unique.
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                command_type: type_name::<C>(),
                type_id: TypeId::of::<C>(),
                command: Mutex::new(Some(Box::new(command))),
            }),
            failed: 0,
            last_error: None,
        })
    }

    /// Handle the head of the queue, `job` (only the processor pops, so it stays the head).
    /// Returns `false`, leaving the command queued, if `stop` was set before the handler
    /// committed: a handler blocked in `retry` wakes for the stop flag too.
    pub(super) fn process(self: &Arc<Self>, job: Job, stop: &TVar<bool>) -> bool {
        let handler = &self.handlers[&job.envelope.type_id];
        let attempt = job.failed + 1;
        let _span = crate::trace::command(job.envelope.id, job.envelope.command_type, attempt);
        // Set by the last `on_commit` hook: the handler's transaction committed, whatever
        // panics later (an `after_commit` hook of the handler panics after the commit).
        let committed = Rc::new(Cell::new(false));
        let handled = {
            let command = job.envelope.command.lock();
            let command = command
                .as_deref()
                .expect("a queued command is only taken out after it leaves the queue");
            catch_unwind(AssertUnwindSafe(|| {
                try_atomically::<bool, HandlerError>(|tx| {
                    if tx.read(stop)? {
                        return Ok(false);
                    }
                    self.pop_head(tx, &job)?;
                    handler(tx, command)?;
                    self.log_on_commit(tx, &job, attempt, OutcomeKind::Processed);
                    let committed = Rc::clone(&committed);
                    tx.on_commit(move || committed.set(true));
                    Ok(true)
                })
            }))
        };
        if committed.get() {
            crate::trace::command_outcome(crate::trace::CommandOutcome::Processed);
            // Processed: drop the command now, on this thread, not whenever the queue's old
            // slot versions are reclaimed.
            drop(job.envelope.take());
            if let Err(panic) = handled {
                // The commit stands (logged as processed); the hook's panic must not stop the
                // processor, nor make it handle the command again.
                eprintln!(
                    "mvstm-lifecycle: an after_commit hook of command {} ({}) panicked: {}",
                    job.envelope.id,
                    job.envelope.command_type,
                    panic_message(&*panic)
                );
            }
            return true;
        }
        let error: Arc<str> = match handled {
            Ok(Ok(handled)) => {
                if !handled {
                    crate::trace::command_outcome(crate::trace::CommandOutcome::Deferred);
                }
                return handled;
            }
            Ok(Err(HandlerError(message))) => message.into(),
            Err(panic) => format!("the handler panicked: {}", panic_message(&*panic)).into(),
        };
        let failed = Job {
            envelope: Arc::clone(&job.envelope),
            failed: attempt,
            last_error: Some(Arc::clone(&error)),
        };
        let dead_lettered = atomically(|tx| {
            self.pop_head(tx, &job)?;
            if attempt >= self.max_attempts {
                let mut dead = Vec::clone(&*tx.read(&self.dead)?);
                dead.push(failed.clone());
                tx.write(&self.dead, Arc::new(dead))?;
                let kind = OutcomeKind::DeadLettered {
                    error: Arc::clone(&error),
                };
                self.log_on_commit(tx, &job, attempt, kind);
                Ok(true)
            } else {
                // The pop just freed a slot, so this push never finds the queue full.
                self.queue.push(tx, failed.clone())?;
                let kind = OutcomeKind::Retried {
                    error: Arc::clone(&error),
                };
                self.log_on_commit(tx, &job, attempt, kind);
                Ok(false)
            }
        });
        crate::trace::command_outcome(if dead_lettered {
            crate::trace::CommandOutcome::DeadLettered(&error)
        } else {
            crate::trace::CommandOutcome::Retried(&error)
        });
        true
    }

    /// Pop the head of the queue, which is `job`: only the processor pops, one job at a time.
    fn pop_head(&self, tx: &mut Txn, job: &Job) -> StmResult<()> {
        let head = self.queue.pop(tx)?;
        debug_assert!(
            Arc::ptr_eq(&head.envelope, &job.envelope),
            "the processor's job left the head of the queue"
        );
        Ok(())
    }

    /// Log the outcome when the commit is certain, before the dequeue is visible.
    fn log_on_commit(self: &Arc<Self>, tx: &mut Txn, job: &Job, attempt: u32, kind: OutcomeKind) {
        let shared = Arc::clone(self);
        let (id, command_type) = (job.envelope.id, job.envelope.command_type);
        tx.on_commit(move || {
            let mut log = shared.log.lock();
            match kind {
                OutcomeKind::Processed => log.stats.processed += 1,
                OutcomeKind::Retried { .. } => log.stats.retried += 1,
                OutcomeKind::DeadLettered { .. } => log.stats.dead_lettered += 1,
            }
            if shared.log_capacity > 0 {
                if log.recent.len() == shared.log_capacity {
                    log.recent.pop_front();
                }
                log.recent.push_back(Outcome {
                    id,
                    command_type,
                    attempt,
                    kind,
                });
            }
        });
    }
}

impl Job {
    pub(super) fn take_command<C: 'static>(self) -> C {
        *self
            .envelope
            .take()
            .downcast::<C>()
            .unwrap_or_else(|_| unreachable!("the envelope was made for this type"))
    }

    pub(super) fn dead_letter(&self) -> DeadLetter {
        DeadLetter {
            id: self.envelope.id,
            command_type: self.envelope.command_type,
            attempts: self.failed,
            error: self.last_error.clone().unwrap_or_else(|| "".into()),
        }
    }
}

impl Envelope {
    pub(super) fn take(&self) -> Box<dyn Any + Send> {
        self.command
            .lock()
            .take()
            .expect("a command is taken out of its envelope once")
    }
}
