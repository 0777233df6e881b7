//! The control-flow signals a transaction body propagates with `?`.

use std::any::Any;
use std::fmt;

/// The result type of every transactional operation and of a transaction body.
///
/// The error side, [`StmError`], is a control-flow signal for the runtime (retry, conflict or a
/// user abort), not an error to handle: propagate it with `?`.
///
/// ```
/// use mvstm::{atomically, StmResult, TVar, Txn};
/// fn double(tx: &mut Txn, v: &TVar<u32>) -> StmResult<u32> {
///     let x = tx.read(v)?;
///     tx.write(v, x * 2)?;
///     Ok(x * 2)
/// }
/// let v = TVar::new(21);
/// assert_eq!(atomically(|tx| double(tx, &v)), 42);
/// ```
pub type StmResult<T> = Result<T, StmError>;

/// Why an attempt of a transaction was abandoned, as told to `on_abort` hooks.
///
/// ```
/// use mvstm::{atomically, AbortCause, TVar};
/// let v = TVar::new(0);
/// atomically(|tx| {
///     tx.on_abort(|cause: AbortCause| assert_ne!(cause, AbortCause::Abort));
///     tx.write(&v, 1)
/// });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortCause {
    /// Another transaction committed a conflicting change; the body runs again.
    Conflict,
    /// The body called `retry` (or a variant); the thread blocks, then the body runs again.
    Retry,
    /// The body called `Txn::abort`, or an `on_commit` hook vetoed the commit.
    Abort,
    /// The body or an `on_commit` hook panicked; the panic resumes after the hooks ran.
    Panic,
}

/// How a retry was requested; decides what the blocked thread waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryKind {
    /// `retry()` or `retry_for`: wait on everything the attempt read.
    Reads,
    /// `retry_on`, `retry_all`, `retry_until`: wait on the conditions the attempt recorded.
    Explicit,
}

/// The error of a user abort (`Txn::abort`, a vetoing `try_on_commit` hook) with its type erased
/// but its type's name kept, so that a caller expecting another type can say which arrived.
pub(crate) struct AbortError {
    error: Box<dyn Any>,
    type_name: &'static str,
}

impl AbortError {
    pub(crate) fn new<E: 'static>(error: E) -> AbortError {
        AbortError {
            error: Box::new(error),
            type_name: std::any::type_name::<E>(),
        }
    }

    /// The error as an `E`, or `self` back if it is of another type.
    pub(crate) fn downcast<E: 'static>(self) -> Result<E, AbortError> {
        match self.error.downcast::<E>() {
            Ok(e) => Ok(*e),
            Err(error) => Err(AbortError {
                error,
                type_name: self.type_name,
            }),
        }
    }

    /// The name of the error's type.
    pub(crate) fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The error's type, and its text when it is a string (`tx.abort("...")`): for panic
    /// messages. Other types show only their name, since `abort` does not require `Debug`.
    pub(crate) fn describe(&self) -> String {
        let text = match self.error.downcast_ref::<&'static str>() {
            Some(s) => Some(*s),
            None => self.error.downcast_ref::<String>().map(String::as_str),
        };
        match text {
            Some(text) => format!("`{}` ({text:?})", self.type_name),
            None => format!("`{}`", self.type_name),
        }
    }
}

pub(crate) enum ErrorKind {
    Retry(RetryKind),
    Conflict,
    /// The error itself is kept by the attempt (`Txn::abort`), so that dropping this signal
    /// cannot undo the abort.
    Abort,
}

/// The control-flow signal of a transaction: retry, conflict or user abort.
///
/// Produced by [`retry`], by [`Txn::abort`](crate::Txn::abort) and by reads that find the attempt
/// doomed. Propagate it with `?`; the runtime acts on it. Swallowing a conflict does not help: a
/// doomed attempt never commits.
///
/// It deliberately does not implement `std::error::Error` (nor `Send`): it is not an error to
/// report or handle, and it never leaves the thread and the `atomically` call that made it. The
/// user's own error travels inside it to [`try_atomically`](crate::try_atomically), which
/// returns it as a plain `E`.
pub struct StmError {
    pub(crate) kind: ErrorKind,
}

impl StmError {
    pub(crate) fn retry(kind: RetryKind) -> Self {
        StmError {
            kind: ErrorKind::Retry(kind),
        }
    }

