//! `AsyncLifecycle<S>`: the lifecycle of a service whose `start` and `stop` are async.
//!
//! The same state machine as [`Lifecycle`](crate::Lifecycle) (`lifecycle.rs`: `Inner`, the
//! claim, the `Settle` guard, the history, the subscribers) and the same protocol, with step 2
//! moved out of the hook:
//!
//! 1. **Claim.** A transaction moves the state to `Starting` or `Stopping`; refused at once if
//!    the state does not admit the operation. It never waits, so it runs as a plain transaction
//!    inside the poll.
//! 2. **Act.** The claim's `after_commit` hook arms the `Settle` guard (holding, until the act
//!    begins, the state that is true if it never does) and hands it to the caller's future,
//!    which then awaits `AsyncService::start` or `stop` (a service's panic is caught and
//!    reported, as in the blocking lifecycle).
//! 3. **Record.** The guard records the outcome when it is dropped, whatever ends the future.
//!
//! What is new is a third way out of step 2: the future can be dropped while it awaits the
//! service (a `tokio::time::timeout`, a `select!`, an aborted task). The guard is dropped with
//! it, and records `Failed` ("cancelled"): not `Stopped`, because a start cut short may have
//! done part of its work (and a stop cut short consumed the running instance), so the service
//! counts as not running, a new start is admitted, and the history says what happened. Between
//! the guard's arming and the act, and between the service's future completing and the
//! outcome being recorded, there is no await: a running instance that `start` produced is
//! stored and `Running` recorded in the same poll, so a dropped future never leaks an instance
//! nor leaves a claim unrecorded. Dropping a service's own start future must release what it
//! acquired so far (ordinary cancel safety of async Rust; a listener bound and not returned is
//! closed by its drop).

use crate::error::{ClaimError, LifecycleError, WaitTimeout};
use crate::lifecycle::{failed, Gate, Inner, PanicSlot, Path, Settle, SubscriptionId};
use crate::state::{Op, State, Transition};
use mvstm_core::{atomically_async, try_atomically, StmResult, Txn};
use parking_lot::Mutex;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// A service whose start and stop an [`AsyncLifecycle`] runs: [`Service`](crate::Service) with
/// async methods.
///
/// Implement it with `async fn`; the futures must be `Send`, so that the lifecycle's own
/// futures can be spawned on a multi-thread executor. A lifecycle never runs two of them at
/// once for one service.
///
/// ```
/// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, State};
/// use std::net::TcpListener;
///
/// struct Listener;
/// impl AsyncService for Listener {
///     type Running = TcpListener;
///     type Error = std::io::Error;
///     async fn start(&self) -> std::io::Result<TcpListener> {
///         TcpListener::bind("127.0.0.1:0") // an async runtime's bind works the same way
///     }
///     async fn stop(&self, running: TcpListener) -> std::io::Result<()> {
///         drop(running);
///         Ok(())
///     }
/// }
///
/// futures::executor::block_on(async {
///     let service = AsyncLifecycle::new(Listener);
///     service.start().await?;
///     assert_eq!(service.state(), State::Running);
///     assert!(service.start().await.is_err()); // refused at once: already running
///     service.stop().await?;
///     assert_eq!(service.state(), State::Stopped);
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait AsyncService: Send + Sync + 'static {
    /// What a running service needs in order to be stopped (a task handle, a shutdown sender).
    type Running: Send + 'static;
    /// The service's error. Its text is kept in [`State::Failed`] and the history.
    type Error: fmt::Debug + fmt::Display + 'static;

    /// Start the service.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, State};
    /// struct Warm;
    /// impl AsyncService for Warm {
    ///     type Running = Vec<u64>;
    ///     type Error = String;
    ///     async fn start(&self) -> Result<Vec<u64>, String> {
    ///         Ok((0..1024).collect()) // e.g. load a cache
    ///     }
    ///     async fn stop(&self, _cache: Vec<u64>) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::new(Warm);
    /// futures::executor::block_on(service.start()).unwrap();
    /// assert_eq!(service.state(), State::Running);
    /// ```
    fn start(&self) -> impl Future<Output = Result<Self::Running, Self::Error>> + Send;

    /// Stop the service that `start` returned. The instance is consumed either way.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, LifecycleError, State};
    /// struct Stubborn;
    /// impl AsyncService for Stubborn {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Err("still draining".into()) }
    /// }
    /// let service = AsyncLifecycle::new(Stubborn);
    /// futures::executor::block_on(async {
    ///     service.start().await.unwrap();
    ///     assert!(matches!(service.stop().await, Err(LifecycleError::Failed(_))));
    /// });
    /// assert!(matches!(service.state(), State::Failed(_)));
    /// ```
    fn stop(&self, running: Self::Running) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The default number of transitions a lifecycle remembers.
