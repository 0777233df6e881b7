//! `Lifecycle<S>`: one service's state machine, driven by transactions and commit hooks.
//!
//! # The protocol
//!
//! 1. **Claim.** A transaction reads the state, checks that it admits the operation and writes
//!    `Starting` or `Stopping`. Two claims of one service conflict on that TVar, so exactly one
//!    of two racing starts commits; the other sees `Starting` and is refused at once.
//! 2. **Act.** The claim registers an `after_commit` hook that calls `Service::start` or
//!    `Service::stop`. It runs once, only if the claim committed, after the new state is
//!    visible and no lock is held, on the thread that called `atomically`.
//! 3. **Record.** A second transaction moves the state out of the claim: `Running`, `Stopped` or
//!    `Failed`.
//!
//! Between 1 and 3 the claimant owns the service, and nothing else ever moves it out of
//! `Starting`/`Stopping`. So step 3 must happen whatever goes wrong in step 2: the outcome is
//! recorded by the destructor of a guard ([`Settle`]) created before the service is called. It
//! starts out holding `Failed` ("interrupted"), and each step that succeeds replaces it with
//! the state that step reached; a panic anywhere (in the service, in a subscriber, in our own
//! code) unwinds through the guard, which records what it holds. The service's own panics are
//! caught and reported as [`LifecycleError::Panicked`]; subscriber panics are re-raised once
//! the state is recorded.
//!
//! The running instance lives outside the TVars, in a mutex only the owner of a claim touches:
//! a start's hook puts it there before recording `Running`, a stop's hook takes it after
//! claiming `Stopping`.
//!
//! The state machine itself (`Inner`: the state, the history, the running instance, the
//! subscribers, the claim and the `Settle` guard) does not depend on how the service is called:
//! [`AsyncLifecycle`](crate::AsyncLifecycle) drives the same machine with async `start`/`stop`
//! (`async_lifecycle.rs`), acting after the claim instead of in its hook.

use crate::error::{panic_message, ClaimError, LifecycleError, WaitTimeout};
use crate::state::{Failure, Op, State, Transition};
use mvstm_core::{atomically, try_atomically, StmResult, TVar, Txn};
use parking_lot::Mutex;
use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A service whose start and stop a [`Lifecycle`] runs.
///
/// `start` brings the service up (bind a socket, spawn a thread) and returns what it needs to
/// stop it again; `stop` consumes that. Neither runs inside a transaction, so both may block,
/// do I/O and start transactions. A lifecycle never runs two of them at once for one service.
///
/// ```
/// use mvstm::lifecycle::{Lifecycle, Service, State};
/// use std::net::TcpListener;
///
/// struct Listener;
/// impl Service for Listener {
///     type Running = TcpListener;
///     type Error = std::io::Error;
///     fn start(&self) -> Result<TcpListener, std::io::Error> {
///         TcpListener::bind("127.0.0.1:0")
///     }
///     fn stop(&self, running: TcpListener) -> Result<(), std::io::Error> {
///         drop(running); // closes the socket
///         Ok(())
///     }
/// }
///
/// let service = Lifecycle::new(Listener);
/// service.start()?;
/// assert_eq!(service.state(), State::Running);
/// assert!(service.start().is_err()); // refused at once: already running
/// service.stop()?;
/// assert_eq!(service.state(), State::Stopped);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Service: Send + Sync + 'static {
    /// What a running service needs in order to be stopped (a join handle, a shutdown sender).
    /// It needs no `Clone`: the lifecycle keeps it outside TVars.
    type Running: Send + 'static;
    /// The service's error. Its text is kept in [`State::Failed`] and the history.
    type Error: fmt::Debug + fmt::Display + 'static;

    /// Start the service.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// use std::sync::mpsc::{channel, Sender};
    /// use std::thread::JoinHandle;
    /// struct Logger;
    /// impl Service for Logger {
    ///     // What stopping needs: the sender that ends the worker, and the worker to join.
    ///     type Running = (Sender<String>, JoinHandle<usize>);
    ///     type Error = std::io::Error;
    ///     fn start(&self) -> std::io::Result<Self::Running> {
    ///         let (send, receive) = channel::<String>();
    ///         let worker = std::thread::spawn(move || receive.iter().count());
    ///         Ok((send, worker))
    ///     }
    ///     fn stop(&self, (send, worker): Self::Running) -> std::io::Result<()> {
    ///         send.send("last line".into()).unwrap();
    ///         drop(send); // the worker's loop ends
    ///         assert_eq!(worker.join().unwrap(), 1);
    ///         Ok(())
    ///     }
    /// }
    /// let logger = Lifecycle::new(Logger);
    /// logger.start().unwrap(); // runs Logger::start once, after the claim committed
    /// assert_eq!(logger.state(), State::Running);
    /// logger.stop().unwrap();
    /// ```
    fn start(&self) -> Result<Self::Running, Self::Error>;

    /// Stop the service that `start` returned. The instance is consumed either way: after an
    /// error the service counts as not running (`Failed`).
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, LifecycleError, Service, State};
    /// struct Stubborn;
    /// impl Service for Stubborn {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Err("still draining".into()) }
    /// }
    /// let service = Lifecycle::new(Stubborn);
    /// service.start().unwrap();
    /// assert!(matches!(service.stop(), Err(LifecycleError::Failed(_))));
    /// // The instance was consumed: the service counts as not running, and may start again.
    /// assert!(matches!(service.state(), State::Failed(_)));
    /// service.start().unwrap();
    /// ```
    fn stop(&self, running: Self::Running) -> Result<(), Self::Error>;
}

