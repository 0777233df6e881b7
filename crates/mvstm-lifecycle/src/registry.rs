//! `Registry`: named services of any types, with dependencies, in one transactional map.
//!
//! Each entry holds a type-erased lifecycle and the names it requires. Every check a start or
//! stop makes (the service exists, its requirements run, no dependent runs) is a read in the
//! same transaction as its claim, so the checks and the claim are one atomic step: a start of
//! `api` that saw `db` running and a stop of `db` that saw `api` stopped cannot both commit.
//!
//! # Blocking and async calls
//!
//! An entry is a [`Lifecycle`] (blocking `Service`) or, with the `async` feature, an
//! [`AsyncLifecycle`](crate::AsyncLifecycle). The blocking calls (`start`, `stop`, ...) claim
//! as `Lifecycle` does: the service runs in the claim's `after_commit` hook. The async calls
//! (`start_async`, ...) claim *deferred*: the claim's `after_commit` hook arms the `Settle`
//! guard and wraps the act (a blocking service's `start` run inline, or an async service's
//! future awaited) into a future it hands out; the call then awaits the acts in dependency
//! order. The guard exists from the commit on, so a future dropped anywhere after the claim
//! leaves nothing in `Starting` or `Stopping`: an act never begun records what is still true
//! (`Stopped` for a start, `Running` for a stop), an async act cut short records `Failed`
//! (cancelled), as `AsyncLifecycle` does. The blocking calls refuse an async entry
//! ([`RegistryError::NeedsAsync`]) before claiming it: they have no executor to await it on.

#[cfg(feature = "async")]
use crate::async_lifecycle::{AsyncLifecycle, AsyncService};
use crate::error::{ClaimError, LifecycleError};
use crate::lifecycle::{Claim, Gate, Lifecycle, Service};
#[cfg(feature = "async")]
use crate::lifecycle::{Inner, PanicSlot, Path, Settle};
use crate::state::{Op, State};
use mvstm_collections::TMap;
use mvstm_core::{atomically, try_atomically, StmResult, Txn};
#[cfg(feature = "async")]
use parking_lot::Mutex;
use std::collections::HashSet;
use std::error::Error;
use std::fmt;
#[cfg(feature = "async")]
use std::future::Future;
#[cfg(feature = "async")]
use std::pin::Pin;
use std::sync::Arc;

/// Named services with dependencies.
///
/// It holds [`Lifecycle`]s and, with the `async` feature, [`AsyncLifecycle`]s, side by side: the
/// blocking calls (`start`, `stop`, ...) run blocking services, and the async calls
/// ([`start_async`](Registry::start_async), ...) run both kinds from a task.
///
/// ```
/// use mvstm::lifecycle::{Lifecycle, Registry, RegistryError, Service, State};
/// struct Noop;
/// impl Service for Noop {
///     type Running = ();
///     type Error = String;
///     fn start(&self) -> Result<(), String> { Ok(()) }
///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
/// }
/// let registry = Registry::new();
/// registry.register("db", Lifecycle::new(Noop), &[])?;
/// registry.register("api", Lifecycle::new(Noop), &["db"])?;
///
/// // `api` needs `db` running first...
/// assert!(matches!(registry.start("api"), Err(RegistryError::RequirementNotRunning { .. })));
/// // ...which `start_with_deps` does, in dependency order, in one claim.
/// registry.start_with_deps("api")?;
/// assert_eq!(registry.status(), [("api".to_string(), State::Running), ("db".to_string(), State::Running)]);
///
/// // `db` cannot stop while `api` runs.
/// assert!(matches!(registry.stop("db"), Err(RegistryError::DependentRunning { .. })));
/// registry.stop("api")?;
/// registry.stop("db")?;
/// # Ok::<(), RegistryError>(())
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    services: TMap<String, Arc<Entry>>,
}

struct Entry {
    service: Arc<dyn Managed>,
    requires: Vec<String>,
}

