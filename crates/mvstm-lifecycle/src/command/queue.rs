//! `CommandQueue` and its builder: the API producers, operators and the processor's owner use.

#[cfg(feature = "async")]
use super::async_processor::AsyncProcessor;
#[cfg(feature = "async")]
use super::outcome::HandlerError;
use super::outcome::{DeadLetter, EnqueueError, Outcome, Stats};
use super::processor::Processor;
use super::{Handler, Job, Log, Shared};
#[cfg(feature = "async")]
use super::{HandlerFuture, Spawner};
#[cfg(feature = "async")]
use crate::async_lifecycle::AsyncLifecycle;
use crate::lifecycle::Lifecycle;
use mvstm_collections::{Full, TBQueue};
#[cfg(feature = "async")]
use mvstm_core::atomically_async;
use mvstm_core::{atomically, StmResult, TVar, Txn};
use parking_lot::Mutex;
use std::any::{type_name, Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
#[cfg(feature = "async")]
use std::{future::Future, pin::Pin};

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
    #[cfg(feature = "async")]
    async_processor: AsyncLifecycle<AsyncProcessor>,
}

/// Builds a [`CommandQueue`]: its capacity, retry limit and handlers, fixed at start-up.
pub struct CommandQueueBuilder {
    capacity: usize,
    max_attempts: u32,
    log_capacity: usize,
    handlers: HashMap<TypeId, Handler>,
    #[cfg(feature = "async")]
    spawner: Option<Spawner>,
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
            #[cfg(feature = "async")]
            spawner: None,
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
    /// Every call returns the same lifecycle, so one processor runs at most. It runs on a thread
    /// of its own; a queue with async handlers is processed by
    /// [`async_processor`](CommandQueue::async_processor) instead (this one refuses to start,
    /// with [`ProcessorError::AsyncHandlers`](crate::ProcessorError::AsyncHandlers)).
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
        atomically(|tx| self.shared.wait_idle(tx, timeout))
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

/// The async face: waiting without blocking a thread, and the processor that runs as a task.
#[cfg(feature = "async")]
impl CommandQueue {
    /// Enqueue `command`, waiting asynchronously while the queue is full (as a bounded
    /// channel's `send().await` does); returns its id. Refused at once, with the command, only
    /// if no handler takes its type.
    ///
    /// Dropped while it waits, the command is dropped with it and was never enqueued (its id
    /// is not reused). A thread's [`enqueue`](CommandQueue::enqueue) and a task's
    /// `enqueue_async` feed the same queue; a dequeue from either kind of processor wakes the
    /// waiting task.
    ///
    /// ```
    /// use mvstm::lifecycle::CommandQueue;
    /// struct Ping;
    /// let queue = CommandQueue::builder().capacity(1).handler(|_tx, _: &Ping| Ok(())).build();
    /// queue.enqueue(Ping).unwrap(); // full now
    /// queue.processor().start().unwrap(); // frees the slot soon
    /// let id = futures::executor::block_on(queue.enqueue_async(Ping)).unwrap();
    /// assert_eq!(id, 2);
    /// assert!(queue.wait_idle(std::time::Duration::from_secs(10)));
    /// queue.processor().stop().unwrap();
    /// assert_eq!(queue.stats().processed, 2);
    /// ```
    pub async fn enqueue_async<C: Send + 'static>(
        &self,
        command: C,
    ) -> Result<u64, EnqueueError<C>> {
        let job = self.shared.job(command)?;
        atomically_async(|tx| self.shared.queue.push(tx, job.clone())).await;
        Ok(job.envelope.id)
    }

    /// Wait until the queue is empty (every command processed or dead-lettered, and logged),
    /// for at most `timeout`, without blocking a thread; `false` if it was not. The async
    /// counterpart of [`wait_idle`](CommandQueue::wait_idle); dropping it withdraws the wait.
    ///
    /// ```
    /// use mvstm::lifecycle::CommandQueue;
    /// use std::time::Duration;
    /// struct Ping;
    /// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
    /// queue.enqueue(Ping).unwrap();
    /// futures::executor::block_on(async {
    ///     assert!(!queue.wait_idle_async(Duration::from_millis(10)).await); // nothing processes
    ///     queue.processor().start().unwrap();
    ///     assert!(queue.wait_idle_async(Duration::from_secs(10)).await);
    /// });
    /// queue.processor().stop().unwrap();
    /// ```
    pub async fn wait_idle_async(&self, timeout: Duration) -> bool {
        atomically_async(|tx| self.shared.wait_idle(tx, timeout)).await
    }