/// The default number of transitions a lifecycle remembers.
const HISTORY_CAPACITY: usize = 64;

/// A service and its state machine: `Stopped` → `Starting` → `Running` → `Stopping` →
/// `Stopped`, or `Failed` from either claim.
///
/// A cheap `Clone` handle; every clone is the same service. See the [module docs](crate) for
/// the protocol and [`Lifecycle::claim_start`] for composing claims with other transactional
/// work.
pub struct Lifecycle<S: Service> {
    inner: Arc<Inner<S, S::Running>>,
}

/// A service `S` and its state machine, whose running instance is an `R`; shared by
/// [`Lifecycle`] and [`AsyncLifecycle`](crate::AsyncLifecycle).
pub(crate) struct Inner<S, R> {
    pub(crate) service: S,
    pub(crate) state: TVar<State>,
    /// How many transitions were made; written with `state`.
    seq: TVar<u64>,
    /// The most recent transitions: transition `n` sits in slot `(n - 1) % len`. One TVar per
    /// slot, so recording a transition writes one small value instead of copying the history.
    history: Box<[TVar<Option<Transition>>]>,
    /// The running instance: `Some` exactly while the state is `Running`, or while a hook that
    /// owns a claim moves it.
    pub(crate) running: Mutex<Option<R>>,
    /// The last subscription id handed out, and the subscribers.
    subscribers: Mutex<(u64, Vec<(u64, Subscriber)>)>,
}

pub(crate) type Subscriber = Arc<dyn Fn(&Transition) + Send + Sync>;