/// A lifecycle a [`Registry`] can hold: a [`Lifecycle`] and, with the `async` feature, an
/// [`AsyncLifecycle`](crate::AsyncLifecycle). Sealed: [`Registry::register`] takes either, and
/// nothing else.
///
/// ```
/// use mvstm::lifecycle::{Lifecycle, Registrable, Registry, Service};
/// struct Noop;
/// impl Service for Noop {
///     type Running = ();
///     type Error = String;
///     fn start(&self) -> Result<(), String> { Ok(()) }
///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
/// }
/// // A helper that registers whatever kind of lifecycle it is given.
/// fn add(registry: &Registry, name: &str, lifecycle: impl Registrable) {
///     registry.register(name, lifecycle, &[]).unwrap();
/// }
/// let registry = Registry::new();
/// add(&registry, "noop", Lifecycle::new(Noop));
/// assert_eq!(registry.status().len(), 1);
/// ```
pub trait Registrable: sealed::Sealed {}

mod sealed {
    /// What the registry needs from a lifecycle; implemented for the crate's two lifecycles.
    pub trait Sealed {
        /// The lifecycle as a type-erased registry entry. Only this crate can make the token,
        /// so only the registry can call it (a bound `L: Registrable` makes it callable).
        fn into_managed(self, _: Token) -> std::sync::Arc<dyn super::Managed>;
    }

    /// The registry's permission to call `into_managed`.
    pub struct Token(pub(super) ());
}

impl<S: Service> Registrable for Lifecycle<S> {}

impl<S: Service> sealed::Sealed for Lifecycle<S> {
    fn into_managed(self, _: sealed::Token) -> Arc<dyn Managed> {
        Arc::new(self)
    }
}

#[cfg(feature = "async")]
impl<S: AsyncService> Registrable for AsyncLifecycle<S> {}

#[cfg(feature = "async")]
impl<S: AsyncService> sealed::Sealed for AsyncLifecycle<S> {
    fn into_managed(self, _: sealed::Token) -> Arc<dyn Managed> {
        Arc::new(self)
    }
}

/// A lifecycle with its service type erased.
pub trait Managed: Send + Sync {
    /// `true` for an async service, which the blocking calls refuse.
    fn is_async(&self) -> bool;
    /// Claim `op`; the act runs in the claim's `after_commit` hook (the blocking calls; never
    /// called for an async service).
    fn try_claim(
        &self,
        tx: &mut Txn,
        op: Op,
        gate: Option<Gate>,
    ) -> StmResult<Result<ErasedClaim, ClaimError>>;
    /// Claim `op`; the act is handed out, armed, at the commit (the async calls).
    #[cfg(feature = "async")]
    fn try_claim_deferred(
        &self,
        tx: &mut Txn,
        op: Op,
        gate: Option<Gate>,
        panics: &PanicSlot,
    ) -> StmResult<Result<ActSlot, ClaimError>>;
    fn state_in(&self, tx: &mut Txn) -> StmResult<State>;
    fn state(&self) -> State;
}

type ErasedClaim = Box<dyn FnOnce() -> Result<(), LifecycleError<String>>>;

/// An armed claim's act: run the service's start or stop, record the outcome.
#[cfg(feature = "async")]
type Act = Pin<Box<dyn Future<Output = Result<(), LifecycleError<String>>> + Send>>;

/// Where a deferred claim's `after_commit` hook puts its armed act.
#[cfg(feature = "async")]
type ActSlot = Arc<Mutex<Option<Act>>>;

impl<S: Service> Managed for Lifecycle<S> {
    fn is_async(&self) -> bool {
        false
    }

    fn try_claim(
        &self,
        tx: &mut Txn,
        op: Op,
        gate: Option<Gate>,
    ) -> StmResult<Result<ErasedClaim, ClaimError>> {
        Ok(
            Lifecycle::try_claim(self, tx, op, gate)?.map(|claim: Claim<S>| {
                Box::new(move || claim.outcome().map_err(|e| e.map(|e| e.to_string())))
                    as ErasedClaim
            }),
        )
    }

    #[cfg(feature = "async")]
    fn try_claim_deferred(
        &self,
        tx: &mut Txn,
        op: Op,
        gate: Option<Gate>,
        panics: &PanicSlot,
    ) -> StmResult<Result<ActSlot, ClaimError>> {
        // A blocking service in an async call: its start or stop runs inline, on the thread
        // that polls the act, as `Lifecycle::start` would if the task called it.
        claim_deferred(self.inner(), tx, op, panics, move |inner, settle, path| {
            Box::pin(async move {
                let outcome = match path {
                    Path::Start => inner.start_claimed(settle, gate),
                    Path::Stop { then_start } => inner.stop_claimed(settle, then_start, gate),
                };
                outcome.map_err(|e| e.map(|e| e.to_string()))
            })
        })
    }

