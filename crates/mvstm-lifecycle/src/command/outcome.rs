//! What a handler, an enqueue and an attempt report: errors, outcomes, counts, dead letters.

use std::any::type_name;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

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
