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

/// The service that drains a [`CommandQueue`]: one thread, one handler at a time. Get it from
/// [`CommandQueue::processor`].
pub struct Processor {
    pub(super) shared: Arc<Shared>,
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