    /// The async processor: the same serial handling, retries, dead letters and log as
    /// [`processor`](CommandQueue::processor), run as a task on the caller's executor (spawned
    /// with the builder's [`spawner`](CommandQueueBuilder::spawner)) instead of a thread. It
    /// runs both kinds of handler: a blocking one inside the dequeuing transaction, whose
    /// `retry` now waits without blocking a thread, and an async one awaited (see
    /// [`handler_async`](CommandQueueBuilder::handler_async)). Every call returns the same
    /// lifecycle.
    ///
    /// `stop` asks the task to finish and waits, asynchronously, until it has: a handler
    /// waiting in `retry` is woken and its command stays queued; an async handler in progress
    /// runs to its end first and its outcome is recorded. One processor handles commands at a
    /// time, whichever kind: started while the other kind runs (or while a stopped one still
    /// finishes its last handler), it waits for it to end before it takes the first command.
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, HandlerError, State};
    /// use std::time::Duration;
    /// #[derive(Clone)]
    /// struct Fetch(&'static str);
    /// let queue = CommandQueue::builder()
    ///     .handler_async(|fetch: Fetch| async move {
    ///         match fetch.0 {
    ///             "" => Err(HandlerError::new("empty url")),
    ///             _ => Ok(()), // e.g. an HTTP request
    ///         }
    ///     })
    ///     // Any executor: here a thread per task; with tokio, `tokio::spawn(task)`.
    ///     .spawner(|task| {
    ///         std::thread::spawn(move || futures::executor::block_on(task));
    ///     })
    ///     .max_attempts(1)
    ///     .build();
    /// queue.enqueue(Fetch("http://127.0.0.1/")).unwrap();
    /// queue.enqueue(Fetch("")).unwrap();
    /// futures::executor::block_on(async {
    ///     queue.async_processor().start().await.unwrap();
    ///     assert!(queue.wait_idle_async(Duration::from_secs(10)).await);
    ///     queue.async_processor().stop().await.unwrap();
    /// });
    /// assert_eq!(queue.async_processor().state(), State::Stopped);
    /// assert_eq!((queue.stats().processed, queue.stats().dead_lettered), (1, 1));
    /// ```
    pub fn async_processor(&self) -> AsyncLifecycle<AsyncProcessor> {
        self.async_processor.clone()
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
        self,
        handler: impl Fn(&mut Txn, &C) -> StmResult<()> + Send + Sync + 'static,
    ) -> Self {
        let erased = Handler::Sync(Box::new(move |tx, command| {
            let command = command
                .downcast_ref::<C>()
                .expect("commands are routed by their TypeId");
            handler(tx, command)
        }));
        self.add_handler::<C>(erased)
    }

    #[track_caller]
    fn add_handler<C: 'static>(mut self, handler: Handler) -> Self {
        let previous = self.handlers.insert(TypeId::of::<C>(), handler);
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
    ///
    /// # Panics
    ///
    /// If an async handler was registered ([`handler_async`](CommandQueueBuilder::handler_async))
    /// without a [`spawner`](CommandQueueBuilder::spawner): nothing could run it.
    #[track_caller]
    pub fn build(self) -> CommandQueue {
        let shared = Arc::new(Shared {
            queue: TBQueue::new(self.capacity),
            dead: TVar::new(Arc::new(Vec::new())),
            handlers: self.handlers,
            max_attempts: self.max_attempts,
            log: Mutex::new(Log::default()),
            log_capacity: self.log_capacity,
            next_id: AtomicU64::new(1),
            seated: TVar::new(false),
            #[cfg(feature = "async")]
            spawner: self.spawner,
        });
        #[cfg(feature = "async")]
        assert!(
            shared.spawner.is_some() || !shared.has_async_handlers(),
            "CommandQueueBuilder::build: an async handler needs a spawner to run the async \
             processor's task on, e.g. `.spawner(|task| {{ tokio::spawn(task); }})`"
        );
        let processor = Lifecycle::new(Processor {
            shared: Arc::clone(&shared),
        });
        CommandQueue {
            #[cfg(feature = "async")]
            async_processor: AsyncLifecycle::new(AsyncProcessor {
                shared: Arc::clone(&shared),
            }),
            shared,
            processor,
        }
    }
}

