//! `CommandQueue`: commands as plain data, handled one at a time by a processor service, with
//! bounded retries, a dead-letter list and an outcome log.
//!
//! # Exactly once, or dead-lettered
//!
//! The processor *peeks* the head command, then runs its handler inside a transaction that also
//! *pops* it. A handler that succeeds commits its state changes and the dequeue together; one
//! that fails (aborts with a [`HandlerError`] or panics) rolls both back, and a second
//! transaction moves the command to the back of the queue with its attempt count raised, or
//! into the dead-letter list once `max_attempts` attempts failed. A command is never lost and a
//! handler's effects are never applied twice. Side effects belong in the handler's commit
//! hooks, which run only for the attempt that commits.
//!
//! The outcome of each attempt is appended to the log by an `on_commit` hook registered last,
//! so it is in the log before the dequeue becomes visible: once [`CommandQueue::wait_idle`]
//! sees an empty queue, every outcome is in the log.
//!
//! One processor thread runs every handler, so handlers never race each other; the processor is
//! a [`Service`] under one [`Lifecycle`], so it never runs twice.

use crate::error::panic_message;
use crate::lifecycle::{Lifecycle, Service};
use mvstm_collections::{Full, TBQueue};
use mvstm_core::{atomically, try_atomically, StmResult, TVar, Txn};
use parking_lot::Mutex;
use std::any::{type_name, Any, TypeId};
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::error::Error;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A queue of commands and the handlers that process them.
///
/// ```
/// use mvstm::lifecycle::{CommandQueue, HandlerError};
/// use mvstm::TVar;
/// use std::time::Duration;
///
/// struct Deposit(u64);
/// let balance = TVar::new(0u64);
/// let queue = CommandQueue::builder()
///     .capacity(64)
///     .max_attempts(3)
///     .handler({
///         let balance = balance.clone();
///         move |tx, deposit: &Deposit| {
///             if deposit.0 == 0 {
///                 return tx.abort(HandlerError::new("empty deposit"));
///             }
///             tx.modify(&balance, |b| b + deposit.0)
///         }
///     })
///     .build();
///
/// queue.enqueue(Deposit(5)).unwrap();
/// queue.enqueue(Deposit(0)).unwrap();
/// queue.processor().start()?;
/// assert!(queue.wait_idle(Duration::from_secs(10)));
/// queue.processor().stop()?;
///
/// assert_eq!(balance.load(), 5);
/// let stats = queue.stats();
/// assert_eq!((stats.processed, stats.retried, stats.dead_lettered), (1, 2, 1));
/// assert_eq!(&*queue.dead_letters()[0].error, "empty deposit");
/// # Ok::<(), mvstm::lifecycle::LifecycleError<mvstm::lifecycle::ProcessorError>>(())
/// ```
#[derive(Clone)]
pub struct CommandQueue {
    shared: Arc<Shared>,
    processor: Lifecycle<Processor>,
}

struct Shared {
    queue: TBQueue<Job>,
    dead: TVar<Arc<Vec<Job>>>,
    handlers: HashMap<TypeId, Handler>,
    max_attempts: u32,
    log: Mutex<Log>,
    log_capacity: usize,
    next_id: AtomicU64,
}

type Handler = Box<dyn Fn(&mut Txn, &(dyn Any + Send)) -> StmResult<()> + Send + Sync>;

/// A command in the queue: shared, so the transactional queue can clone it, and taken out only
/// by whoever removes it for good (`take_dead_letters`, or a failed enqueue).
#[derive(Clone)]
struct Job {
    envelope: Arc<Envelope>,
    /// Attempts that failed so far.
    failed: u32,
    last_error: Option<Arc<str>>,
}

struct Envelope {
    id: u64,
    command_type: &'static str,
    type_id: TypeId,
    command: Mutex<Option<Box<dyn Any + Send>>>,
}

#[derive(Default)]
struct Log {
    recent: VecDeque<Outcome>,
    stats: Stats,
}

/// How a handler reports failure: `return tx.abort(HandlerError::new("why"))`. The attempt's
/// writes and hooks are discarded and the command is retried or dead-lettered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError(pub String);

