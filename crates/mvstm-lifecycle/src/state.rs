//! What a lifecycle is doing: its [`State`], the [`Op`] that moves it, and the [`Transition`]s it
//! went through.
//!
//! With the `serde` feature, all four implement `Serialize` and `Deserialize` (for status
//! endpoints): enums as serde's externally tagged variants (`"Running"`,
//! `{"Failed": {...}}`), a transition's time as seconds and nanoseconds since the Unix epoch.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// The state of a service, kept in a TVar of its [`Lifecycle`](crate::Lifecycle).
///
/// `Starting` and `Stopping` are claims: the transaction that set them owns the service until a
/// second transaction records the outcome, and no other start or stop is admitted meanwhile.
///
/// ```
/// use mvstm::lifecycle::{Op, State};
/// assert!(State::Stopped.admits(Op::Start));
/// assert!(!State::Starting.admits(Op::Stop));
/// assert_eq!(State::Running.to_string(), "running");
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not running; a start is admitted. The initial state.
    Stopped,
    /// A start was claimed and `Service::start` is running or about to.
    Starting,
    /// Started; the lifecycle holds the running instance. A stop is admitted.
    Running,
    /// A stop was claimed and `Service::stop` is running or about to.
    Stopping,
    /// The last start or stop failed or panicked; the service is not running. A start is
    /// admitted.
    Failed(Failure),
}

impl State {
    /// `Starting` or `Stopping`: an operation owns the service.
    ///
    /// ```
    /// use mvstm::lifecycle::State;
    /// assert!(State::Starting.is_busy() && State::Stopping.is_busy());
    /// assert!(!State::Running.is_busy());
    /// ```
    pub fn is_busy(&self) -> bool {
        matches!(self, State::Starting | State::Stopping)
    }

    /// Whether a claim of `op` succeeds in this state: a start from `Stopped` or `Failed`, a
    /// stop from `Running`, a restart from any of the three.
    ///
    /// ```
    /// use mvstm::lifecycle::{Op, State};
    /// assert!(State::Running.admits(Op::Stop));
    /// assert!(State::Running.admits(Op::Restart));
    /// assert!(!State::Running.admits(Op::Start));
    /// ```
    pub fn admits(&self, op: Op) -> bool {
        match op {
            Op::Start => matches!(self, State::Stopped | State::Failed(_)),
            Op::Stop => matches!(self, State::Running),
            Op::Restart => !self.is_busy(),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Stopped => f.write_str("stopped"),
            State::Starting => f.write_str("starting"),
            State::Running => f.write_str("running"),
            State::Stopping => f.write_str("stopping"),
            State::Failed(failure) => write!(f, "failed ({failure})"),
        }
    }
}

/// Why a service is in [`State::Failed`]: which operation failed and how.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// [`Op::Start`] or [`Op::Stop`] (a restart fails in one of the two).
    pub during: Op,
    /// The service's error, or the panic message, as text.
    pub message: Arc<str>,
    /// The operation panicked instead of returning an error.
    pub panicked: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.panicked { "panicked" } else { "failed" };
        write!(f, "{} {how}: {}", self.during, self.message)
    }
}

/// A lifecycle operation.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `Stopped`/`Failed` → `Starting` → `Running` (or `Failed`).
    Start,
    /// `Running` → `Stopping` → `Stopped` (or `Failed`).
    Stop,
    /// A stop then a start with no gap another claim could take; a plain start when the service
    /// is not running.
    Restart,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
        })
    }
}

/// One change of state, as kept in a lifecycle's history and passed to its subscribers.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Position in this lifecycle's sequence of transitions, from 1. Subscribers on different
    /// threads may be called out of order; this orders them.
    pub seq: u64,
    /// The state before.
    pub from: State,
    /// The state after (a `Failed` state carries the error).
    pub to: State,
    /// When the transaction that made the change ran.
    pub at: SystemTime,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} -> {}", self.seq, self.from, self.to)
    }
}