    pub(crate) fn conflict() -> Self {
        StmError {
            kind: ErrorKind::Conflict,
        }
    }

    pub(crate) fn abort() -> Self {
        StmError {
            kind: ErrorKind::Abort,
        }
    }

    /// Whether this signal asks to block and re-run (`retry` and its variants).
    pub fn is_retry(&self) -> bool {
        matches!(self.kind, ErrorKind::Retry(_))
    }

    /// Whether this signal is a conflict: the attempt is doomed and will be re-run.
    pub fn is_conflict(&self) -> bool {
        matches!(self.kind, ErrorKind::Conflict)
    }

    /// Whether this signal is a user abort carrying an error for `try_atomically`.
    pub fn is_abort(&self) -> bool {
        matches!(self.kind, ErrorKind::Abort)
    }
}

impl fmt::Debug for StmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Retry(_) => f.write_str("StmError::Retry"),
            ErrorKind::Conflict => f.write_str("StmError::Conflict"),
            ErrorKind::Abort => f.write_str("StmError::Abort"),
        }
    }
}

impl fmt::Display for StmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Retry(_) => f.write_str("transaction asked to retry"),
            ErrorKind::Conflict => f.write_str("transaction conflicted and will re-run"),
            ErrorKind::Abort => f.write_str("transaction aborted by the user"),
        }
    }
}

/// Abandon this attempt and block until a TVar it read changes, then run the body again.
///
/// This is GHC's `retry`: the way to wait for a condition. Inside
/// [`Txn::or_else`](crate::Txn::or_else) it falls through to the alternative instead.
///
/// # Panics
///
/// The runtime panics if the attempt read no TVar, since nothing could ever wake it.
///
/// ```
/// use mvstm::{atomically, retry, TVar};
/// let ready = TVar::new(true);
/// let v = atomically(|tx| {
///     if !tx.read(&ready)? {
///         return retry();
///     }
///     Ok(1)
/// });
/// assert_eq!(v, 1);
/// ```
pub fn retry<T>() -> StmResult<T> {
    Err(StmError::retry(RetryKind::Reads))
}

/// The error of [`atomically_timeout`](crate::atomically_timeout): the call spent longer than its
/// limit blocked in `retry`, and published nothing.
///
/// ```
/// use mvstm::TimedOut;
/// assert_eq!(TimedOut.to_string(), "the transaction waited in retry for longer than its limit");
/// let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(TimedOut);
/// assert!(boxed.source().is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the transaction waited in retry for longer than its limit")
    }
}

impl std::error::Error for TimedOut {}

/// Turn a body's own `Result` into an abort of the transaction in one step:
/// `input.parse().or_abort(tx)?`.
///
/// `Ok(v)` gives `v`; `Err(e)` aborts the attempt with `e` exactly as
/// [`tx.abort(e)`](crate::Txn::abort) does (writes discarded, `on_abort` hooks run with
/// [`AbortCause::Abort`]), so that [`try_atomically`](crate::try_atomically) returns `Err(e)`.
/// Convert the error first (`.map_err(..)`) when the call expects another type.
///
/// ```
/// use mvstm::{try_atomically, OrAbort, TVar};
/// use std::num::ParseIntError;
/// let port = TVar::new(8080u16);
/// let set_port = |input: &str| {
///     try_atomically::<_, ParseIntError>(|tx| {
///         let p: u16 = input.parse().or_abort(tx)?;
///         tx.write(&port, p)
///     })
/// };
/// assert!(set_port("80a").is_err()); // aborted: nothing written
/// assert_eq!(port.load(), 8080);
/// set_port("9090").unwrap();
/// assert_eq!(port.load(), 9090);
/// ```
pub trait OrAbort<T> {
    /// The value, or an abort of `tx` with the error.
    ///
    /// ```
    /// use mvstm::{try_atomically, OrAbort};
    /// let r = try_atomically::<u32, String>(|tx| Err::<u32, _>("no".to_string()).or_abort(tx));
    /// assert_eq!(r, Err("no".to_string()));
    /// ```
    fn or_abort(self, tx: &mut crate::Txn) -> StmResult<T>;
}

impl<T, E: 'static> OrAbort<T> for Result<T, E> {
    #[inline]
    fn or_abort(self, tx: &mut crate::Txn) -> StmResult<T> {
        match self {
            Ok(value) => Ok(value),
            Err(error) => tx.abort(error),
        }
    }
}
