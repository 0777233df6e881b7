//! `Processor`: the service that drains a queue on a thread of its own.

use super::Shared;
use crate::error::panic_message;
use crate::lifecycle::Service;
use mvstm_core::{atomically, TVar};
use std::error::Error;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// The service that drains a [`CommandQueue`](crate::CommandQueue) on a thread of its own, one handler at a time.
/// Get it from [`CommandQueue::processor`](crate::CommandQueue::processor). (Its async counterpart, for a queue with async
/// handlers or a process that runs everything on an executor, is
/// [`CommandQueue::async_processor`](crate::CommandQueue::async_processor).)
///
/// ```
/// use mvstm::lifecycle::{CommandQueue, Lifecycle, Processor, State};
/// struct Ping;
/// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
/// let processor: Lifecycle<Processor> = queue.processor();
/// processor.start().unwrap(); // spawns the thread
/// assert_eq!(processor.state(), State::Running);
/// processor.stop().unwrap(); // asks it to finish and joins it
/// ```
pub struct Processor {
    pub(super) shared: Arc<Shared>,
}

/// A running processor: its thread and the flag that asks it to finish. The lifecycle keeps it;
/// [`Lifecycle::with_running`](crate::Lifecycle::with_running) lends it.
///
/// ```
/// use mvstm::lifecycle::{CommandQueue, RunningProcessor};
/// struct Ping;
/// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
/// queue.processor().start().unwrap();
/// let lent = queue.processor().with_running(|_: &RunningProcessor| "running");
/// assert_eq!(lent, Some("running"));
/// queue.processor().stop().unwrap();
/// ```
pub struct RunningProcessor {
    stop: TVar<bool>,
    /// `None` only once `stop` took it to join.
    thread: Option<JoinHandle<()>>,
}

/// Why a processor could not start or stop.
///
/// ```
/// use mvstm::lifecycle::{CommandQueue, LifecycleError, ProcessorError};
/// struct Ping;
/// let queue = CommandQueue::builder().handler(|_tx, _: &Ping| Ok(())).build();
/// // No spawner was given, so the async processor has nothing to run its task on.
/// let refused = futures::executor::block_on(queue.async_processor().start());
/// assert!(matches!(refused, Err(LifecycleError::Failed(ProcessorError::NoSpawner))));
/// ```
#[derive(Debug)]
pub enum ProcessorError {
    /// The thread could not be spawned.
    Spawn(std::io::Error),
    /// The processor thread or task panicked outside any handler (a bug in mvstm-lifecycle).
    Panicked(String),
    /// [`CommandQueue::processor`](crate::CommandQueue::processor) (a thread) cannot run the async handlers this queue has:
    /// start [`CommandQueue::async_processor`](crate::CommandQueue::async_processor) instead (feature `async`).
    AsyncHandlers,
    /// [`CommandQueue::async_processor`](crate::CommandQueue::async_processor) runs as a task, and the queue was built without
    /// [`CommandQueueBuilder::spawner`](crate::CommandQueueBuilder::spawner) to spawn it with (feature `async`).
    NoSpawner,
}

impl fmt::Display for ProcessorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessorError::Spawn(e) => write!(f, "cannot spawn the processor thread: {e}"),
            ProcessorError::Panicked(m) => write!(f, "the processor panicked: {m}"),
            ProcessorError::AsyncHandlers => f.write_str(
                "the queue has async handlers, which the processor thread cannot run: \
                 start its async_processor instead",
            ),
            ProcessorError::NoSpawner => f.write_str(
                "the queue was built without a spawner, so its async processor cannot run: \
                 give one with CommandQueueBuilder::spawner",
            ),
        }
    }
}

impl Error for ProcessorError {}

impl Service for Processor {
    type Running = RunningProcessor;
    type Error = ProcessorError;

    fn start(&self) -> Result<RunningProcessor, ProcessorError> {
        if self.shared.has_async_handlers() {
            return Err(ProcessorError::AsyncHandlers);
        }
        let stop = TVar::new(false);
        let (shared, flag) = (Arc::clone(&self.shared), stop.clone());
        let thread = thread::Builder::new()
            .name("mvstm-command-processor".into())
            .spawn(move || {
                // Wait for the seat if another processor holds it (a stopped async processor
                // finishing its last handler), or for the stop flag.
                if !atomically(|tx| shared.take_seat(tx, &flag)) {
                    return;
                }
                let _seat = Seat::taken(Arc::clone(&shared));
                loop {
                    // Wait for a command or the stop flag, whichever comes first.
                    let next = atomically(|tx| shared.next(tx, &flag));
                    let handled = next.is_some_and(|job| shared.process(job, &flag));
                    if !handled {
                        return;
                    }
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

/// A processor's seat, held from `take_seat` until the processor ends, however it ends (a
/// return, a panic, a task dropped by its executor): dropping it gives the seat back, so the
/// next processor can take it.
pub(super) struct Seat(Arc<Shared>);

impl Seat {
    /// The seat `take_seat` just took for this processor.
    pub(super) fn taken(shared: Arc<Shared>) -> Seat {
        Seat(shared)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let shared = &self.0;
        // Only a drop inside a transaction (a processor never ends there) could fail this.
        let _ = catch_unwind(AssertUnwindSafe(|| atomically(|tx| shared.leave_seat(tx))));
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