#[cfg(feature = "async")]
impl CommandQueueBuilder {
    /// Handle commands of type `C` with an async `handler`, run by the
    /// [`async processor`](CommandQueue::async_processor): one command at a time, in queue
    /// order together with the blocking handlers, with the same bounded retries, dead-letter
    /// list and outcome log. Needs a [`spawner`](CommandQueueBuilder::spawner).
    ///
    /// Each attempt gets its own clone of the command (so `C: Clone`; wrap a large command in
    /// an `Arc`). An async handler does not run inside a transaction: its effects are not
    /// rolled back when it fails, so make them idempotent or fail before acting. The command
    /// is dequeued, and logged as processed, by a transaction that commits once the handler's
    /// future returned `Ok(())`; `Err(HandlerError)` or a panic counts as a failed attempt.
    /// To change TVars, call `atomically` (or `atomically_async`) from the handler.
    ///
    /// # Panics
    ///
    /// If a handler for `C` is already registered.
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, HandlerError};
    /// use mvstm::{atomically, TVar};
    /// use std::time::Duration;
    /// #[derive(Clone)]
    /// struct Credit(u64);
    /// let balance = TVar::new(0u64);
    /// let queue = CommandQueue::builder()
    ///     .handler_async({
    ///         let balance = balance.clone();
    ///         move |credit: Credit| {
    ///             let balance = balance.clone();
    ///             async move {
    ///                 if credit.0 == 0 {
    ///                     return Err(HandlerError::new("nothing to credit"));
    ///                 }
    ///                 // ...an await on a remote ledger would go here...
    ///                 atomically(|tx| tx.modify(&balance, |b| b + credit.0));
    ///                 Ok(())
    ///             }
    ///         }
    ///     })
    ///     .spawner(|task| {
    ///         std::thread::spawn(move || futures::executor::block_on(task));
    ///     })
    ///     .build();
    /// queue.enqueue(Credit(7)).unwrap();
    /// queue.enqueue(Credit(0)).unwrap();
    /// futures::executor::block_on(async {
    ///     queue.async_processor().start().await.unwrap();
    ///     assert!(queue.wait_idle_async(Duration::from_secs(10)).await);
    ///     queue.async_processor().stop().await.unwrap();
    /// });
    /// assert_eq!(balance.load(), 7);
    /// assert_eq!(queue.dead_letters()[0].attempts, 3); // the default max_attempts
    /// ```
    #[track_caller]
    pub fn handler_async<C, F, Fut>(self, handler: F) -> Self
    where
        C: Clone + Send + 'static,
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let erased = Handler::Async(Box::new(move |command| -> HandlerFuture {
            let command = command
                .downcast_ref::<C>()
                .expect("commands are routed by their TypeId")
                .clone();
            Box::pin(handler(command))
        }));
        self.add_handler::<C>(erased)
    }

    /// How the [`async processor`](CommandQueue::async_processor) runs: `spawn` is given its
    /// task when it starts, and must run it to completion or drop it (never keep it unpolled),
    /// e.g. `|task| { tokio::spawn(task); }`. The library depends on no executor; this is the
    /// one place it needs one.
    ///
    /// ```
    /// use mvstm::lifecycle::{CommandQueue, State};
    /// use std::time::Duration;
    /// struct Ping;
    /// let queue = CommandQueue::builder()
    ///     .handler(|_tx, _: &Ping| Ok(()))
    ///     .spawner(|task| {
    ///         std::thread::spawn(move || futures::executor::block_on(task));
    ///     })
    ///     .build();
    /// queue.enqueue(Ping).unwrap();
    /// futures::executor::block_on(queue.async_processor().start()).unwrap();
    /// assert!(queue.wait_idle(Duration::from_secs(10)));
    /// futures::executor::block_on(queue.async_processor().stop()).unwrap();
    /// assert_eq!(queue.async_processor().state(), State::Stopped);
    /// ```
    pub fn spawner(
        mut self,
        spawn: impl Fn(Pin<Box<dyn Future<Output = ()> + Send + 'static>>) + Send + Sync + 'static,
    ) -> Self {
        self.spawner = Some(Box::new(spawn));
        self
    }
}

impl fmt::Debug for CommandQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("CommandQueue");
        f.field("len", &self.len())
            .field("stats", &self.stats())
            .field("processor", &self.processor.state());
        #[cfg(feature = "async")]
        f.field("async_processor", &self.async_processor.state());
        f.finish()
    }
}
