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
//! One processor runs every handler, so handlers never race each other; the processor is a
//! `Service` under one `Lifecycle`, so it never runs twice.
//!
//! # Async handlers and the async processor (feature `async`)
//!
//! An async handler cannot run inside a transaction (a body cannot await), so its attempt is:
//! await the handler on a clone of the command, then, in the same poll, dequeue and log it in a
//! transaction of its own if it returned `Ok`, or take the failure path above. Its effects are
//! therefore not rolled back by a failure, and a processor dropped mid-handler leaves the
//! command at the head to run again: at least once for its effects, exactly once for its
//! outcome. Async handlers run in the `AsyncProcessor`, a task spawned by the builder's
//! spawner, which runs blocking handlers too (in `try_atomically_async`).
//!
//! Both kinds of processor take the queue's *seat* (the `seated` TVar) before their first
//! command and give it back when they end, however they end, so two processors (a thread and a
//! task, or a stopped task still finishing its last handler and a new one) never handle at once.
//!
//! Files: `queue.rs` (the API and the builder), `outcome.rs` (what is reported), `handling.rs`
//! (one attempt, the retry-or-dead-letter policy, the seat), `processor.rs` (the thread),
//! `async_processor.rs` (the task).

#[cfg(feature = "async")]
mod async_processor;
mod handling;
mod outcome;
mod processor;
mod queue;

#[cfg(feature = "async")]
pub use async_processor::{AsyncProcessor, RunningAsyncProcessor};
pub use outcome::{DeadLetter, EnqueueError, HandlerError, Outcome, OutcomeKind, Stats};
pub use processor::{Processor, ProcessorError, RunningProcessor};
pub use queue::{CommandQueue, CommandQueueBuilder};

use mvstm_collections::TBQueue;
use mvstm_core::{StmResult, TVar, Txn};
use parking_lot::Mutex;
use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

struct Shared {
    queue: TBQueue<Job>,
    dead: TVar<Arc<Vec<Job>>>,
    handlers: HashMap<TypeId, Handler>,
    max_attempts: u32,
    log: Mutex<Log>,
    log_capacity: usize,
    next_id: AtomicU64,
    /// Whether a processor (thread or task) is handling commands: taken by a processor before
    /// its first command, given back when it ends, so handlers never overlap even when both
    /// kinds of processor were started, or a stopped one is still finishing its last handler.
    seated: TVar<bool>,
    /// Spawns the async processor's task (`CommandQueueBuilder::spawner`).
    #[cfg(feature = "async")]
    spawner: Option<Spawner>,
}

/// A handler, with the command's type erased (it is downcast back by the handler's wrapper).
enum Handler {
    /// Runs inside the transaction that dequeues the command.
    Sync(SyncHandler),
    /// Makes the future of one attempt from a clone of the command.
    #[cfg(feature = "async")]
    Async(AsyncHandler),
}

type SyncHandler = Box<dyn Fn(&mut Txn, &(dyn Any + Send)) -> StmResult<()> + Send + Sync>;

#[cfg(feature = "async")]
type AsyncHandler = Box<dyn Fn(&(dyn Any + Send)) -> HandlerFuture + Send + Sync>;

/// One attempt of an async handler.
#[cfg(feature = "async")]
type HandlerFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), outcome::HandlerError>> + Send + 'static>,
>;

/// What `CommandQueueBuilder::spawner` stores: hands the async processor's task to an executor.
#[cfg(feature = "async")]
type Spawner = Box<dyn Fn(ProcessorTask) + Send + Sync>;

/// The async processor's task, as a spawner receives it.
#[cfg(feature = "async")]
type ProcessorTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

impl Shared {
    /// Whether some handler is async, which only the async processor can run.
    fn has_async_handlers(&self) -> bool {
        #[cfg(feature = "async")]
        return self
            .handlers
            .values()
            .any(|handler| matches!(handler, Handler::Async(_)));
        #[cfg(not(feature = "async"))]
        false
    }
}

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
