//! What a handler is told about its command ([`Delivery`]), and what the queue tells afterwards:
//! the outcome log ([`Outcome`], [`OutcomeKind`]) and the dead letters ([`DeadLetter`]).

/// Which command a handler is running, and which attempt this is.
///
/// ```
/// use mvstm::durable::{Delivery, Store};
/// # let store = Store::open("sqlite://target/doc-queue.db")?;
/// let q = store.queue::<String>("doc-delivery", 2)?;
/// q.enqueue(&"send invoice".to_string())?;
/// q.process_due_with(|d: Delivery, cmd: String| -> Result<(), String> {
///     // Key outside effects by the command id: a redelivery finds them done.
///     println!("command {} attempt {}: {cmd}", d.id, d.attempt);
///     Ok(())
/// })?;
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The command's id, unique in the database: the key to make outside effects idempotent.
    pub id: u64,
    /// The attempt, from 1. An attempt after a worker died counts too.
    pub attempt: u32,
}

/// A command that exhausted its attempts (or could not be decoded), with its last error.
///
/// ```
/// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
/// let q = store.queue::<u32>("doc-dead-letter", 2)?.with_backoff(std::time::Duration::ZERO);
/// let id = q.enqueue(&13)?;
/// while q.pending()? > 0 {
///     q.process_due(|n: u32| Err(format!("{n} is unlucky")))?;
/// }
/// let dead = q.dead_letters()?.into_iter().find(|d| d.id == id).unwrap();
/// assert_eq!((dead.command, dead.attempts, dead.error.as_str()), (Some(13), 2, "13 is unlucky"));
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter<T> {
    /// The command's id.
    pub id: u64,
    /// The command, or `None` if its payload cannot be decoded as `T` (see `payload`).
    pub command: Option<T>,
    /// The stored JSON, as it is.
    pub payload: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
}

/// One entry of a queue's outcome log: what one attempt of one command came to.
///
/// ```
/// use mvstm::durable::OutcomeKind;
/// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
/// let q = store.queue::<u8>("doc-outcome", 1)?.with_worker("w-1")?;
/// let id = q.enqueue(&0)?;
/// q.process_due(|_: u8| Err("no"))?;
/// let last = q.outcomes()?.pop().unwrap();
/// assert_eq!((last.command_id, last.attempt, last.kind), (id, 1, OutcomeKind::DeadLettered));
/// assert_eq!((last.worker.as_str(), last.error.as_deref()), ("w-1", Some("no")));
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The command's id.
    pub command_id: u64,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// What came of it.
    pub kind: OutcomeKind,
    /// The handler's error, for failures.
    pub error: Option<String>,
}

/// What came of one attempt.
///
/// ```
/// use mvstm::durable::OutcomeKind;
/// # let store = mvstm::durable::Store::open("sqlite://target/doc-queue.db")?;
/// let q = store.queue::<u8>("doc-outcome-kind", 1)?;
/// q.enqueue(&0)?;
/// q.process_due(|_: u8| Ok::<(), String>(()))?;
/// assert_eq!(q.outcomes()?.last().map(|o| o.kind), Some(OutcomeKind::Done));
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// The handler succeeded; the command is done.
    Done,
    /// The handler failed; the command will be tried again.
    Failed,
    /// The command is dead-lettered (attempts exhausted, corrupt payload, or its worker died on
    /// the last attempt).
    DeadLettered,
    /// The handler finished after its lease had been taken over; nothing was recorded for the
    /// command (another worker owns it now).
    LeaseLost,
}

impl OutcomeKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Done => "done",
            OutcomeKind::Failed => "failed",
            OutcomeKind::DeadLettered => "dead",
            OutcomeKind::LeaseLost => "lease_lost",
        }
    }

    pub(super) fn parse(s: &str) -> OutcomeKind {
        match s {
            "done" => OutcomeKind::Done,
            "failed" => OutcomeKind::Failed,
            "dead" => OutcomeKind::DeadLettered,
            _ => OutcomeKind::LeaseLost,
        }
    }
}