impl HandlerError {
    /// An error with this message.
    ///
    /// ```
    /// use mvstm::lifecycle::HandlerError;
    /// let e = HandlerError::new(format_args!("account {} is closed", 7));
    /// assert_eq!(e.to_string(), "account 7 is closed");
    /// ```
    pub fn new(message: impl fmt::Display) -> HandlerError {
        HandlerError(message.to_string())
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for HandlerError {}

/// Why `enqueue` did not take a command; the command is given back.
pub enum EnqueueError<C> {
    /// The queue is at capacity.
    Full(C),
    /// No handler was registered for this command type.
    NoHandler(C),
}

impl<C> EnqueueError<C> {
    /// The command that was not enqueued.
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, EnqueueError};
    /// struct Ping;
    /// struct Unhandled(u32);
    /// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
    /// let refused = queue.enqueue(Unhandled(7)).unwrap_err();
    /// assert!(matches!(refused, EnqueueError::NoHandler(_)));
    /// assert_eq!(refused.into_inner().0, 7); // the command comes back
    /// ```
    pub fn into_inner(self) -> C {
        match self {
            EnqueueError::Full(c) | EnqueueError::NoHandler(c) => c,
        }
    }
}

impl<C> fmt::Debug for EnqueueError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnqueueError::Full(_) => f.write_str("Full(..)"),
            EnqueueError::NoHandler(_) => f.write_str("NoHandler(..)"),
        }
    }
}

impl<C> fmt::Display for EnqueueError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnqueueError::Full(_) => f.write_str("the command queue is full"),
            EnqueueError::NoHandler(_) => {
                write!(f, "no handler is registered for `{}`", type_name::<C>())
            }
        }
    }
}

impl<C> Error for EnqueueError<C> {}

/// What happened to one attempt at a command, in the order the attempts committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The command's id, as `enqueue` returned it.
    pub id: u64,
    /// The command's type name.
    pub command_type: &'static str,
    /// Which attempt this was, from 1.
    pub attempt: u32,
    /// How it ended.
    pub kind: OutcomeKind,
}

/// How an attempt at a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    /// The handler committed.
    Processed,
    /// The handler failed; the command went to the back of the queue.
    Retried {
        /// The handler's error or panic message.
        error: Arc<str>,
    },
    /// The handler failed for the last allowed time; the command is in the dead-letter list.
    DeadLettered {
        /// The handler's error or panic message.
        error: Arc<str>,
    },
}

/// Counts of outcomes since the queue was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Commands whose handler committed.
    pub processed: u64,
    /// Failed attempts followed by another try.
    pub retried: u64,
    /// Commands that ran out of attempts.
    pub dead_lettered: u64,
}

/// A command that ran out of attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The command's id.
    pub id: u64,
    /// The command's type name.
    pub command_type: &'static str,
    /// How many attempts failed.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: Arc<str>,
}

/// Builds a [`CommandQueue`]: its capacity, retry limit and handlers, fixed at start-up.
pub struct CommandQueueBuilder {
    capacity: usize,
    max_attempts: u32,
    log_capacity: usize,
    handlers: HashMap<TypeId, Handler>,
}

impl CommandQueue {
    /// A builder with capacity 1,024, 3 attempts per command and a 1,024-entry outcome log.
    ///
    /// ```
    /// use mvstm::lifecycle::CommandQueue;
    /// struct Ping;
    /// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
    /// assert!(queue.is_empty());
    /// ```
    pub fn builder() -> CommandQueueBuilder {
        CommandQueueBuilder {
            capacity: 1024,
            max_attempts: 3,
            log_capacity: 1024,
            handlers: HashMap::new(),
        }
    }