/// A check run by a start's hook just before `Service::start`; `Err` calls the start off.
pub(crate) type Gate = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Identifies a subscription, for [`Lifecycle::unsubscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(pub(crate) u64);

/// A committed claim: after the claiming transaction returns, [`outcome`](Claim::outcome) says
/// how the start or stop went (its hook has run by then, on the same thread).
#[must_use = "the outcome says whether the service started or stopped"]
pub struct Claim<S: Service> {
    op: Op,
    outcome: Arc<Mutex<Option<Outcome<S>>>>,
}

type Outcome<S> = Result<(), LifecycleError<<S as Service>::Error>>;

/// What a claim's hook does, decided by the state the claim found.
#[derive(Clone, Copy)]
pub(crate) enum Path {
    Start,
    Stop { then_start: bool },
}

impl<S: Service> Lifecycle<S> {
    /// A lifecycle for `service`, `Stopped`, remembering the last 64 transitions.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// assert_eq!(service.state(), State::Stopped);
    /// ```
    pub fn new(service: S) -> Lifecycle<S> {
        Lifecycle::with_history(service, HISTORY_CAPACITY)
    }

    /// A lifecycle that remembers the last `capacity` transitions (0: none).
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::with_history(Noop, 2);
    /// for _ in 0..3 {
    ///     service.start()?;
    ///     service.stop()?;
    /// }
    /// let seqs: Vec<u64> = service.history().iter().map(|t| t.seq).collect();
    /// assert_eq!(seqs, [11, 12]);
    /// # Ok::<(), mvstm::lifecycle::LifecycleError<String>>(())
    /// ```
    pub fn with_history(service: S, capacity: usize) -> Lifecycle<S> {
        Lifecycle {
            inner: Arc::new(Inner::new(service, capacity)),
        }
    }

    /// The service itself.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service};
    /// struct Port(u16);
    /// impl Service for Port {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Port(8080));
    /// assert_eq!(service.service().0, 8080);
    /// ```
    pub fn service(&self) -> &S {
        &self.inner.service
    }

    /// The latest committed state (one atomic read; works anywhere).
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// service.start().unwrap();
    /// assert_eq!(service.state(), State::Running);
    /// ```
    pub fn state(&self) -> State {
        self.inner.state.load()
    }

    /// The state as `tx` sees it: combine with other reads, or `retry` until it changes.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// use mvstm::{atomically, TVar};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// let requests = TVar::new(0u32);
    /// // Count a request only while the service runs, in one consistent view.
    /// let counted = atomically(|tx| {
    ///     if service.state_in(tx)? != State::Running {
    ///         return Ok(false);
    ///     }
    ///     tx.modify(&requests, |n| n + 1)?;
    ///     Ok(true)
    /// });
    /// assert!(!counted);
    /// ```
    pub fn state_in(&self, tx: &mut Txn) -> StmResult<State> {
        tx.read(&self.inner.state)
    }

    /// Call `f` with the running instance, e.g. to read the port a server bound; `None` unless
    /// the service is `Running`.
    ///
    /// `f` runs under the lock that guards the instance: a stop claimed meanwhile waits for `f`
    /// to return before `Service::stop` gets the instance, so `f` should be short and must not
    /// start, stop or restart this service (its hook would wait for `f`, on the same thread).
    /// Not inside a transaction either: a transaction that calls it could run again.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service};
    /// use std::net::{SocketAddr, TcpListener, TcpStream};
    ///
    /// struct Server;
    /// impl Service for Server {
    ///     type Running = TcpListener;
    ///     type Error = std::io::Error;
    ///     fn start(&self) -> std::io::Result<TcpListener> {
    ///         TcpListener::bind("127.0.0.1:0") // any free port
    ///     }
    ///     fn stop(&self, listener: TcpListener) -> std::io::Result<()> {
    ///         drop(listener);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let server = Lifecycle::new(Server);
    /// assert_eq!(server.with_running(|l| l.local_addr().ok()), None); // stopped
    /// server.start()?;
    /// let addr: SocketAddr = server.with_running(|l| l.local_addr()).expect("running")?;
    /// TcpStream::connect(addr)?; // the port the service really bound
    /// server.stop()?;
    /// assert!(server.with_running(|_| ()).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_running<R>(&self, f: impl FnOnce(&S::Running) -> R) -> Option<R> {
        let running = self.inner.running.lock();
        // Under the lock, `Running` means the instance is there and stays there until `f`
        // returns: a start's hook stores it before it records `Running`, and a stop's hook takes
        // it, under this lock, only after its claim moved the state to `Stopping`.
        if self.inner.state.load() != State::Running {
            return None;
        }
        running.as_ref().map(f)
    }

    /// Start the service: claim (`Starting`), run `Service::start`, record `Running` or
    /// `Failed`.
    ///
    /// Refused at once with [`LifecycleError::Refused`] if the service is starting, running or
    /// stopping. Never blocks on another caller.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, LifecycleError, Service, State};
    /// struct Flaky;
    /// impl Service for Flaky {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Err("port in use".into()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Flaky);
    /// assert!(matches!(service.start(), Err(LifecycleError::Failed(e)) if e == "port in use"));
    /// // The failure is recorded; the service is not stuck in `Starting` and may start again.
    /// assert!(matches!(service.state(), State::Failed(_)));
    /// ```
    pub fn start(&self) -> Outcome<S> {
        self.run(Op::Start)
    }

    /// Stop the service: claim (`Stopping`), run `Service::stop`, record `Stopped` or
    /// `Failed`. Refused at once if the service is not running.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, LifecycleError, Service, State};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// assert!(matches!(service.stop(), Err(LifecycleError::Refused(_)))); // not running
    /// service.start().unwrap();
    /// service.stop().unwrap();
    /// assert_eq!(service.state(), State::Stopped);
    /// ```
    pub fn stop(&self) -> Outcome<S> {
        self.run(Op::Stop)
    }

    /// Stop then start the service, with no moment at which another claim could take it in
    /// between; a plain start if it is stopped or failed. Refused while starting or stopping.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// #[derive(Default)]
    /// struct Counted { starts: AtomicU32 }
    /// impl Service for Counted {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> {
    ///         self.starts.fetch_add(1, Ordering::SeqCst);
    ///         Ok(())
    ///     }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Counted::default());
    /// service.restart().unwrap(); // stopped: a plain start
    /// service.restart().unwrap(); // running: stop, then start
    /// assert_eq!(service.service().starts.load(Ordering::SeqCst), 2);
    /// assert_eq!(service.state(), State::Running);
    /// ```
    pub fn restart(&self) -> Outcome<S> {
        self.run(Op::Restart)
    }

    fn run(&self, op: Op) -> Outcome<S> {
        match try_atomically::<_, ClaimError>(|tx| self.claim(tx, op)) {
            Ok(claim) => claim.outcome(),
            Err(refused) => {
                crate::trace::refused(std::any::type_name::<S>(), &refused);
                Err(refused.into())
            }
        }
    }

    /// Claim a start inside the caller's transaction.
    ///
    /// Moves the state to `Starting` in `tx` and registers the `after_commit` hook that starts
    /// the service. If the state does not admit a start, it aborts `tx` with a [`ClaimError`],
    /// so run it under `try_atomically::<_, ClaimError>`; with another abort type, or to try an
    /// alternative, use [`try_claim_start`](Lifecycle::try_claim_start). Several claims in one
    /// transaction are all or none: a group start.
    ///
    /// ```
    /// use mvstm::lifecycle::{ClaimError, Lifecycle, Service, State};
    /// use mvstm::{try_atomically, TVar};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let (web, db) = (Lifecycle::new(Noop), Lifecycle::new(Noop));
    /// let starts = TVar::new(0u32);
    /// let claims = try_atomically::<_, ClaimError>(|tx| {
    ///     tx.modify(&starts, |n| n + 1)?; // the caller's own update, committed with the claims
    ///     Ok([db.claim_start(tx)?, web.claim_start(tx)?])
    /// })?;
    /// for claim in claims {
    ///     claim.outcome().expect("started");
    /// }
    /// assert_eq!((web.state(), db.state(), starts.load()), (State::Running, State::Running, 1));
    ///
    /// // One member busy: the group claims none.
    /// web.stop().unwrap();
    /// let refused = try_atomically::<_, ClaimError>(|tx| Ok((web.claim_start(tx)?, db.claim_start(tx)?)));
    /// assert!(refused.is_err());
    /// assert_eq!(web.state(), State::Stopped);
    /// # Ok::<(), ClaimError>(())
    /// ```
    pub fn claim_start(&self, tx: &mut Txn) -> StmResult<Claim<S>> {
        self.claim(tx, Op::Start)
    }

    /// Claim a stop inside the caller's transaction; aborts `tx` with a [`ClaimError`] unless
    /// the service is running. See [`claim_start`](Lifecycle::claim_start).
    ///
    /// ```
    /// use mvstm::lifecycle::{ClaimError, Lifecycle, Service, State};
    /// use mvstm::try_atomically;
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let (web, db) = (Lifecycle::new(Noop), Lifecycle::new(Noop));
    /// web.start().unwrap();
    /// db.start().unwrap();
    /// // Stop both, or neither.
    /// let claims = try_atomically::<_, ClaimError>(|tx| {
    ///     Ok([web.claim_stop(tx)?, db.claim_stop(tx)?])
    /// })
    /// .unwrap();
    /// for claim in claims {
    ///     claim.outcome().unwrap();
    /// }
    /// assert_eq!((web.state(), db.state()), (State::Stopped, State::Stopped));
    /// ```
    pub fn claim_stop(&self, tx: &mut Txn) -> StmResult<Claim<S>> {
        self.claim(tx, Op::Stop)
    }

    /// Claim a restart inside the caller's transaction; aborts `tx` with a [`ClaimError`] while
    /// the service is starting or stopping. See [`restart`](Lifecycle::restart).
    ///
    /// ```
    /// use mvstm::lifecycle::{ClaimError, Lifecycle, Op, Service, State};
    /// use mvstm::try_atomically;
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// service.start().unwrap();
    /// let claim = try_atomically::<_, ClaimError>(|tx| service.claim_restart(tx)).unwrap();
    /// assert_eq!(claim.op(), Op::Restart);
    /// claim.outcome().unwrap();
    /// assert_eq!(service.state(), State::Running);
    /// ```
    pub fn claim_restart(&self, tx: &mut Txn) -> StmResult<Claim<S>> {
        self.claim(tx, Op::Restart)
    }

    /// Like [`claim_start`](Lifecycle::claim_start), but a refusal is returned instead of
    /// aborting `tx`: the caller decides (abort with its own error, `retry` until the service is
    /// free, claim something else).
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// use mvstm::try_atomically;
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// #[derive(Debug)]
    /// enum Deploy { Busy(String) }
    /// let (primary, spare) = (Lifecycle::new(Noop), Lifecycle::new(Noop));
    /// primary.start().unwrap();
    /// // Start the primary, or else the spare; abort with our own error if neither is free.
    /// let claim = try_atomically::<_, Deploy>(|tx| match primary.try_claim_start(tx)? {
    ///     Ok(claim) => Ok(claim),
    ///     Err(_) => match spare.try_claim_start(tx)? {
    ///         Ok(claim) => Ok(claim),
    ///         Err(refused) => tx.abort(Deploy::Busy(refused.to_string())),
    ///     },
    /// })
    /// .unwrap();
    /// claim.outcome().unwrap();
    /// assert_eq!(spare.state(), State::Running);
    /// ```
    pub fn try_claim_start(&self, tx: &mut Txn) -> StmResult<Result<Claim<S>, ClaimError>> {
        self.try_claim(tx, Op::Start, None)
    }

    /// Like [`claim_stop`](Lifecycle::claim_stop), returning a refusal instead of aborting.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// use mvstm::atomically;
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// // Not running: the refusal comes back and the transaction goes on.
    /// let refused = atomically(|tx| Ok(service.try_claim_stop(tx)?.err()));
    /// assert_eq!(refused.unwrap().found, State::Stopped);
    /// ```
    pub fn try_claim_stop(&self, tx: &mut Txn) -> StmResult<Result<Claim<S>, ClaimError>> {
        self.try_claim(tx, Op::Stop, None)
    }

    /// Like [`claim_restart`](Lifecycle::claim_restart), returning a refusal instead of
    /// aborting.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// use mvstm::atomically;
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// let claim = atomically(|tx| service.try_claim_restart(tx)).unwrap();
    /// claim.outcome().unwrap();
    /// assert_eq!(service.state(), State::Running);
    /// ```
    pub fn try_claim_restart(&self, tx: &mut Txn) -> StmResult<Result<Claim<S>, ClaimError>> {
        self.try_claim(tx, Op::Restart, None)
    }

    fn claim(&self, tx: &mut Txn, op: Op) -> StmResult<Claim<S>> {
        match self.try_claim(tx, op, None)? {
            Ok(claim) => Ok(claim),
            Err(refused) => tx.abort(refused),
        }
    }

    /// The state machine, for the registry's type-erased entries (its async calls).
    #[cfg(feature = "async")]
    pub(crate) fn inner(&self) -> &Arc<Inner<S, S::Running>> {
        &self.inner
    }

    /// Claim `op` in `tx`, or say why not without aborting; `gate` runs before a start.
    pub(crate) fn try_claim(
        &self,
        tx: &mut Txn,
        op: Op,
        gate: Option<Gate>,
    ) -> StmResult<Result<Claim<S>, ClaimError>> {
        let path = match self.inner.claim(tx, op, None)? {
            Ok(path) => path,
            Err(refused) => return Ok(Err(refused)),
        };
        let outcome = Arc::new(Mutex::new(None));
        let (inner, slot) = (Arc::clone(&self.inner), Arc::clone(&outcome));
        tx.after_commit(move || {
            let panics = PanicSlot::default();
            let settle = Settle::new(Arc::clone(&inner), Arc::clone(&panics));
            let result = match path {
                Path::Start => inner.start_claimed(settle, gate),
                Path::Stop { then_start } => inner.stop_claimed(settle, then_start, gate),
            };
            *slot.lock() = Some(result);
            // A subscriber's panic, held back until the outcome was recorded and delivered.
            let panic = panics.lock().take();
            if let Some(panic) = panic {
                resume_unwind(panic);
            }
        });
        Ok(Ok(Claim { op, outcome }))
    }

    /// Block until `predicate` holds for the state, without polling (a `retry` on the state
    /// TVar), for at most `timeout`. Returns the state that satisfied it.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// use std::time::Duration;
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// let waiter = {
    ///     let service = service.clone();
    ///     std::thread::spawn(move || service.wait_for(|s| *s == State::Running, Duration::from_secs(10)))
    /// };
    /// service.start().unwrap();
    /// assert_eq!(waiter.join().unwrap(), Ok(State::Running));
    /// // Nothing stops it: the wait gives up and says where the service is.
    /// let gave_up = service.wait_for(|s| *s == State::Stopped, Duration::from_millis(10));
    /// assert_eq!(gave_up.unwrap_err().last, State::Running);
    /// ```
    pub fn wait_for(
        &self,
        predicate: impl Fn(&State) -> bool,
        timeout: Duration,
    ) -> Result<State, WaitTimeout> {
        atomically(|tx| self.inner.wait_for(tx, &predicate, timeout))
    }

    /// [`wait_for`](Lifecycle::wait_for) as a future: waits until `predicate` holds for the
    /// state without blocking a thread (an async `retry` on the state TVar), for at most
    /// `timeout`, on any executor; dropping it withdraws the wait. For a task that watches a
    /// blocking service which threads start and stop.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// use std::time::Duration;
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// let starter = {
    ///     let service = service.clone();
    ///     std::thread::spawn(move || service.start().unwrap())
    /// };
    /// let running = service.wait_for_async(|s| *s == State::Running, Duration::from_secs(10));
    /// assert_eq!(futures::executor::block_on(running), Ok(State::Running));
    /// starter.join().unwrap();
    /// ```
    #[cfg(feature = "async")]
    pub fn wait_for_async<'a>(
        &'a self,
        predicate: impl Fn(&State) -> bool + 'a,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<State, WaitTimeout>> + 'a {
        let inner = &self.inner;
        mvstm_core::atomically_async(move |tx| inner.wait_for(tx, &predicate, timeout))
    }

    /// Call `subscriber` with every transition committed from now on, from the `after_commit`
    /// hook of the transaction that made it (on that thread, with no lock held).
    ///
    /// Callbacks of transitions committed on different threads may overlap or arrive out of
    /// order; [`Transition::seq`] orders them. A panicking subscriber does not stop the others
    /// nor the lifecycle: its panic is re-raised to the caller of the start or stop once the
    /// state is recorded.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// use std::sync::{Arc, Mutex};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&seen);
    /// service.subscribe(move |t| sink.lock().unwrap().push(t.to.clone()));
    /// service.start().unwrap();
    /// assert_eq!(*seen.lock().unwrap(), [State::Starting, State::Running]);
    /// ```
    pub fn subscribe(
        &self,
        subscriber: impl Fn(&Transition) + Send + Sync + 'static,
    ) -> SubscriptionId {
        self.inner.subscribe(Arc::new(subscriber))
    }

    /// Remove a subscription; `false` if it was already removed.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// let calls = Arc::new(AtomicU32::new(0));
    /// let counter = Arc::clone(&calls);
    /// let id = service.subscribe(move |_| {
    ///     counter.fetch_add(1, Ordering::SeqCst);
    /// });
    /// assert!(service.unsubscribe(id));
    /// assert!(!service.unsubscribe(id)); // already removed
    /// service.start().unwrap();
    /// assert_eq!(calls.load(Ordering::SeqCst), 0);
    /// ```
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.inner.unsubscribe(id)
    }

    /// The most recent transitions, oldest first (bounded, see
    /// [`with_history`](Lifecycle::with_history)); consistent with [`state`](Lifecycle::state)
    /// at one instant.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Service, State};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// service.start().unwrap();
    /// let steps: Vec<String> = service.history().iter().map(|t| t.to_string()).collect();
    /// assert_eq!(steps, ["#1 stopped -> starting", "#2 starting -> running"]);
    /// assert_eq!(service.history().last().unwrap().to, State::Running);
    /// ```
    pub fn history(&self) -> Vec<Transition> {
        self.inner.history()
    }
}