const HISTORY_CAPACITY: usize = 64;

/// An async service and its state machine: the same states, guarantees and history as
/// [`Lifecycle`](crate::Lifecycle), with async `start`, `stop`, `restart` and `wait_for`, on
/// any executor.
///
/// A cheap `Clone` handle; every clone is the same service. Dropping a `start` or `stop`
/// future before it completes records `Failed` ("cancelled"): the service is never left in
/// `Starting` or `Stopping`, and a start that produced its running instance always records
/// `Running` (the repository's `docs/async.md` has the protocol).
///
/// ```
/// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, LifecycleError, State};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// #[derive(Default)]
/// struct Counter { starts: AtomicU32 }
/// impl AsyncService for Counter {
///     type Running = ();
///     type Error = String;
///     async fn start(&self) -> Result<(), String> {
///         self.starts.fetch_add(1, Ordering::SeqCst);
///         Ok(())
///     }
///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
/// }
/// let service = AsyncLifecycle::new(Counter::default());
/// futures::executor::block_on(async {
///     // Two starts at once: one runs, the other is refused without waiting.
///     let (a, b) = futures::join!(service.start(), service.start());
///     assert!(a.is_ok() != b.is_ok());
///     assert!(matches!(a.and(b), Err(LifecycleError::Refused(_))));
/// });
/// assert_eq!(service.service().starts.load(Ordering::SeqCst), 1);
/// assert_eq!(service.state(), State::Running);
/// ```
pub struct AsyncLifecycle<S: AsyncService> {
    inner: Arc<Inner<S, S::Running>>,
}

type Outcome<S> = Result<(), LifecycleError<<S as AsyncService>::Error>>;

impl<S: AsyncService> AsyncLifecycle<S> {
    /// A lifecycle for `service`, `Stopped`, remembering the last 64 transitions.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, State};
    /// struct Noop;
    /// impl AsyncService for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// assert_eq!(AsyncLifecycle::new(Noop).state(), State::Stopped);
    /// ```
    pub fn new(service: S) -> AsyncLifecycle<S> {
        AsyncLifecycle::with_history(service, HISTORY_CAPACITY)
    }