    fn state_in(&self, tx: &mut Txn) -> StmResult<State> {
        Lifecycle::state_in(self, tx)
    }

    fn state(&self) -> State {
        Lifecycle::state(self)
    }
}

#[cfg(feature = "async")]
impl<S: AsyncService> Managed for AsyncLifecycle<S> {
    fn is_async(&self) -> bool {
        true
    }

    fn try_claim(
        &self,
        _: &mut Txn,
        _: Op,
        _: Option<Gate>,
    ) -> StmResult<Result<ErasedClaim, ClaimError>> {
        unreachable!("the blocking registry calls refuse an async service before claiming it")
    }

    fn try_claim_deferred(
        &self,
        tx: &mut Txn,
        op: Op,
        gate: Option<Gate>,
        panics: &PanicSlot,
    ) -> StmResult<Result<ActSlot, ClaimError>> {
        claim_deferred(self.inner(), tx, op, panics, move |inner, settle, path| {
            Box::pin(async move {
                let outcome = match path {
                    Path::Start => inner.start_claimed_async(settle, gate).await,
                    Path::Stop { then_start } => inner.stop_claimed_async(settle, then_start).await,
                };
                outcome.map_err(|e| e.map(|e| e.to_string()))
            })
        })
    }

    fn state_in(&self, tx: &mut Txn) -> StmResult<State> {
        AsyncLifecycle::state_in(self, tx)
    }

    fn state(&self) -> State {
        AsyncLifecycle::state(self)
    }
}

/// Claim `op` on `inner` in `tx` without acting. If the claim commits, its `after_commit` hook
/// arms the guard that records the outcome (holding, until the act begins, the state that is
/// true if it never does) and puts `act`'s future, which owns the guard, in the slot returned.
#[cfg(feature = "async")]
fn claim_deferred<S: Send + Sync + 'static, R: Send + 'static>(
    inner: &Arc<Inner<S, R>>,
    tx: &mut Txn,
    op: Op,
    panics: &PanicSlot,
    act: impl FnOnce(Arc<Inner<S, R>>, Settle<S, R>, Path) -> Act + 'static,
) -> StmResult<Result<ActSlot, ClaimError>> {
    let path = match inner.claim(tx, op, Some(Arc::clone(panics)))? {
        Ok(path) => path,
        Err(refused) => return Ok(Err(refused)),
    };
    let slot = ActSlot::default();
    let (inner, out, panics) = (Arc::clone(inner), Arc::clone(&slot), Arc::clone(panics));
    tx.after_commit(move || {
        let mut settle = Settle::new(Arc::clone(&inner), panics);
        settle.reached(match path {
            Path::Start => State::Stopped,
            Path::Stop { .. } => State::Running,
        });
        *out.lock() = Some(act(inner, settle, path));
    });
    Ok(Ok(slot))
}

/// Why a registry operation was refused or failed.
#[derive(Debug)]
pub enum RegistryError {
    /// No service has this name.
    Unknown(String),
    /// `register` with a name already taken.
    Duplicate(String),
    /// `register` would close a cycle of requirements: the names along it, first = last.
    Cycle(Vec<String>),
    /// A start refused because a service it requires is not registered.
    MissingRequirement {
        /// The service to start.
        service: String,
        /// The requirement no service is registered under.
        requirement: String,
    },
    /// A start refused because a service it requires is not running.
    RequirementNotRunning {
        /// The service to start.
        service: String,
        /// The requirement that is not running.
        requirement: String,
        /// The requirement's state.
        state: State,
    },
    /// A stop refused because a service that requires this one is not stopped.
    DependentRunning {
        /// The service to stop.
        service: String,
        /// A service that requires it.
        dependent: String,
        /// The dependent's state.
        state: State,
    },
    /// A blocking call (`start`, `stop`, `restart`, `start_with_deps`) would have to claim this
    /// service, which is an [`AsyncLifecycle`](crate::AsyncLifecycle): use the `*_async` call
    /// instead. Nothing was claimed. (Only an async service, feature `async`, gives it.)
    NeedsAsync(String),
    /// The service's own lifecycle refused or failed; its error is given as text.
    Service {
        /// The service.
        service: String,
        /// What its lifecycle said.
        error: LifecycleError<String>,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Unknown(name) => write!(f, "unknown service `{name}`"),
            RegistryError::Duplicate(name) => {
                write!(f, "a service named `{name}` is already registered")
            }
            RegistryError::Cycle(path) => write!(f, "dependency cycle: {}", path.join(" -> ")),
            RegistryError::MissingRequirement {
                service,
                requirement,
            } => write!(
                f,
                "cannot start `{service}`: it requires `{requirement}`, which is not registered"
            ),
            RegistryError::RequirementNotRunning {
                service,
                requirement,
                state,
            } => write!(
                f,
                "cannot start `{service}`: it requires `{requirement}`, which is {state}"
            ),
            RegistryError::DependentRunning {
                service,
                dependent,
                state,
            } => write!(
                f,
                "cannot stop `{service}`: `{dependent}` requires it and is {state}"
            ),
            RegistryError::NeedsAsync(name) => write!(
                f,
                "`{name}` is an async service: start and stop it with the registry's `*_async` calls"
            ),
            RegistryError::Service { service, error } => write!(f, "`{service}`: {error}"),
        }
    }
}