impl<S: Send + Sync + 'static, R: Send + 'static> Inner<S, R> {
    pub(crate) fn new(service: S, capacity: usize) -> Inner<S, R> {
        Inner {
            service,
            state: TVar::new(State::Stopped),
            seq: TVar::new(0),
            history: (0..capacity).map(|_| TVar::new(None)).collect(),
            running: Mutex::new(None),
            subscribers: Mutex::new((0, Vec::new())),
        }
    }

    /// Step 1 of the protocol in `tx`: move to `Starting` or `Stopping` if the state admits
    /// `op`, and say which path the claim's owner takes; or say why not, without aborting.
    /// A subscriber's panic at the claim's commit goes to `panics` if given (see `transition`).
    pub(crate) fn claim(
        self: &Arc<Self>,
        tx: &mut Txn,
        op: Op,
        panics: Option<PanicSlot>,
    ) -> StmResult<Result<Path, ClaimError>> {
        let found = tx.read(&self.state)?;
        if !found.admits(op) {
            return Ok(Err(ClaimError { op, found }));
        }
        let path = match found {
            State::Running => Path::Stop {
                then_start: op == Op::Restart,
            },
            _ => Path::Start,
        };
        let claimed = match path {
            Path::Start => State::Starting,
            Path::Stop { .. } => State::Stopping,
        };
        self.transition(tx, claimed, panics)?;
        Ok(Ok(path))
    }