    /// A lifecycle that remembers the last `capacity` transitions (0: none).
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService};
    /// struct Noop;
    /// impl AsyncService for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::with_history(Noop, 1);
    /// futures::executor::block_on(service.start()).unwrap();
    /// assert_eq!(service.history().len(), 1); // only the last transition
    /// ```
    pub fn with_history(service: S, capacity: usize) -> AsyncLifecycle<S> {
        AsyncLifecycle {
            inner: Arc::new(Inner::new(service, capacity)),
        }
    }

    /// The service itself.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService};
    /// struct Port(u16);
    /// impl AsyncService for Port {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// assert_eq!(AsyncLifecycle::new(Port(8080)).service().0, 8080);
    /// ```
    pub fn service(&self) -> &S {
        &self.inner.service
    }

    /// The latest committed state (one atomic read; works anywhere).
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, State};
    /// struct Noop;
    /// impl AsyncService for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::new(Noop);
    /// futures::executor::block_on(service.start()).unwrap();
    /// assert_eq!(service.state(), State::Running);
    /// ```
    pub fn state(&self) -> State {
        self.inner.state.load()
    }

    /// The state as `tx` sees it: combine with other reads, or `retry` until it changes.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, State};
    /// use mvstm::atomically;
    /// struct Noop;
    /// impl AsyncService for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::new(Noop);
    /// assert_eq!(atomically(|tx| service.state_in(tx)), State::Stopped);
    /// ```
    pub fn state_in(&self, tx: &mut Txn) -> StmResult<State> {
        tx.read(&self.inner.state)
    }

    /// Start the service: claim (`Starting`), await [`AsyncService::start`], record `Running`
    /// or `Failed`. Refused at once with [`LifecycleError::Refused`] if the service is starting,
    /// running or stopping; never waits for another caller. Dropped before it completes, it
    /// records `Failed` (cancelled).
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, LifecycleError, State};
    /// struct Flaky;
    /// impl AsyncService for Flaky {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Err("port in use".into()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::new(Flaky);
    /// let r = futures::executor::block_on(service.start());
    /// assert!(matches!(r, Err(LifecycleError::Failed(e)) if e == "port in use"));
    /// assert!(matches!(service.state(), State::Failed(_))); // not stuck in Starting
    /// ```
    pub async fn start(&self) -> Outcome<S> {
        self.run(Op::Start).await
    }

    /// Stop the service: claim (`Stopping`), await [`AsyncService::stop`], record `Stopped` or
    /// `Failed`. Refused at once if the service is not running.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, LifecycleError, State};
    /// struct Noop;
    /// impl AsyncService for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::new(Noop);
    /// futures::executor::block_on(async {
    ///     assert!(matches!(service.stop().await, Err(LifecycleError::Refused(_))));
    ///     service.start().await.unwrap();
    ///     service.stop().await.unwrap();
    /// });
    /// assert_eq!(service.state(), State::Stopped);
    /// ```
    pub async fn stop(&self) -> Outcome<S> {
        self.run(Op::Stop).await
    }

    /// Stop then start the service, with no moment at which another claim could take it in
    /// between; a plain start if it is stopped or failed. Refused while starting or stopping.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, State};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// #[derive(Default)]
    /// struct Counted { starts: AtomicU32 }
    /// impl AsyncService for Counted {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> {
    ///         self.starts.fetch_add(1, Ordering::SeqCst);
    ///         Ok(())
    ///     }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::new(Counted::default());
    /// futures::executor::block_on(async {
    ///     service.restart().await.unwrap(); // stopped: a plain start
    ///     service.restart().await.unwrap(); // running: stop, then start
    /// });
    /// assert_eq!(service.service().starts.load(Ordering::SeqCst), 2);
    /// assert_eq!(service.state(), State::Running);
    /// ```
    pub async fn restart(&self) -> Outcome<S> {
        self.run(Op::Restart).await
    }

    /// Wait until `predicate` holds for the state, without polling and without blocking a
    /// thread (an async `retry` on the state TVar), for at most `timeout`. Returns the state
    /// that satisfied it.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, State};
    /// use std::time::Duration;
    /// struct Noop;
    /// impl AsyncService for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::new(Noop);
    /// futures::executor::block_on(async {
    ///     let running = service.wait_for(|s| *s == State::Running, Duration::from_secs(10));
    ///     let (seen, started) = futures::join!(running, service.start());
    ///     started.unwrap();
    ///     assert_eq!(seen, Ok(State::Running));
    ///     // Nothing stops it: the wait gives up and says where the service is.
    ///     let gave_up = service.wait_for(|s| *s == State::Stopped, Duration::from_millis(10));
    ///     assert_eq!(gave_up.await.unwrap_err().last, State::Running);
    /// });
    /// ```
    pub fn wait_for<'a>(
        &'a self,
        predicate: impl Fn(&State) -> bool + 'a,
        timeout: Duration,
    ) -> impl Future<Output = Result<State, WaitTimeout>> + 'a {
        let inner = &self.inner;
        atomically_async(move |tx| inner.wait_for(tx, &predicate, timeout))
    }

    /// Call `subscriber` with every transition committed from now on (as
    /// [`Lifecycle::subscribe`](crate::Lifecycle::subscribe)); it runs on the thread that
    /// polls the future that made the transition.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, State};
    /// use std::sync::{Arc, Mutex};
    /// struct Noop;
    /// impl AsyncService for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::new(Noop);
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&seen);
    /// service.subscribe(move |t| sink.lock().unwrap().push(t.to.clone()));
    /// futures::executor::block_on(service.start()).unwrap();
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
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService};
    /// struct Noop;
    /// impl AsyncService for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::new(Noop);
    /// let id = service.subscribe(|_| {});
    /// assert!(service.unsubscribe(id));
    /// assert!(!service.unsubscribe(id));
    /// ```
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        self.inner.unsubscribe(id)
    }

    /// The most recent transitions, oldest first.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService};
    /// struct Noop;
    /// impl AsyncService for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let service = AsyncLifecycle::new(Noop);
    /// futures::executor::block_on(service.start()).unwrap();
    /// let steps: Vec<String> = service.history().iter().map(|t| t.to_string()).collect();
    /// assert_eq!(steps, ["#1 stopped -> starting", "#2 starting -> running"]);
    /// ```
    pub fn history(&self) -> Vec<Transition> {
        self.inner.history()
    }

    /// The state machine, for the registry's type-erased entries.
    pub(crate) fn inner(&self) -> &Arc<Inner<S, S::Running>> {
        &self.inner
    }

    /// Claim `op`, act, record: the protocol of the module docs.
    async fn run(&self, op: Op) -> Outcome<S> {
        // Subscribers' panics at the claim's commit and at the records: held until the outcome
        // is recorded, then re-raised (a panic out of the claim would leave it with no owner).
        let panics = PanicSlot::default();
        // The guard is armed by the claim's own `after_commit` hook, so that nothing after the
        // commit (the rest of the call's finishing work, which may unwind) can leave the claim
        // without an owner: until the act begins, it holds the state that is true if it never
        // does.
        let armed: Armed<S> = Arc::default();
        try_atomically::<_, ClaimError>(|tx| {
            let path = match self.inner.claim(tx, op, Some(Arc::clone(&panics)))? {
                Ok(path) => path,
                Err(refused) => return tx.abort(refused),
            };
            let (inner, out, panics) = (
                Arc::clone(&self.inner),
                Arc::clone(&armed),
                Arc::clone(&panics),
            );
            tx.after_commit(move || {
                let mut settle = Settle::new(inner, panics);
                settle.reached(match path {
                    Path::Start => State::Stopped,
                    Path::Stop { .. } => State::Running,
                });
                *out.lock() = Some((settle, path));
            });
            Ok(())
        })?;
        // The claim committed and this future owns its guard; no await before the act.
        let (settle, path) = armed
            .lock()
            .take()
            .expect("a committed claim's after_commit hook armed its guard");
        let result = match path {
            Path::Start => self.inner.start_claimed_async(settle, None).await,
            Path::Stop { then_start } => self.inner.stop_claimed_async(settle, then_start).await,
        };
        let panic = panics.lock().take();
        if let Some(panic) = panic {
            resume_unwind(panic);
        }
        result
    }
}

