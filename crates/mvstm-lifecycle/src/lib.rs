//! Service lifecycles, a service registry and a command queue, built on mvstm transactions.
//!
//! The problem: a server handles admin requests in parallel and starts and stops services
//! (socket servers) on their behalf. Two starts must never race, a failure must never leave a
//! `starting` flag stuck, and side effects must never run twice.
//!
//! The answer, in [`Lifecycle`]: a transaction *claims* the operation by moving the state to
//! `Starting` or `Stopping` (refused at once if another operation holds it); the real
//! [`Service::start`] or [`Service::stop`] runs only in that transaction's `after_commit` hook,
//! outside any transaction; a second transaction records the outcome, from a guard that records
//! it whatever fails or panics in between. Claims compose, so one transaction can claim a group
//! of services (all or none) together with its own TVar updates.
//!
//! On top: [`Registry`], named services with dependencies, and [`CommandQueue`], commands
//! handled serially by a processor service with bounded retries and a dead-letter list.
//!
//! With the `async` feature (on by default), each has an async face that runs on any executor
//! (this crate depends on none): `AsyncLifecycle` runs the same protocol for an `AsyncService`,
//! whose `start` and `stop` are async; a `Registry` holds blocking and async services alike and
//! starts and stops them with `start_async`, `stop_async`, `restart_async` and
//! `start_with_deps_async`; a `CommandQueue` takes async handlers (`handler_async`), runs them
//! and its blocking ones in an `AsyncProcessor` task spawned by the executor you give it, and
//! has `enqueue_async` and `wait_idle_async`. Every future is `Send`, and dropping one midway
//! leaves nothing claimed or stuck (each call's documentation says what is recorded).
//!
//! ```
//! use mvstm::lifecycle::{Lifecycle, Service, State};
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! #[derive(Default)]
//! struct Counter { starts: AtomicU32 }
//! impl Service for Counter {
//!     type Running = ();
//!     type Error = std::io::Error;
//!     fn start(&self) -> std::io::Result<()> {
//!         self.starts.fetch_add(1, Ordering::SeqCst);
//!         Ok(())
//!     }
//!     fn stop(&self, _running: ()) -> std::io::Result<()> { Ok(()) }
//! }
//!
//! let service = Lifecycle::new(Counter::default());
//! let racers: Vec<_> = (0..4)
//!     .map(|_| {
//!         let service = service.clone();
//!         std::thread::spawn(move || service.start().is_ok())
//!     })
//!     .collect();
//! let won = racers.into_iter().filter_map(|r| r.join().unwrap().then_some(())).count();
//! // Exactly one start won and ran; the others were refused without waiting.
//! assert_eq!((won, service.service().starts.load(Ordering::SeqCst)), (1, 1));
//! assert_eq!(service.state(), State::Running);
//! ```

#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "async")]
mod async_lifecycle;
mod command;
mod error;
mod lifecycle;
mod registry;
mod state;
mod trace;

#[cfg(feature = "async")]
pub use async_lifecycle::{AsyncLifecycle, AsyncService};
#[cfg(feature = "async")]
pub use command::{AsyncProcessor, RunningAsyncProcessor};
pub use command::{
    CommandQueue, CommandQueueBuilder, DeadLetter, EnqueueError, HandlerError, Outcome,
    OutcomeKind, Processor, ProcessorError, RunningProcessor, Stats,
};
pub use error::{ClaimError, LifecycleError, WaitTimeout};
pub use lifecycle::{Claim, Lifecycle, Service, SubscriptionId};
pub use registry::{Registrable, Registry, RegistryError};
pub use state::{Failure, Op, State, Transition};