    /// Enqueue `command`; returns its id. Never blocks: a full queue gives the command back.
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, EnqueueError};
    /// struct Ping;
    /// let queue = CommandQueue::builder().capacity(1).handler(|_tx, _: &Ping| Ok(())).build();
    /// let id = queue.enqueue(Ping).unwrap();
    /// assert_eq!(id, 1);
    /// // Full: the command is given back at once instead of blocking.
    /// assert!(matches!(queue.enqueue(Ping), Err(EnqueueError::Full(Ping))));
    /// ```
    pub fn enqueue<C: Send + 'static>(&self, command: C) -> Result<u64, EnqueueError<C>> {
        let job = self.shared.job(command)?;
        let pushed = atomically(|tx| self.shared.queue.try_push(tx, job.clone()));
        match pushed {
            Ok(()) => Ok(job.envelope.id),
            Err(Full(job)) => Err(EnqueueError::Full(job.take_command())),
        }
    }

    /// Enqueue `command` as part of the caller's transaction: it is in the queue if and only if
    /// `tx` commits.
    ///
    /// ```
    /// use mvstm::lifecycle::CommandQueue;
    /// use mvstm::{atomically, TVar};
    /// struct Audit(&'static str);
    /// let queue = CommandQueue::builder().handler(|_tx, _: &Audit| Ok(())).build();
    /// let stock = TVar::new(1u32);
    /// // Take the last item and queue its audit record atomically.
    /// let id = atomically(|tx| {
    ///     tx.modify(&stock, |n| n - 1)?;
    ///     Ok(queue.enqueue_in(tx, Audit("sold")).ok())
    /// });
    /// assert!(id.is_some() && queue.len() == 1);
    /// ```
    pub fn enqueue_in<C: Send + 'static>(
        &self,
        tx: &mut Txn,
        command: C,
    ) -> StmResult<Result<u64, EnqueueError<C>>> {
        let job = match self.shared.job(command) {
            Ok(job) => job,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(match self.shared.queue.try_push(tx, job.clone())? {
            Ok(()) => Ok(job.envelope.id),
            Err(Full(job)) => Err(EnqueueError::Full(job.take_command())),
        })
    }

    /// The processor: start it to handle commands, stop it to pause (queued commands stay).
    /// Every call returns the same lifecycle, so one processor runs at most.
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, State};
    /// use std::time::Duration;
    /// struct Ping;
    /// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
    /// queue.enqueue(Ping).unwrap();
    /// queue.processor().start().unwrap();
    /// assert!(queue.processor().start().is_err()); // the same lifecycle: one processor at most
    /// assert!(queue.wait_idle(Duration::from_secs(10)));
    /// queue.processor().stop().unwrap();
    /// assert_eq!(queue.processor().state(), State::Stopped);
    /// ```
    pub fn processor(&self) -> Lifecycle<Processor> {
        self.processor.clone()
    }

    /// Commands waiting, including one being handled.
    ///
    /// ```
    /// use mvstm::lifecycle::CommandQueue;
    /// struct Ping;
    /// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
    /// queue.enqueue(Ping).unwrap();
    /// queue.enqueue(Ping).unwrap();
    /// assert_eq!(queue.len(), 2); // the processor is not started
    /// ```
    pub fn len(&self) -> usize {
        atomically(|tx| self.shared.queue.len(tx))
    }

    /// No command is waiting or being handled.
    ///
    /// ```
    /// use mvstm::lifecycle::CommandQueue;
    /// struct Ping;
    /// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
    /// assert!(queue.is_empty());
    /// queue.enqueue(Ping).unwrap();
    /// assert!(!queue.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Block until the queue is empty (every command processed or dead-lettered, and logged), for
    /// at most `timeout`; `false` if it was not.
    ///
    /// ```
    /// use mvstm::lifecycle::CommandQueue;
    /// use std::time::Duration;
    /// struct Ping;
    /// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
    /// queue.enqueue(Ping).unwrap();
    /// assert!(!queue.wait_idle(Duration::from_millis(10))); // no processor running
    /// queue.processor().start().unwrap();
    /// assert!(queue.wait_idle(Duration::from_secs(10)));
    /// queue.processor().stop().unwrap();
    /// ```
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        atomically(|tx| {
            if self.shared.queue.is_empty(tx)? {
                return Ok(true);
            }
            tx.retry_for(timeout)?;
            Ok(false)
        })
    }

    /// The most recent outcomes, oldest first (bounded; see
    /// [`CommandQueueBuilder::outcome_log`]).
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, OutcomeKind};
    /// use std::time::Duration;
    /// struct Ping;
    /// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
    /// let id = queue.enqueue(Ping).unwrap();
    /// queue.processor().start().unwrap();
    /// assert!(queue.wait_idle(Duration::from_secs(10)));
    /// queue.processor().stop().unwrap();
    /// let outcomes = queue.outcomes();
    /// assert_eq!((outcomes[0].id, outcomes[0].attempt), (id, 1));
    /// assert_eq!(outcomes[0].kind, OutcomeKind::Processed);
    /// ```
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.shared.log.lock().recent.iter().cloned().collect()
    }

    /// Counts of all outcomes so far.
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, HandlerError, Stats};
    /// use std::time::Duration;
    /// struct Job(bool);
    /// let queue = CommandQueue::builder()
    ///     .max_attempts(2)
    ///     .handler(|tx, job: &Job| match job.0 {
    ///         true => Ok(()),
    ///         false => tx.abort(HandlerError::new("bad job")),
    ///     })
    ///     .build();
    /// queue.enqueue(Job(true)).unwrap();
    /// queue.enqueue(Job(false)).unwrap();
    /// queue.processor().start().unwrap();
    /// assert!(queue.wait_idle(Duration::from_secs(10)));
    /// queue.processor().stop().unwrap();
    /// assert_eq!(queue.stats(), Stats { processed: 1, retried: 1, dead_lettered: 1 });
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.log.lock().stats
    }

    /// The commands in the dead-letter list, oldest first.
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, HandlerError};
    /// use std::time::Duration;
    /// struct Job;
    /// let queue = CommandQueue::builder()
    ///     .max_attempts(1)
    ///     .handler(|tx, _: &Job| tx.abort(HandlerError::new("downstream unavailable")))
    ///     .build();
    /// queue.enqueue(Job).unwrap();
    /// queue.processor().start().unwrap();
    /// assert!(queue.wait_idle(Duration::from_secs(10)));
    /// queue.processor().stop().unwrap();
    /// let dead = queue.dead_letters();
    /// assert_eq!((dead[0].attempts, &*dead[0].error), (1, "downstream unavailable"));
    /// ```
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.shared
            .dead
            .load()
            .iter()
            .map(Job::dead_letter)
            .collect()
    }

    /// Empty the dead-letter list, giving the commands back (downcast them to their types).
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, HandlerError};
    /// use std::time::Duration;
    /// struct Charge(u64);
    /// let queue = CommandQueue::builder()
    ///     .max_attempts(1)
    ///     .handler(|tx, _: &Charge| tx.abort(HandlerError::new("card declined")))
    ///     .build();
    /// queue.enqueue(Charge(250)).unwrap();
    /// queue.processor().start().unwrap();
    /// assert!(queue.wait_idle(Duration::from_secs(10)));
    /// queue.processor().stop().unwrap();
    /// let (letter, command) = queue.take_dead_letters().pop().unwrap();
    /// assert_eq!(&*letter.error, "card declined");
    /// assert_eq!(command.downcast::<Charge>().unwrap().0, 250); // the command itself, back
    /// assert!(queue.dead_letters().is_empty());
    /// ```
    pub fn take_dead_letters(&self) -> Vec<(DeadLetter, Box<dyn Any + Send>)> {
        let jobs = atomically(|tx| tx.replace(&self.shared.dead, Arc::new(Vec::new())));
        jobs.iter()
            .map(|job| (job.dead_letter(), job.envelope.take()))
            .collect()
    }
}