    /// The body of `wait_for`: the state if `predicate` holds, else wait (in total at most
    /// `timeout`) for it to change.
    pub(crate) fn wait_for(
        &self,
        tx: &mut Txn,
        predicate: &impl Fn(&State) -> bool,
        timeout: Duration,
    ) -> StmResult<Result<State, WaitTimeout>> {
        let state = tx.read(&self.state)?;
        if predicate(&state) {
            return Ok(Ok(state));
        }
        tx.retry_for(timeout)?;
        Ok(Err(WaitTimeout { last: state }))
    }

    pub(crate) fn subscribe(&self, subscriber: Subscriber) -> SubscriptionId {
        let mut subscribers = self.subscribers.lock();
        subscribers.0 += 1;
        let id = subscribers.0;
        subscribers.1.push((id, subscriber));
        SubscriptionId(id)
    }

    pub(crate) fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let subscribers = &mut self.subscribers.lock().1;
        let before = subscribers.len();
        subscribers.retain(|(sid, _)| *sid != id.0);
        subscribers.len() != before
    }

    pub(crate) fn history(&self) -> Vec<Transition> {
        let history = &self.history;
        atomically(|tx| {
            let last = tx.read(&self.seq)?;
            let first = last.saturating_sub(history.len() as u64);
            let mut recent = Vec::with_capacity((last - first) as usize);
            for n in first..last {
                let slot = &history[(n % history.len() as u64) as usize];
                recent.extend(tx.read(slot)?);
            }
            Ok(recent)
        })
    }

    /// Move to `to` in `tx`: the state, the log, and the subscribers' call after commit. A
    /// subscriber's panic goes to `panics` if given, else it is re-raised from the hook.
    fn transition(
        self: &Arc<Self>,
        tx: &mut Txn,
        to: State,
        panics: Option<PanicSlot>,
    ) -> StmResult<()> {
        let from = tx.read(&self.state)?;
        tx.write(&self.state, to.clone())?;
        let seq = tx.read(&self.seq)? + 1;
        tx.write(&self.seq, seq)?;
        let transition = Transition {
            seq,
            from,
            to,
            at: SystemTime::now(),
        };
        if !self.history.is_empty() {
            let slot = &self.history[((seq - 1) % self.history.len() as u64) as usize];
            tx.write(slot, Some(transition.clone()))?;
        }
        // Registered even with no subscriber yet: one that subscribes before this commits must
        // see the transition.
        let inner = Arc::clone(self);
        tx.after_commit(move || {
            crate::trace::transition(std::any::type_name::<S>(), &transition);
            if let Some(panic) = inner.notify(&transition) {
                match panics {
                    Some(slot) => {
                        slot.lock().get_or_insert(panic);
                    }
                    None => resume_unwind(panic),
                }
            }
        });
        Ok(())
    }

    /// Call every subscriber; return the first panic, after all were called.
    fn notify(&self, transition: &Transition) -> Option<Box<dyn Any + Send>> {
        let subscribers: Vec<Subscriber> = self
            .subscribers
            .lock()
            .1
            .iter()
            .map(|(_, s)| Arc::clone(s))
            .collect();
        let mut first_panic = None;
        for subscriber in subscribers {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| subscriber(transition))) {
                first_panic.get_or_insert(panic);
            }
        }
        first_panic
    }
}

