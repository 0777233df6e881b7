//! `CommandQueue` and its builder: the API producers, operators and the processor's owner use.

use super::outcome::{DeadLetter, EnqueueError, Outcome, Stats};
use super::processor::Processor;
use super::{Handler, Job, Log, Shared};
use crate::lifecycle::Lifecycle;
use mvstm_collections::{Full, TBQueue};
use mvstm_core::{atomically, StmResult, TVar, Txn};
use parking_lot::Mutex;
use std::any::{type_name, Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
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

impl fmt::Debug for CommandQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandQueue")
            .field("len", &self.len())
            .field("stats", &self.stats())
            .field("processor", &self.processor.state())
            .finish()
    }
}