impl CommandQueueBuilder {
    /// How many commands the queue holds before `enqueue` refuses (at least 1).
    ///
    /// ```
    /// use mvstm::lifecycle::CommandQueue;
    /// struct Ping;
    /// let queue = CommandQueue::builder().capacity(2).handler(|_tx, _: &Ping| Ok(())).build();
    /// queue.enqueue(Ping).unwrap();
    /// queue.enqueue(Ping).unwrap();
    /// assert!(queue.enqueue(Ping).is_err()); // full
    /// ```
    #[track_caller]
    pub fn capacity(mut self, capacity: usize) -> Self {
        assert!(capacity > 0, "CommandQueue capacity must be at least 1");
        self.capacity = capacity;
        self
    }

    /// How many attempts a command gets before it is dead-lettered (at least 1).
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, HandlerError};
    /// use std::time::Duration;
    /// struct Job;
    /// let queue = CommandQueue::builder()
    ///     .max_attempts(4)
    ///     .handler(|tx, _: &Job| tx.abort(HandlerError::new("always fails")))
    ///     .build();
    /// queue.enqueue(Job).unwrap();
    /// queue.processor().start().unwrap();
    /// assert!(queue.wait_idle(Duration::from_secs(10)));
    /// queue.processor().stop().unwrap();
    /// assert_eq!(queue.dead_letters()[0].attempts, 4);
    /// ```
    #[track_caller]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        assert!(attempts > 0, "CommandQueue max_attempts must be at least 1");
        self.max_attempts = attempts;
        self
    }

    /// How many outcomes the log keeps (the counts in [`CommandQueue::stats`] are not bounded).
    ///
    /// ```
    /// use mvstm::lifecycle::CommandQueue;
    /// use std::time::Duration;
    /// struct Ping;
    /// let queue = CommandQueue::builder().outcome_log(2).handler(|_tx, _: &Ping| Ok(())).build();
    /// for _ in 0..5 {
    ///     queue.enqueue(Ping).unwrap();
    /// }
    /// queue.processor().start().unwrap();
    /// assert!(queue.wait_idle(Duration::from_secs(10)));
    /// queue.processor().stop().unwrap();
    /// assert_eq!(queue.outcomes().len(), 2); // the last two
    /// assert_eq!(queue.stats().processed, 5); // counts are not bounded
    /// ```
    pub fn outcome_log(mut self, capacity: usize) -> Self {
        self.log_capacity = capacity;
        self
    }

    /// Handle commands of type `C` with `handler`, inside the transaction that dequeues them.
    ///
    /// The handler may run more than once per attempt (a conflict re-runs its transaction), so
    /// it changes state through `tx` and puts side effects in `tx.after_commit`. To fail, it
    /// aborts with a [`HandlerError`]; a panic counts as a failure too. A handler may `retry`
    /// to wait for a condition: the processor waits with it (handlers run one at a time), and a
    /// stop of the processor wakes it and leaves the command queued.
    ///
    /// # Panics
    ///
    /// If a handler for `C` is already registered.
    ///
    /// ```
    /// use mvstm::lifecycle::CommandQueue;
    /// use mvstm::TVar;
    /// use std::time::Duration;
    /// struct Add(u64);
    /// struct Reset;
    /// let total = TVar::new(0u64);
    /// let (t1, t2) = (total.clone(), total.clone());
    /// let queue = CommandQueue::builder()
    ///     .handler(move |tx, add: &Add| tx.modify(&t1, |n| n + add.0))
    ///     .handler(move |tx, _: &Reset| tx.write(&t2, 0))
    ///     .build();
    /// queue.enqueue(Add(2)).unwrap();
    /// queue.enqueue(Reset).unwrap();
    /// queue.enqueue(Add(5)).unwrap();
    /// queue.processor().start().unwrap();
    /// assert!(queue.wait_idle(Duration::from_secs(10)));
    /// queue.processor().stop().unwrap();
    /// assert_eq!(total.load(), 5); // handled one at a time, in order
    /// ```
    #[track_caller]
    pub fn handler<C: Send + 'static>(
        mut self,
        handler: impl Fn(&mut Txn, &C) -> StmResult<()> + Send + Sync + 'static,
    ) -> Self {
        let erased: Handler = Box::new(move |tx, command| {
            let command = command
                .downcast_ref::<C>()
                .expect("commands are routed by their TypeId");
            handler(tx, command)
        });
        let previous = self.handlers.insert(TypeId::of::<C>(), erased);
        assert!(
            previous.is_none(),
            "a handler for `{}` is already registered",
            type_name::<C>()
        );
        self
    }

    /// The queue, with its processor stopped.
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, State};
    /// struct Ping;
    /// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
    /// assert_eq!(queue.processor().state(), State::Stopped); // start it to handle commands
    /// ```
    pub fn build(self) -> CommandQueue {
        let shared = Arc::new(Shared {
            queue: TBQueue::new(self.capacity),
            dead: TVar::new(Arc::new(Vec::new())),
            handlers: self.handlers,
            max_attempts: self.max_attempts,
            log: Mutex::new(Log::default()),
            log_capacity: self.log_capacity,
            next_id: AtomicU64::new(1),
        });
        let processor = Lifecycle::new(Processor {
            shared: Arc::clone(&shared),
        });
        CommandQueue { shared, processor }
    }
}

