//! `tracing` spans and events for lifecycle transitions and command handling (feature
//! `tracing`); without the feature every function here is empty and inlined away.
//!
//! | where | what | level |
//! |---|---|---|
//! | a committed transition | event with `service`, `seq`, `from`, `to` | `INFO`; `WARN` into `Failed` |
//! | `Service::start` / `Service::stop` in a claim's hook | span `lifecycle.start` / `lifecycle.stop` with `service` | `INFO` |
//! | a refused `start`, `stop` or `restart` | event with `service`, `op`, `found` | `DEBUG` |
//! | a command handled by a `CommandQueue` | span `command` with `id`, `command`, `attempt`; an event with the outcome | `DEBUG`; `WARN` when dead-lettered |
//!
//! Events are emitted after the commit that made them true (transitions from the
//! `after_commit` hook, command outcomes once the handler's transaction returned), never from
//! inside a transaction, whose attempt might still be thrown away. The target is
//! `mvstm_lifecycle`.

use crate::error::ClaimError;
use crate::state::{Op, Transition};

/// Entered for the length of an operation; exits when dropped.
pub(crate) struct Span {
    #[cfg(feature = "tracing")]
    _entered: tracing::span::EnteredSpan,
}

/// A transition committed.
#[inline]
pub(crate) fn transition(service: &'static str, t: &Transition) {
    #[cfg(feature = "tracing")]
    {
        let (from, to) = (
            tracing::field::display(&t.from),
            tracing::field::display(&t.to),
        );
        if matches!(t.to, crate::state::State::Failed(_)) {
            tracing::warn!(target: "mvstm_lifecycle", service, seq = t.seq, %from, %to, "transition");
        } else {
            tracing::info!(target: "mvstm_lifecycle", service, seq = t.seq, %from, %to, "transition");
        }
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (service, t);
}

/// `Service::start` or `Service::stop` is about to run for a claim.
#[inline]
pub(crate) fn operation(service: &'static str, op: Op) -> Span {
    #[cfg(feature = "tracing")]
    {
        let span = match op {
            Op::Stop => tracing::info_span!(target: "mvstm_lifecycle", "lifecycle.stop", service),
            Op::Start | Op::Restart => {
                tracing::info_span!(target: "mvstm_lifecycle", "lifecycle.start", service)
            }
        };
        Span {
            _entered: span.entered(),
        }
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (service, op);
        Span {}
    }
}

/// A claim was refused.
#[inline]
pub(crate) fn refused(service: &'static str, e: &ClaimError) {
    #[cfg(feature = "tracing")]
    tracing::debug!(
        target: "mvstm_lifecycle",
        service,
        op = %e.op,
        found = %e.found,
        "claim refused"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (service, e);
}

/// A command is being handled (its `attempt`-th try).
#[inline]
pub(crate) fn command(id: u64, command: &'static str, attempt: u32) -> Span {
    #[cfg(feature = "tracing")]
    {
        let span = tracing::debug_span!(target: "mvstm_lifecycle", "command", id, command, attempt);
        Span {
            _entered: span.entered(),
        }
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (id, command, attempt);
        Span {}
    }
}

/// `handling`, an async processor's attempt at a command, inside the `command` span (entered
/// at each poll, not held across an await).
#[cfg(feature = "async")]
#[inline]
pub(crate) fn in_command<F: std::future::Future>(
    id: u64,
    command: &'static str,
    attempt: u32,
    handling: F,
) -> impl std::future::Future<Output = F::Output> {
    #[cfg(feature = "tracing")]
    {
        use tracing::Instrument;
        handling.instrument(tracing::debug_span!(
            target: "mvstm_lifecycle",
            "command",
            id,
            command,
            attempt
        ))
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (id, command, attempt);
        handling
    }
}

/// How the command's attempt ended (inside its `command` span).
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) enum CommandOutcome<'a> {
    Processed,
    /// Left in the queue: the processor is stopping.
    Deferred,
    Retried(&'a str),
    DeadLettered(&'a str),
}

#[inline]
pub(crate) fn command_outcome(outcome: CommandOutcome<'_>) {
    #[cfg(feature = "tracing")]
    match outcome {
        CommandOutcome::Processed => tracing::debug!(target: "mvstm_lifecycle", "processed"),
        CommandOutcome::Deferred => {
            tracing::debug!(target: "mvstm_lifecycle", "left queued: the processor is stopping")
        }
        CommandOutcome::Retried(error) => {
            tracing::debug!(target: "mvstm_lifecycle", error, "failed; queued again")
        }
        CommandOutcome::DeadLettered(error) => {
            tracing::warn!(target: "mvstm_lifecycle", error, "failed; dead-lettered")
        }
    }
    #[cfg(not(feature = "tracing"))]
    let _ = outcome;
}