impl Error for RegistryError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RegistryError::Service {
                error: LifecycleError::Refused(e),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

impl Registry {
    /// An empty registry.
    ///
    /// ```
    /// use mvstm::lifecycle::Registry;
    /// let registry = Registry::new();
    /// assert!(registry.status().is_empty());
    /// ```
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Add `lifecycle` under `name`, requiring the services named in `requires` (which may be
    /// registered later). Refused if the name is taken or the requirements would form a cycle.
    /// Keep a clone of the lifecycle to reach the service itself.
    ///
    /// `lifecycle` is a [`Lifecycle`] or, with the `async` feature, an
    /// [`AsyncLifecycle`](crate::AsyncLifecycle) (see [`Registry::start_async`]); one registry
    /// holds both kinds, and requirements may cross them. Registering never waits.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Registry, RegistryError, Service};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let registry = Registry::new();
    /// registry.register("a", Lifecycle::new(Noop), &["b"])?; // "b" may come later
    /// let again = registry.register("a", Lifecycle::new(Noop), &[]);
    /// assert!(matches!(again, Err(RegistryError::Duplicate(_))));
    /// // "b" requiring "a" would close a cycle.
    /// let cycle = registry.register("b", Lifecycle::new(Noop), &["a"]);
    /// assert!(matches!(cycle, Err(RegistryError::Cycle(_))));
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub fn register<L: Registrable>(
        &self,
        name: &str,
        lifecycle: L,
        requires: &[&str],
    ) -> Result<(), RegistryError> {
        let entry = Arc::new(Entry {
            service: lifecycle.into_managed(sealed::Token(())),
            requires: requires.iter().map(|r| r.to_string()).collect(),
        });
        try_atomically(|tx| {
            if self.services.contains_key(tx, name)? {
                return tx.abort(RegistryError::Duplicate(name.to_string()));
            }
            let mut path = vec![name.to_string()];
            let mut seen = HashSet::new();
            if self.reaches(tx, &entry.requires, name, &mut path, &mut seen)? {
                return tx.abort(RegistryError::Cycle(path));
            }
            self.services
                .insert(tx, name.to_string(), Arc::clone(&entry))?;
            Ok(())
        })
    }

    /// Whether following requirements from `from` reaches `target`; `path` ends with the way.
    /// Each service is explored once (`seen`): one that did not lead to `target` never will.
    fn reaches(
        &self,
        tx: &mut Txn,
        from: &[String],
        target: &str,
        path: &mut Vec<String>,
        seen: &mut HashSet<String>,
    ) -> StmResult<bool> {
        for next in from {
            if !seen.insert(next.clone()) {
                continue;
            }
            path.push(next.clone());
            if next == target {
                return Ok(true);
            }
            if let Some(entry) = self.services.get(tx, next.as_str())? {
                if self.reaches(tx, &entry.requires, target, path, seen)? {
                    return Ok(true);
                }
            }
            path.pop();
        }
        Ok(false)
    }

    fn entry(&self, tx: &mut Txn, name: &str) -> StmResult<Arc<Entry>> {
        match self.services.get(tx, name)? {
            Some(entry) => Ok(entry),
            None => tx.abort(RegistryError::Unknown(name.to_string())),
        }
    }

    /// The state of `name`.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Registry, RegistryError, Service, State};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let registry = Registry::new();
    /// registry.register("cache", Lifecycle::new(Noop), &[])?;
    /// assert_eq!(registry.state("cache")?, State::Stopped);
    /// assert!(matches!(registry.state("nope"), Err(RegistryError::Unknown(_))));
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub fn state(&self, name: &str) -> Result<State, RegistryError> {
        try_atomically(|tx| self.entry(tx, name)?.service.state_in(tx))
    }

    /// Every service and its state, sorted by name, from one consistent snapshot.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Registry, Service, State};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let registry = Registry::new();
    /// registry.register("web", Lifecycle::new(Noop), &[]).unwrap();
    /// registry.register("db", Lifecycle::new(Noop), &[]).unwrap();
    /// registry.start("db").unwrap();
    /// let status = registry.status(); // sorted by name
    /// assert_eq!(status[0], ("db".to_string(), State::Running));
    /// assert_eq!(status[1], ("web".to_string(), State::Stopped));
    /// ```
    pub fn status(&self) -> Vec<(String, State)> {
        let mut all = atomically(|tx| {
            let entries = self.services.snapshot(tx)?;
            let mut status = Vec::with_capacity(entries.len());
            for (name, entry) in entries {
                status.push((name, entry.service.state_in(tx)?));
            }
            Ok(status)
        });
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Start `name`; refused while a service it requires is not running.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Registry, RegistryError, Service, State};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let registry = Registry::new();
    /// registry.register("db", Lifecycle::new(Noop), &[])?;
    /// registry.register("api", Lifecycle::new(Noop), &["db"])?;
    /// assert!(registry.start("api").is_err()); // "db" is not running
    /// registry.start("db")?;
    /// registry.start("api")?;
    /// assert_eq!(registry.state("api")?, State::Running);
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub fn start(&self, name: &str) -> Result<(), RegistryError> {
        self.run(name, Op::Start)
    }

    /// Stop `name`; refused while a service that requires it is not stopped.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Registry, RegistryError, Service, State};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let registry = Registry::new();
    /// registry.register("db", Lifecycle::new(Noop), &[])?;
    /// registry.register("api", Lifecycle::new(Noop), &["db"])?;
    /// registry.start_with_deps("api")?;
    /// assert!(registry.stop("db").is_err()); // "api" still runs
    /// registry.stop("api")?;
    /// registry.stop("db")?;
    /// assert_eq!(registry.state("db")?, State::Stopped);
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub fn stop(&self, name: &str) -> Result<(), RegistryError> {
        self.run(name, Op::Stop)
    }

    /// Restart `name` (stop then start with no gap, or start it if stopped): refused while a
    /// service that requires it is not stopped, and, if it is not running, while a requirement
    /// is not running.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Registry, RegistryError, Service, State};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let registry = Registry::new();
    /// registry.register("worker", Lifecycle::new(Noop), &[])?;
    /// registry.restart("worker")?; // stopped: a plain start
    /// registry.restart("worker")?; // running: stop, then start with no gap
    /// assert_eq!(registry.state("worker")?, State::Running);
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub fn restart(&self, name: &str) -> Result<(), RegistryError> {
        self.run(name, Op::Restart)
    }

    fn run(&self, name: &str, op: Op) -> Result<(), RegistryError> {
        let claim = try_atomically(|tx| {
            if self.entry(tx, name)?.service.is_async() {
                return tx.abort(RegistryError::NeedsAsync(name.to_string()));
            }
            let entry = self.admit(tx, name, op)?;
            claim_or_abort(tx, name, &entry, op, None)
        })?;
        claim().map_err(|error| RegistryError::Service {
            service: name.to_string(),
            error,
        })
    }

    /// The checks of a start, stop or restart of `name` before its claim, in the claim's
    /// transaction: it exists, and its requirements run (for a start) or no dependent runs.
    fn admit(&self, tx: &mut Txn, name: &str, op: Op) -> StmResult<Arc<Entry>> {
        let entry = self.entry(tx, name)?;
        let state = entry.service.state_in(tx)?;
        let starts = op == Op::Start || (op == Op::Restart && state != State::Running);
        if starts && state.admits(op) {
            for requirement in &entry.requires {
                let Some(required) = self.services.get(tx, requirement.as_str())? else {
                    return tx.abort(RegistryError::MissingRequirement {
                        service: name.to_string(),
                        requirement: requirement.clone(),
                    });
                };
                let found = required.service.state_in(tx)?;
                if found != State::Running {
                    return tx.abort(RegistryError::RequirementNotRunning {
                        service: name.to_string(),
                        requirement: requirement.clone(),
                        state: found,
                    });
                }
            }
        }
        if !starts {
            self.refuse_if_dependent_runs(tx, name)?;
        }
        Ok(entry)
    }

    fn refuse_if_dependent_runs(&self, tx: &mut Txn, name: &str) -> StmResult<()> {
        for (dependent, entry) in self.services.snapshot(tx)? {
            if entry.requires.iter().any(|r| r == name) {
                let state = entry.service.state_in(tx)?;
                if !matches!(state, State::Stopped | State::Failed(_)) {
                    return tx.abort(RegistryError::DependentRunning {
                        service: name.to_string(),
                        dependent,
                        state,
                    });
                }
            }
        }
        Ok(())
    }

    /// Start `name` and, first, every service it requires directly or not that is not running:
    /// all claimed in one transaction (all or none), then started in dependency order. A
    /// service whose requirement failed to start is called off (back to `Stopped`). Returns
    /// the first failure.
    ///
    /// ```
    /// use mvstm::lifecycle::{Lifecycle, Registry, RegistryError, Service, State};
    /// struct Noop;
    /// impl Service for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let registry = Registry::new();
    /// registry.register("disk", Lifecycle::new(Noop), &[])?;
    /// registry.register("db", Lifecycle::new(Noop), &["disk"])?;
    /// registry.register("api", Lifecycle::new(Noop), &["db"])?;
    /// registry.start_with_deps("api")?; // disk, then db, then api
    /// assert!(registry.status().iter().all(|(_, state)| *state == State::Running));
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub fn start_with_deps(&self, name: &str) -> Result<(), RegistryError> {
        let claims = try_atomically(|tx| {
            let mut order = Vec::new();
            self.requirements_first(tx, name, &mut Vec::new(), &mut order)?;
            let mut claims = Vec::new();
            for (service, entry) in order {
                if service != name && entry.service.state_in(tx)? == State::Running {
                    continue;
                }
                let gate = self.requirements_running(tx, &entry)?;
                let claim = claim_or_abort(tx, &service, &entry, Op::Start, Some(gate))?;
                claims.push((service, claim));
            }
            Ok(claims)
        })?;
        let mut first_error = None;
        for (service, claim) in claims {
            if let Err(error) = claim() {
                first_error.get_or_insert(RegistryError::Service { service, error });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Post-order of the requirement graph from `name`: requirements before dependents.
    fn requirements_first(
        &self,
        tx: &mut Txn,
        name: &str,
        visiting: &mut Vec<String>,
        order: &mut Vec<(String, Arc<Entry>)>,
    ) -> StmResult<()> {
        if order.iter().any(|(done, _)| done == name) {
            return Ok(());
        }
        if let Some(at) = visiting.iter().position(|v| v == name) {
            let mut cycle = visiting[at..].to_vec();
            cycle.push(name.to_string());
            return tx.abort(RegistryError::Cycle(cycle));
        }
        let entry = self.entry(tx, name)?;
        visiting.push(name.to_string());
        for requirement in &entry.requires {
            self.requirements_first(tx, requirement, visiting, order)?;
        }
        visiting.pop();
        order.push((name.to_string(), entry));
        Ok(())
    }

    /// A gate that calls a start off unless every requirement of `entry` is running by then
    /// (in `start_with_deps` they start just before, in the same thread).
    fn requirements_running(&self, tx: &mut Txn, entry: &Entry) -> StmResult<Gate> {
        let mut requirements = Vec::with_capacity(entry.requires.len());
        for name in &entry.requires {
            requirements.push((name.clone(), self.entry(tx, name)?.service.clone()));
        }
        Ok(Box::new(move || {
            for (name, service) in requirements {
                let state = service.state();
                if state != State::Running {
                    return Err(format!("requirement `{name}` is {state}"));
                }
            }
            Ok(())
        }))
    }
}

/// The async face: the same checks and claims as the blocking calls, with the acts awaited.
#[cfg(feature = "async")]
impl Registry {
    /// Start `name`, as [`start`](Registry::start) does, as a future: an async service's start
    /// is awaited, a blocking service's runs inline on the thread that polls (as
    /// [`Lifecycle::start`] called from the task would). Works for both kinds, on any executor.
    ///
    /// Refused at once, as `start` is, while a requirement is not running. Dropped before it
    /// completes, it leaves nothing claimed: an async start cut short records `Failed`
    /// (cancelled), as [`AsyncLifecycle::start`](crate::AsyncLifecycle::start) does.
    ///
    /// ```
    /// use mvstm::lifecycle::{
    ///     AsyncLifecycle, AsyncService, Lifecycle, Registry, RegistryError, Service, State,
    /// };
    /// struct Db; // a blocking service
    /// impl Service for Db {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// struct Api; // an async one
    /// impl AsyncService for Api {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let registry = Registry::new();
    /// registry.register("db", Lifecycle::new(Db), &[])?;
    /// registry.register("api", AsyncLifecycle::new(Api), &["db"])?;
    /// futures::executor::block_on(async {
    ///     registry.start_async("db").await?;
    ///     registry.start_async("api").await?;
    ///     Ok::<(), RegistryError>(())
    /// })?;
    /// assert_eq!(registry.state("api")?, State::Running);
    /// // The blocking calls have no executor to await `api` on: refused, nothing claimed.
    /// assert!(matches!(registry.stop("api"), Err(RegistryError::NeedsAsync(_))));
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub async fn start_async(&self, name: &str) -> Result<(), RegistryError> {
        self.run_async(name, Op::Start).await
    }

    /// Stop `name`, as [`stop`](Registry::stop) does, as a future (see
    /// [`start_async`](Registry::start_async)); refused while a service that requires it is not
    /// stopped.
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, Registry, RegistryError, State};
    /// struct Noop;
    /// impl AsyncService for Noop {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let registry = Registry::new();
    /// registry.register("db", AsyncLifecycle::new(Noop), &[])?;
    /// registry.register("api", AsyncLifecycle::new(Noop), &["db"])?;
    /// futures::executor::block_on(async {
    ///     registry.start_with_deps_async("api").await?;
    ///     let refused = registry.stop_async("db").await; // "api" still runs
    ///     assert!(matches!(refused, Err(RegistryError::DependentRunning { .. })));
    ///     registry.stop_async("api").await?;
    ///     registry.stop_async("db").await
    /// })?;
    /// assert_eq!(registry.state("db")?, State::Stopped);
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub async fn stop_async(&self, name: &str) -> Result<(), RegistryError> {
        self.run_async(name, Op::Stop).await
    }

    /// Restart `name`, as [`restart`](Registry::restart) does, as a future (see
    /// [`start_async`](Registry::start_async)).
    ///
    /// ```
    /// use mvstm::lifecycle::{AsyncLifecycle, AsyncService, Registry, RegistryError, State};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// #[derive(Default)]
    /// struct Worker { starts: AtomicU32 }
    /// impl AsyncService for Worker {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> {
    ///         self.starts.fetch_add(1, Ordering::SeqCst);
    ///         Ok(())
    ///     }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let worker = AsyncLifecycle::new(Worker::default());
    /// let registry = Registry::new();
    /// registry.register("worker", worker.clone(), &[])?;
    /// futures::executor::block_on(async {
    ///     registry.restart_async("worker").await?; // stopped: a plain start
    ///     registry.restart_async("worker").await // running: stop, then start with no gap
    /// })?;
    /// assert_eq!(worker.service().starts.load(Ordering::SeqCst), 2);
    /// assert_eq!(registry.state("worker")?, State::Running);
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub async fn restart_async(&self, name: &str) -> Result<(), RegistryError> {
        self.run_async(name, Op::Restart).await
    }

    /// Start `name` and every requirement that is not running, as
    /// [`start_with_deps`](Registry::start_with_deps) does (all claimed in one transaction,
    /// then started in dependency order), as a future: each start is awaited before the next
    /// begins. Dropped midway, the start in progress is recorded as an async start cut short
    /// (`Failed`, cancelled) and the ones not begun go back to `Stopped`.
    ///
    /// ```
    /// use mvstm::lifecycle::{
    ///     AsyncLifecycle, AsyncService, Lifecycle, Registry, RegistryError, Service, State,
    /// };
    /// struct Disk;
    /// impl Service for Disk {
    ///     type Running = ();
    ///     type Error = String;
    ///     fn start(&self) -> Result<(), String> { Ok(()) }
    ///     fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// struct Net;
    /// impl AsyncService for Net {
    ///     type Running = ();
    ///     type Error = String;
    ///     async fn start(&self) -> Result<(), String> { Ok(()) }
    ///     async fn stop(&self, _: ()) -> Result<(), String> { Ok(()) }
    /// }
    /// let registry = Registry::new();
    /// registry.register("disk", Lifecycle::new(Disk), &[])?;
    /// registry.register("db", AsyncLifecycle::new(Net), &["disk"])?;
    /// registry.register("api", AsyncLifecycle::new(Net), &["db"])?;
    /// futures::executor::block_on(registry.start_with_deps_async("api"))?; // disk, db, api
    /// assert!(registry.status().iter().all(|(_, state)| *state == State::Running));
    /// # Ok::<(), RegistryError>(())
    /// ```
    pub async fn start_with_deps_async(&self, name: &str) -> Result<(), RegistryError> {
        let panics = PanicSlot::default();
        let slots = try_atomically(|tx| {
            let mut order = Vec::new();
            self.requirements_first(tx, name, &mut Vec::new(), &mut order)?;
            let mut slots = Vec::new();
            for (service, entry) in order {
                if service != name && entry.service.state_in(tx)? == State::Running {
                    continue;
                }
                let gate = self.requirements_running(tx, &entry)?;
                let slot = claim_deferred_or_abort(tx, &service, &entry, gate, &panics)?;
                slots.push((service, slot));
            }
            Ok(slots)
        })?;
        // Every act is armed: from here on, dropping this future records each claim.
        let acts: Vec<(String, Act)> = slots
            .into_iter()
            .map(|(service, slot)| (service, armed(&slot)))
            .collect();
        let mut first_error = None;
        for (service, act) in acts {
            if let Err(error) = act.await {
                first_error.get_or_insert(RegistryError::Service { service, error });
            }
        }
        reraise(&panics);
        first_error.map_or(Ok(()), Err)
    }

    async fn run_async(&self, name: &str, op: Op) -> Result<(), RegistryError> {
        let panics = PanicSlot::default();
        let slot = try_atomically(|tx| {
            let entry = self.admit(tx, name, op)?;
            match entry.service.try_claim_deferred(tx, op, None, &panics)? {
                Ok(slot) => Ok(slot),
                Err(refused) => tx.abort(refused_error(name, refused)),
            }
        })?;
        let outcome = armed(&slot).await;
        reraise(&panics);
        outcome.map_err(|error| RegistryError::Service {
            service: name.to_string(),
            error,
        })
    }
}

/// A deferred start claim of `entry` in `tx` (`start_with_deps_async`), or abort `tx`.
#[cfg(feature = "async")]
fn claim_deferred_or_abort(
    tx: &mut Txn,
    name: &str,
    entry: &Entry,
    gate: Gate,
    panics: &PanicSlot,
) -> StmResult<ActSlot> {
    match entry
        .service
        .try_claim_deferred(tx, Op::Start, Some(gate), panics)?
    {
        Ok(slot) => Ok(slot),
        Err(refused) => tx.abort(refused_error(name, refused)),
    }
}

/// The act a committed deferred claim's hook armed.
#[cfg(feature = "async")]
fn armed(slot: &ActSlot) -> Act {
    slot.lock()
        .take()
        .expect("a committed claim's after_commit hook armed its act")
}

/// Re-raise a subscriber's panic held while the outcomes were recorded.
#[cfg(feature = "async")]
fn reraise(panics: &PanicSlot) {
    let panic = panics.lock().take();
    if let Some(panic) = panic {
        std::panic::resume_unwind(panic);
    }
}

fn refused_error(name: &str, refused: ClaimError) -> RegistryError {
    RegistryError::Service {
        service: name.to_string(),
        error: LifecycleError::Refused(refused),
    }
}

fn claim_or_abort(
    tx: &mut Txn,
    name: &str,
    entry: &Entry,
    op: Op,
    gate: Option<Gate>,
) -> StmResult<ErasedClaim> {
    if entry.service.is_async() {
        return tx.abort(RegistryError::NeedsAsync(name.to_string()));
    }
    match entry.service.try_claim(tx, op, gate)? {
        Ok(claim) => Ok(claim),
        Err(refused) => tx.abort(refused_error(name, refused)),
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.status()).finish()
    }
}