impl Shared {
    fn job<C: Send + 'static>(&self, command: C) -> Result<Job, EnqueueError<C>> {
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
    fn process(self: &Arc<Self>, job: Job, stop: &TVar<bool>) -> bool {
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
    fn take_command<C: 'static>(self) -> C {
        *self
            .envelope
            .take()
            .downcast::<C>()
            .unwrap_or_else(|_| unreachable!("the envelope was made for this type"))
    }

    fn dead_letter(&self) -> DeadLetter {
        DeadLetter {
            id: self.envelope.id,
            command_type: self.envelope.command_type,
            attempts: self.failed,
            error: self.last_error.clone().unwrap_or_else(|| "".into()),
        }
    }
}

impl Envelope {
    fn take(&self) -> Box<dyn Any + Send> {
        self.command
            .lock()
            .take()
            .expect("a command is taken out of its envelope once")
    }
}

/// The service that drains a [`CommandQueue`]: one thread, one handler at a time. Get it from
/// [`CommandQueue::processor`].
pub struct Processor {
    shared: Arc<Shared>,
}

/// A running processor: its thread and the flag that asks it to finish.
pub struct RunningProcessor {
    stop: TVar<bool>,
    /// `None` only once `stop` took it to join.
    thread: Option<JoinHandle<()>>,
}

