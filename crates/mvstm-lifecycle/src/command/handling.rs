//! Handling one command: the handler's transaction, and the retry-or-dead-letter policy for an
//! attempt that failed. Shared by every processor.

use super::outcome::{DeadLetter, EnqueueError, HandlerError, Outcome, OutcomeKind};
use super::{Envelope, Handler, Job, Shared};
#[cfg(feature = "async")]
use crate::async_lifecycle::catch_unwind_future;
use crate::error::panic_message;
#[cfg(feature = "async")]
use mvstm_core::try_atomically_async;
use mvstm_core::{atomically, retry, try_atomically, StmResult, TVar, Txn};
use parking_lot::Mutex;
use std::any::{type_name, Any, TypeId};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
#[cfg(feature = "async")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Why a queued command's envelope is full.
const QUEUED: &str = "a queued command is only taken out after it leaves the queue";

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

    /// Handle the head of the queue, `job` (only the processor pops, so it stays the head), on
    /// the processor thread. Returns `false`, leaving the command queued, if `stop` was set
    /// before the handler committed: a handler blocked in `retry` wakes for the stop flag too.
    pub(super) fn process(self: &Arc<Self>, job: Job, stop: &TVar<bool>) -> bool {
        let handler = match &self.handlers[&job.envelope.type_id] {
            Handler::Sync(handler) => handler,
            #[cfg(feature = "async")]
            Handler::Async(_) => {
                unreachable!(
                    "the processor thread refuses to start for a queue with async handlers"
                )
            }
        };
        let attempt = job.failed + 1;
        let _span = crate::trace::command(job.envelope.id, job.envelope.command_type, attempt);
        // Set by the last `on_commit` hook: the handler's transaction committed, whatever
        // panics later (an `after_commit` hook of the handler panics after the commit).
        let committed = Rc::new(Cell::new(false));
        let handled = {
            let command = job.envelope.command.lock();
            let command = command.as_deref().expect(QUEUED);
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
        self.conclude(&job, attempt, committed.get(), handled)
    }

    /// What follows a handler's attempt, whichever processor ran it: `committed` says whether
    /// the handler's transaction (with the dequeue) committed, `handled` how the attempt
    /// returned (`Ok(false)`: deferred by a stop). A failed attempt is queued again at the back,
    /// or dead-lettered once it was the last allowed. Returns whether to go on processing.
    pub(super) fn conclude(
        self: &Arc<Self>,
        job: &Job,
        attempt: u32,
        committed: bool,
        handled: thread::Result<Result<bool, HandlerError>>,
    ) -> bool {
        if committed {
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
        // Never waits: the head is there to pop, and the pop frees the slot the push takes.
        let dead_lettered = atomically(|tx| {
            self.pop_head(tx, job)?;
            if attempt >= self.max_attempts {
                let mut dead = Vec::clone(&*tx.read(&self.dead)?);
                dead.push(failed.clone());
                tx.write(&self.dead, Arc::new(dead))?;
                let kind = OutcomeKind::DeadLettered {
                    error: Arc::clone(&error),
                };
                self.log_on_commit(tx, job, attempt, kind);
                Ok(true)
            } else {
                self.queue.push(tx, failed.clone())?;
                let kind = OutcomeKind::Retried {
                    error: Arc::clone(&error),
                };
                self.log_on_commit(tx, job, attempt, kind);
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

    /// Take the processor's seat in `tx`, or wait (`retry`) while another processor holds it;
    /// `false` if `stop` is set first. One processor handles commands at a time, whichever
    /// kind: the thread of `processor()` or the task of `async_processor()`.
    pub(super) fn take_seat(&self, tx: &mut Txn, stop: &TVar<bool>) -> StmResult<bool> {
        if tx.read(stop)? {
            return Ok(false);
        }
        if tx.read(&self.seated)? {
            return retry();
        }
        tx.write(&self.seated, true)?;
        Ok(true)
    }

    /// Give the seat back (from a processor's exit guard).
    pub(super) fn leave_seat(&self, tx: &mut Txn) -> StmResult<()> {
        tx.write(&self.seated, false)
    }

    /// The body of `wait_idle`: `true` once the queue is empty, `false` after `timeout`.
    pub(super) fn wait_idle(&self, tx: &mut Txn, timeout: Duration) -> StmResult<bool> {
        if self.queue.is_empty(tx)? {
            return Ok(true);
        }
        tx.retry_for(timeout)?;
        Ok(false)
    }

    /// The next command to handle, or `None` once `stop` is set; waits while the queue is empty.
    pub(super) fn next(&self, tx: &mut Txn, stop: &TVar<bool>) -> StmResult<Option<Job>> {
        if tx.read(stop)? {
            return Ok(None);
        }
        self.queue.peek(tx).map(Some)
    }

    /// Pop the head of the queue, which is `job`: only the processor pops, one job at a time.
    pub(super) fn pop_head(&self, tx: &mut Txn, job: &Job) -> StmResult<()> {
        let head = self.queue.pop(tx)?;
        debug_assert!(
            Arc::ptr_eq(&head.envelope, &job.envelope),
            "the processor's job left the head of the queue"
        );
        Ok(())
    }

    /// Log the outcome when the commit is certain, before the dequeue is visible.
    pub(super) fn log_on_commit(
        self: &Arc<Self>,
        tx: &mut Txn,
        job: &Job,
        attempt: u32,
        kind: OutcomeKind,
    ) {
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

#[cfg(feature = "async")]
impl Shared {
    /// Handle the head of the queue, `job`, in the async processor's task: a blocking handler
    /// in its dequeuing transaction (a `retry` in it waits asynchronously, and wakes for `stop`,
    /// as on the thread), an async handler awaited, then dequeued by a transaction of its own.
    /// Returns whether to go on, as `process`.
    pub(super) async fn process_async(self: &Arc<Self>, job: Job, stop: &TVar<bool>) -> bool {
        let attempt = job.failed + 1;
        let envelope = &job.envelope;
        let handling = async {
            // Set by the last `on_commit` hook of the dequeuing transaction; read in the same
            // poll that committed it, on the same thread.
            let committed = Arc::new(AtomicBool::new(false));
            let handled = match &self.handlers[&envelope.type_id] {
                Handler::Sync(handler) => {
                    let dequeue = try_atomically_async::<bool, HandlerError>(|tx| {
                        if tx.read(stop)? {
                            return Ok(false);
                        }
                        self.pop_head(tx, &job)?;
                        // Locked for the attempt only: never across a `Pending`.
                        let command = envelope.command.lock();
                        handler(tx, command.as_deref().expect(QUEUED))?;
                        drop(command);
                        self.log_on_commit(tx, &job, attempt, OutcomeKind::Processed);
                        let committed = Arc::clone(&committed);
                        tx.on_commit(move || committed.store(true, Ordering::Relaxed));
                        Ok(true)
                    });
                    catch_unwind_future(dequeue).await
                }
                Handler::Async(handler) => {
                    let made = catch_unwind(AssertUnwindSafe(|| {
                        handler(envelope.command.lock().as_deref().expect(QUEUED))
                    }));
                    match made {
                        Ok(future) => match catch_unwind_future(future).await {
                            // No await from here to the record: a drop of the task cannot come
                            // between the handler's success and the dequeue that records it.
                            Ok(Ok(())) => {
                                atomically(|tx| {
                                    self.pop_head(tx, &job)?;
                                    self.log_on_commit(tx, &job, attempt, OutcomeKind::Processed);
                                    let committed = Arc::clone(&committed);
                                    tx.on_commit(move || committed.store(true, Ordering::Relaxed));
                                    Ok(())
                                });
                                Ok(Ok(true))
                            }
                            Ok(Err(error)) => Ok(Err(error)),
                            Err(panic) => Err(panic),
                        },
                        Err(panic) => Err(panic),
                    }
                }
            };
            self.conclude(&job, attempt, committed.load(Ordering::Relaxed), handled)
        };
        crate::trace::in_command(envelope.id, envelope.command_type, attempt, handling).await
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