impl<S: Service> Inner<S, S::Running> {
    /// The hook of a start claim: the state is `Starting` and `settle` owns it.
    pub(crate) fn start_claimed(
        self: &Arc<Self>,
        mut settle: Settle<S, S::Running>,
        gate: Option<Gate>,
    ) -> Outcome<S> {
        settle.reached(interrupted(Op::Start));
        if let Some(gate) = gate {
            if let Err(reason) = gate() {
                settle.reached(State::Stopped);
                return Err(LifecycleError::Cancelled(reason));
            }
        }
        let started = {
            let _span = crate::trace::operation(std::any::type_name::<S>(), Op::Start);
            catch_unwind(AssertUnwindSafe(|| self.service.start()))
        };
        match started {
            Ok(Ok(running)) => {
                *self.running.lock() = Some(running);
                settle.reached(State::Running);
                Ok(())
            }
            Ok(Err(error)) => Err(settle.failed(Op::Start, error)),
            Err(panic) => Err(settle.panicked(Op::Start, &*panic)),
        }
    }

    /// The hook of a stop (or restart) claim: the state is `Stopping` and `settle` owns it.
    pub(crate) fn stop_claimed(
        self: &Arc<Self>,
        mut settle: Settle<S, S::Running>,
        then_start: bool,
        gate: Option<Gate>,
    ) -> Outcome<S> {
        settle.reached(interrupted(Op::Stop));
        let running = self
            .running
            .lock()
            .take()
            .expect("mvstm-lifecycle: a running service without its instance (a bug)");
        let stopped = {
            let _span = crate::trace::operation(std::any::type_name::<S>(), Op::Stop);
            catch_unwind(AssertUnwindSafe(|| self.service.stop(running)))
        };
        match stopped {
            Ok(Ok(())) if then_start => {
                // Hand the claim straight to the start: `Stopping` → `Starting`, with the same
                // guard still armed.
                settle.record(State::Starting);
                self.start_claimed(settle, gate)
            }
            Ok(Ok(())) => {
                settle.reached(State::Stopped);
                Ok(())
            }
            Ok(Err(error)) => Err(settle.failed(Op::Stop, error)),
            Err(panic) => Err(settle.panicked(Op::Stop, &*panic)),
        }
    }
}