/// Why the processor could not start or stop.
#[derive(Debug)]
pub enum ProcessorError {
    /// The thread could not be spawned.
    Spawn(std::io::Error),
    /// The processor thread panicked outside any handler (a bug in mvstm-lifecycle).
    Panicked(String),
}

impl fmt::Display for ProcessorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessorError::Spawn(e) => write!(f, "cannot spawn the processor thread: {e}"),
            ProcessorError::Panicked(m) => write!(f, "the processor thread panicked: {m}"),
        }
    }
}

impl Error for ProcessorError {}

impl Service for Processor {
    type Running = RunningProcessor;
    type Error = ProcessorError;

    fn start(&self) -> Result<RunningProcessor, ProcessorError> {
        let stop = TVar::new(false);
        let (shared, flag) = (Arc::clone(&self.shared), stop.clone());
        let thread = thread::Builder::new()
            .name("mvstm-command-processor".into())
            .spawn(move || loop {
                // Wait for a command or the stop flag, whichever comes first.
                let next = atomically(|tx| {
                    if tx.read(&flag)? {
                        return Ok(None);
                    }
                    shared.queue.peek(tx).map(Some)
                });
                let handled = next.is_some_and(|job| shared.process(job, &flag));
                if !handled {
                    return;
                }
            })
            .map_err(ProcessorError::Spawn)?;
        Ok(RunningProcessor {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&self, mut running: RunningProcessor) -> Result<(), ProcessorError> {
        atomically(|tx| tx.write(&running.stop, true));
        let thread = running
            .thread
            .take()
            .expect("a running processor has its thread");
        thread
            .join()
            .map_err(|panic| ProcessorError::Panicked(panic_message(&*panic)))
    }
}

impl Drop for RunningProcessor {
    /// A running processor dropped without `stop` (its lifecycle's last handle went away): ask
    /// its thread to finish, so it does not wait on an unreachable queue forever. Inside a
    /// transaction that cannot be done (no transaction can start there): the thread is left.
    fn drop(&mut self) {
        let stop = &self.stop;
        let _ = catch_unwind(AssertUnwindSafe(|| atomically(|tx| tx.write(stop, true))));
    }
}

impl fmt::Debug for CommandQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandQueue")
            .field("len", &self.len())
            .field("stats", &self.stats())
            .field("processor", &self.processor.state())
            .finish()
    }
}