/// Where a claim's `after_commit` hook puts the guard it armed, and the path claimed.
type Armed<S> = Arc<Mutex<Option<(Settle<S, <S as AsyncService>::Running>, Path)>>>;

impl<S: AsyncService> Inner<S, S::Running> {
    /// Step 2 of a start: the state is `Starting` and `settle` owns it. `gate` (a registry's
    /// check that the requirements run) may call the start off before the service is awaited.
    pub(crate) async fn start_claimed_async(
        &self,
        mut settle: Settle<S, S::Running>,
        gate: Option<Gate>,
    ) -> Outcome<S> {
        if let Some(gate) = gate {
            if let Err(reason) = gate() {
                settle.reached(State::Stopped);
                return Err(LifecycleError::Cancelled(reason));
            }
        }
        settle.reached(cancelled(Op::Start));
        match catch_unwind_future(self.service.start()).await {
            // No await from here to the record: the instance is never lost to a drop.
            Ok(Ok(running)) => {
                *self.running.lock() = Some(running);
                settle.reached(State::Running);
                Ok(())
            }
            Ok(Err(error)) => Err(settle.failed(Op::Start, error)),
            Err(panic) => Err(settle.panicked(Op::Start, &*panic)),
        }
    }

    /// Step 2 of a stop or restart: the state is `Stopping` and `settle` owns it.
    pub(crate) async fn stop_claimed_async(
        &self,
        mut settle: Settle<S, S::Running>,
        then_start: bool,
    ) -> Outcome<S> {
        settle.reached(cancelled(Op::Stop));
        let running = self
            .running
            .lock()
            .take()
            .expect("mvstm-lifecycle: a running service without its instance (a bug)");
        // The stop's result is consumed before the restart's await: a future holding a
        // `S::Error` across an await would not be `Send` unless `S::Error` is.
        match catch_unwind_future(self.service.stop(running)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(settle.failed(Op::Stop, error)),
            Err(panic) => return Err(settle.panicked(Op::Stop, &*panic)),
        }
        if then_start {
            // Hand the claim straight to the start, the same guard still armed.
            settle.record(State::Starting);
            return self.start_claimed_async(settle, None).await;
        }
        settle.reached(State::Stopped);
        Ok(())
    }
}

/// What an async claim records if its future is dropped (or a panic unwinds through it) while
/// it awaits the service.
fn cancelled(op: Op) -> State {
    failed(
        op,
        format!("cancelled: the {op} future was dropped (or panicked) before it finished"),
        false,
    )
}

/// Await `future`, catching a panic of its polls as `Err(payload)` (`catch_unwind` for a
/// future).
pub(crate) async fn catch_unwind_future<F: Future>(future: F) -> std::thread::Result<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}

impl<S: AsyncService> Clone for AsyncLifecycle<S> {
    fn clone(&self) -> Self {
        AsyncLifecycle {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: AsyncService> fmt::Debug for AsyncLifecycle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncLifecycle")
            .field("service", &std::any::type_name::<S>())
            .field("state", &self.state())
            .finish()
    }
}