pub(crate) fn failed(during: Op, message: String, panicked: bool) -> State {
    State::Failed(Failure {
        during,
        message: message.into(),
        panicked,
    })
}

/// What a claim records if a panic interrupts `op`.
pub(crate) fn interrupted(op: Op) -> State {
    failed(
        op,
        "interrupted by a panic before the outcome was recorded".to_string(),
        true,
    )
}

/// A subscriber's panic raised while a claim's owner records a transition, held until the
/// outcome is delivered (re-raising it earlier would leave the claim with no owner). Shared
/// and `Send`: an async claim's owner holds it across awaits.
pub(crate) type PanicSlot = Arc<Mutex<Option<Box<dyn Any + Send>>>>;

/// Owns a claim from its commit until its outcome is recorded, which happens when it is dropped,
/// whatever path leaves the hook: the state it was last told the operation reached, or `Failed`
/// if a panic came first. Recording never panics: subscribers' panics go to `panics`. It holds
/// the state machine by `Arc`, so an async caller can keep it in a `'static` future (the
/// registry's deferred claims).
pub(crate) struct Settle<S: Send + Sync + 'static, R: Send + 'static> {
    inner: Arc<Inner<S, R>>,
    to: State,
    panics: PanicSlot,
}

impl<S: Send + Sync + 'static, R: Send + 'static> Settle<S, R> {
    pub(crate) fn new(inner: Arc<Inner<S, R>>, panics: PanicSlot) -> Settle<S, R> {
        Settle {
            inner,
            to: interrupted(Op::Start),
            panics,
        }
    }

