//! `AsyncProcessor`: the service that drains a queue as a task on the caller's executor.
//!
//! The task takes the processor's seat (waiting while another processor holds it), then loops:
//! wait for a command or the stop flag (`atomically_async`), handle it (`process_async`). What
//! it holds between polls is its exit guard, the seat, and at most one attempt in progress:
//! the dequeuing transaction of a blocking handler (which publishes nothing until it commits)
//! or an async handler's future. Dropped at any await (its executor shut down, or aborted it),
//! the attempt is abandoned with nothing recorded (the command stays at the head, the attempt
//! is not counted), and the exit guard gives the seat back and records that the task ended,
//! which is what `stop` waits for. A panic of the task itself (not of a handler, whose panics
//! count as failed attempts) is caught, recorded and reported by `stop`.

use super::processor::ProcessorError;
use super::Shared;
use crate::async_lifecycle::{catch_unwind_future, AsyncService};
use crate::error::panic_message;
use mvstm_core::{atomically, atomically_async, retry, TVar};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// The service that drains a [`CommandQueue`](crate::CommandQueue) as a task on the caller's
/// executor, one handler at a time; it runs blocking and async handlers alike. Get it from
/// [`CommandQueue::async_processor`](crate::CommandQueue::async_processor); the builder's
/// [`spawner`](crate::CommandQueueBuilder::spawner) spawns its task.
///
/// ```
/// use mvstm::lifecycle::{AsyncLifecycle, AsyncProcessor, CommandQueue, State};
/// #[derive(Clone)]
/// struct Ping;
/// let queue = CommandQueue::builder()
///     .handler_async(|_: Ping| async { Ok(()) })
///     .spawner(|task| {
///         std::thread::spawn(move || futures::executor::block_on(task));
///     })
///     .build();
/// let processor: AsyncLifecycle<AsyncProcessor> = queue.async_processor();
/// futures::executor::block_on(async {
///     processor.start().await.unwrap(); // spawns the task
///     assert_eq!(processor.state(), State::Running);
///     processor.stop().await.unwrap(); // asks it to finish and waits until it has
/// });
/// assert_eq!(processor.state(), State::Stopped);
/// ```
pub struct AsyncProcessor {
    pub(super) shared: Arc<Shared>,
}

/// A running async processor: the flag that asks its task to finish, and the slot in which the
/// task records that it ended. The lifecycle keeps it; `stop` consumes it. Dropped without a
/// `stop` (the queue's last handle went away), it asks the task to finish.
///
/// ```
/// use mvstm::lifecycle::CommandQueue;
/// use std::sync::mpsc;
/// use std::time::Duration;
/// struct Ping;
/// let (ended, task_ended) = mpsc::channel();
/// let queue = CommandQueue::builder()
///     .handler(|_tx, _: &Ping| Ok(()))
///     .spawner(move |task| {
///         let ended = ended.clone();
///         std::thread::spawn(move || {
///             futures::executor::block_on(task);
///             ended.send(()).unwrap();
///         });
///     })
///     .build();
/// futures::executor::block_on(queue.async_processor().start()).unwrap();
/// drop(queue); // the last handle: its RunningAsyncProcessor asks the task to finish
/// task_ended.recv_timeout(Duration::from_secs(10)).unwrap();
/// ```
pub struct RunningAsyncProcessor {
    stop: TVar<bool>,
    ended: TVar<Option<Ending>>,
}

/// How the processor's task ended.
#[derive(Clone)]
enum Ending {
    /// It returned (stopped), or was dropped by its executor or spawner.
    Returned,
    /// It panicked outside any handler, with this message.
    Panicked(String),
}

impl AsyncService for AsyncProcessor {
    type Running = RunningAsyncProcessor;
    type Error = ProcessorError;

    async fn start(&self) -> Result<RunningAsyncProcessor, ProcessorError> {
        let spawn = self
            .shared
            .spawner
            .as_ref()
            .ok_or(ProcessorError::NoSpawner)?;
        let (stop, ended) = (TVar::new(false), TVar::new(None));
        let exit = Exit {
            shared: Arc::clone(&self.shared),
            ended: ended.clone(),
            seated: false,
            ending: Ending::Returned,
        };
        // The exit guard travels inside the task from here on: a spawner that drops the task
        // unpolled (its executor is shutting down) still records its end.
        spawn(Box::pin(drive(exit, stop.clone())));
        Ok(RunningAsyncProcessor { stop, ended })
    }

    async fn stop(&self, running: RunningAsyncProcessor) -> Result<(), ProcessorError> {
        // Never waits: a plain write.
        atomically(|tx| tx.write(&running.stop, true));
        let ended = &running.ended;
        let ending = atomically_async(|tx| match tx.read(ended)? {
            Some(ending) => Ok(ending),
            None => retry(),
        })
        .await;
        match ending {
            Ending::Returned => Ok(()),
            Ending::Panicked(message) => Err(ProcessorError::Panicked(message)),
        }
    }
}

/// The processor's task: take the seat, then handle commands until `stop`.
async fn drive(mut exit: Exit, stop: TVar<bool>) {
    let shared = Arc::clone(&exit.shared);
    let run = catch_unwind_future(async {
        if !atomically_async(|tx| shared.take_seat(tx, &stop)).await {
            return;
        }
        // Set in the poll in which the seat was taken: no await in between.
        exit.seated = true;
        loop {
            let Some(job) = atomically_async(|tx| shared.next(tx, &stop)).await else {
                return;
            };
            if !shared.process_async(job, &stop).await {
                return;
            }
        }
    })
    .await;
    if let Err(panic) = run {
        exit.ending = Ending::Panicked(panic_message(&*panic));
    }
}

/// Owned by the processor's task from its creation: when the task ends, however it ends, gives
/// the seat back (if it took it) and records the ending, in one transaction.
struct Exit {
    shared: Arc<Shared>,
    ended: TVar<Option<Ending>>,
    seated: bool,
    ending: Ending,
}

impl Drop for Exit {
    fn drop(&mut self) {
        let ending = self.ending.clone();
        // Only a drop inside a transaction (a task is never dropped there) could fail this.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            atomically(|tx| {
                if self.seated {
                    self.shared.leave_seat(tx)?;
                }
                tx.write(&self.ended, Some(ending.clone()))
            })
        }));
    }
}

impl Drop for RunningAsyncProcessor {
    /// Ask the task to finish, so that it does not wait on an unreachable queue forever.
    fn drop(&mut self) {
        let stop = &self.stop;
        let _ = catch_unwind(AssertUnwindSafe(|| atomically(|tx| tx.write(stop, true))));
    }
}
