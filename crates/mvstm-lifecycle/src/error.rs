//! The errors of lifecycle operations.

use crate::state::{Op, State};
use std::error::Error;
use std::fmt;

/// A claim refused because the service's state does not admit the operation: a start while it
/// is starting, running or stopping, a stop while it is not running.
///
/// ```
/// use mvstm::lifecycle::{ClaimError, Op, State};
/// let e = ClaimError { op: Op::Stop, found: State::Stopped };
/// assert_eq!(e.to_string(), "cannot stop: the service is stopped");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimError {
    /// The operation that was refused.
    pub op: Op,
    /// The state the claim found.
    pub found: State,
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {}: the service is {}", self.op, self.found)
    }
}

impl Error for ClaimError {}

/// Why a start, stop or restart did not succeed.
///
/// `E` is the service's own error type. Whatever the variant, the state has left `Starting`
/// and `Stopping` by the time the caller sees it.
///
/// ```
/// use mvstm::lifecycle::{LifecycleError, Op, State};
/// let refused: LifecycleError<std::io::Error> =
///     LifecycleError::Refused(mvstm::lifecycle::ClaimError { op: Op::Start, found: State::Running });
/// assert_eq!(refused.to_string(), "cannot start: the service is running");
/// ```
#[derive(Debug)]
pub enum LifecycleError<E> {
    /// The claim was refused; nothing ran.
    Refused(ClaimError),
    /// `Service::start` or `Service::stop` returned this error. The state is `Failed`.
    Failed(E),
    /// `Service::start` or `Service::stop` panicked with this message. The state is `Failed`.
    Panicked(String),
    /// The claim committed but the operation was called off before `Service::start` ran (a
    /// requirement of the service was not running); the state went back to `Stopped`.
    Cancelled(String),
}

impl<E> LifecycleError<E> {
    /// The same error with the service's error mapped, e.g. to text for a registry of services
    /// with different error types.
    ///
    /// ```
    /// use mvstm::lifecycle::LifecycleError;
    /// let failed: LifecycleError<std::io::Error> =
    ///     LifecycleError::Failed(std::io::Error::other("address in use"));
    /// let as_text: LifecycleError<String> = failed.map(|e| e.to_string());
    /// assert!(matches!(as_text, LifecycleError::Failed(e) if e == "address in use"));
    /// ```
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> LifecycleError<F> {
        match self {
            LifecycleError::Refused(e) => LifecycleError::Refused(e),
            LifecycleError::Failed(e) => LifecycleError::Failed(f(e)),
            LifecycleError::Panicked(m) => LifecycleError::Panicked(m),
            LifecycleError::Cancelled(m) => LifecycleError::Cancelled(m),
        }
    }
}

impl<E> From<ClaimError> for LifecycleError<E> {
    fn from(e: ClaimError) -> Self {
        LifecycleError::Refused(e)
    }
}

impl<E: fmt::Display> fmt::Display for LifecycleError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifecycleError::Refused(e) => e.fmt(f),
            LifecycleError::Failed(e) => write!(f, "the service failed: {e}"),
            LifecycleError::Panicked(m) => write!(f, "the service panicked: {m}"),
            LifecycleError::Cancelled(m) => write!(f, "called off: {m}"),
        }
    }
}

impl<E: Error + 'static> Error for LifecycleError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            LifecycleError::Refused(e) => Some(e),
            LifecycleError::Failed(e) => Some(e),
            LifecycleError::Panicked(_) | LifecycleError::Cancelled(_) => None,
        }
    }
}

/// `wait_for` gave up: the predicate did not hold within the timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitTimeout {
    /// The state when the wait gave up.
    pub last: State,
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out waiting; the service is {}", self.last)
    }
}

impl Error for WaitTimeout {}

/// The text of a panic payload (`&str` or `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}