    /// What to record when dropped.
    pub(crate) fn reached(&mut self, state: State) {
        self.to = state;
    }

    /// `op` returned `error`: record `Failed` with its text, and hand the error to the caller.
    pub(crate) fn failed<E: fmt::Display>(&mut self, op: Op, error: E) -> LifecycleError<E> {
        self.reached(failed(op, error.to_string(), false));
        LifecycleError::Failed(error)
    }

    /// `op` panicked: record `Failed` with the panic message, and report it to the caller.
    pub(crate) fn panicked<E>(&mut self, op: Op, panic: &(dyn Any + Send)) -> LifecycleError<E> {
        let message = panic_message(panic);
        self.reached(failed(op, message.clone(), true));
        LifecycleError::Panicked(message)
    }

    /// Record `state` now, staying the claim's owner.
    ///
    /// The transaction is run again until it has committed: the call can also panic outside its
    /// commit, when the epoch collector runs another value's panicking destructor as it pins or
    /// flushes, and the claim must not be left unrecorded for that. Such a panic is held with the
    /// subscribers' (`panics`) and re-raised once the outcome is delivered. Only the claim's
    /// owner writes a claimed state, so a re-run cannot conflict forever.
    pub(crate) fn record(&self, state: State) {
        let committed = Rc::new(std::cell::Cell::new(false));
        while !committed.get() {
            let ran = catch_unwind(AssertUnwindSafe(|| {
                atomically(|tx| {
                    self.inner
                        .transition(tx, state.clone(), Some(Arc::clone(&self.panics)))?;
                    // The last `on_commit` hook: after it, nothing can stop the commit.
                    let committed = Rc::clone(&committed);
                    tx.on_commit(move || committed.set(true));
                    Ok(())
                })
            }));
            if let Err(panic) = ran {
                self.panics.lock().get_or_insert(panic);
            }
        }
    }
}

impl<S: Send + Sync + 'static, R: Send + 'static> Drop for Settle<S, R> {
    fn drop(&mut self) {
        self.record(self.to.clone());
    }
}

impl<S: Service> Claim<S> {
    /// The operation this claim made (a restart of a stopped service reports `Restart`).
    ///
    /// ```
    /// use mvstm::lifecycle::{ClaimError, Lifecycle, Op, Service};
    /// use mvstm::try_atomically;
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Noop);
    /// let claim = try_atomically::<_, ClaimError>(|tx| service.claim_start(tx)).unwrap();
    /// assert_eq!(claim.op(), Op::Start);
    /// claim.outcome().unwrap();
    /// ```
    pub fn op(&self) -> Op {
        self.op
    }

    /// How the start or stop went.
    ///
    /// # Panics
    ///
    /// If the claiming transaction has not committed yet: call it after `atomically` returns.
    ///
    /// ```
    /// use mvstm::lifecycle::{ClaimError, Lifecycle, LifecycleError, Service};
    /// use mvstm::try_atomically;
    /// struct Broken;
    /// impl Service for Broken {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Err("no config".into()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = Lifecycle::new(Broken);
    /// let claim = try_atomically::<_, ClaimError>(|tx| service.claim_start(tx)).unwrap();
    /// // The claim committed; the start ran in its after_commit hook and failed.
    /// assert!(matches!(claim.outcome(), Err(LifecycleError::Failed(e)) if e == "no config"));
    /// ```
    #[track_caller]
    pub fn outcome(self) -> Outcome<S> {
        self.outcome
            .lock()
            .take()
            .expect("Claim::outcome: the claiming transaction has not committed yet")
    }
}

impl<S: Service> Clone for Lifecycle<S> {
    fn clone(&self) -> Self {
        Lifecycle {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Service> fmt::Debug for Lifecycle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("service", &std::any::type_name::<S>())
            .field("state", &self.state())
            .finish()
    }
}

impl<S: Service> fmt::Debug for Claim<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}
