//! `Registry`: named services of any types, with dependencies, in one transactional map.
//!
//! Each entry holds a type-erased lifecycle and the names it requires. Every check a start or
//! stop makes (the service exists, its requirements run, no dependent runs) is a read in the
//! same transaction as its claim, so the checks and the claim are one atomic step: a start of
//! `api` that saw `db` running and a stop of `db` that saw `api` stopped cannot both commit.

use crate::error::{ClaimError, LifecycleError};
use crate::lifecycle::{Claim, Gate, Lifecycle, Service};
use crate::state::{Op, State};
use mvstm_collections::TMap;
use mvstm_core::{atomically, try_atomically, StmResult, Txn};
use std::collections::HashSet;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Named services with dependencies.
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

/// A lifecycle with its service type erased.
trait Managed: Send + Sync {
    fn try_claim(
        &self,
        tx: &mut Txn,
        op: Op,
        gate: Option<Gate>,
    ) -> StmResult<Result<ErasedClaim, ClaimError>>;
    fn state_in(&self, tx: &mut Txn) -> StmResult<State>;
    fn state(&self) -> State;
}

type ErasedClaim = Box<dyn FnOnce() -> Result<(), LifecycleError<String>>>;

impl<S: Service> Managed for Lifecycle<S> {
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

    fn state_in(&self, tx: &mut Txn) -> StmResult<State> {
        Lifecycle::state_in(self, tx)
    }

    fn state(&self) -> State {
        Lifecycle::state(self)
    }
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
    pub fn register<S: Service>(
        &self,
        name: &str,
        lifecycle: Lifecycle<S>,
        requires: &[&str],
    ) -> Result<(), RegistryError> {
        let entry = Arc::new(Entry {
            service: Arc::new(lifecycle),
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
            claim_or_abort(tx, name, &entry, op, None)
        })?;
        claim().map_err(|error| RegistryError::Service {
            service: name.to_string(),
            error,
        })
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

fn claim_or_abort(
    tx: &mut Txn,
    name: &str,
    entry: &Entry,
    op: Op,
    gate: Option<Gate>,
) -> StmResult<ErasedClaim> {
    match entry.service.try_claim(tx, op, gate)? {
        Ok(claim) => Ok(claim),
        Err(refused) => tx.abort(RegistryError::Service {
            service: name.to_string(),
            error: LifecycleError::Refused(refused),
        }),
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.status()).finish()
    }
}
