//! `Registry`: names, dependencies, refusals, cycles, and races between dependents.

mod common;

use common::{finish, spawn_reporting};
use mvstm::lifecycle::{Lifecycle, LifecycleError, Registry, RegistryError, Service, State};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts starts and stops; fails its start while `broken` is set, and holds it (spinning)
/// while `hold` is set.
#[derive(Default)]
struct Unit {
    broken: AtomicBool,
    hold: AtomicBool,
    starts: AtomicUsize,
}

impl Service for Unit {
    type Running = ();
    type Error = String;

    fn start(&self) -> Result<(), String> {
        while self.hold.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if self.broken.load(Ordering::SeqCst) {
            return Err("disk missing".into());
        }
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn stop(&self, (): ()) -> Result<(), String> {
        Ok(())
    }
}

fn chain() -> (Registry, [Lifecycle<Unit>; 3]) {
    let registry = Registry::new();
    let units = [(); 3].map(|()| Lifecycle::new(Unit::default()));
    registry.register("db", units[0].clone(), &[]).unwrap();
    registry
        .register("cache", units[1].clone(), &["db"])
        .unwrap();
    registry
        .register("api", units[2].clone(), &["db", "cache"])
        .unwrap();
    (registry, units)
}

#[test]
fn unknown_names_and_duplicates_are_refused_clearly() {
    let (registry, _) = chain();
    let unknown = registry.start("mail").unwrap_err();
    assert!(matches!(&unknown, RegistryError::Unknown(n) if n == "mail"));
    assert_eq!(unknown.to_string(), "unknown service `mail`");
    assert!(matches!(
        registry.state("mail"),
        Err(RegistryError::Unknown(_))
    ));
    let duplicate = registry.register("db", Lifecycle::new(Unit::default()), &[]);
    assert_eq!(
        duplicate.unwrap_err().to_string(),
        "a service named `db` is already registered"
    );
}

#[test]
fn cycles_are_refused_at_registration() {
    let registry = Registry::new();
    // Forward references are fine until they close a loop.
    registry
        .register("a", Lifecycle::new(Unit::default()), &["b"])
        .unwrap();
    registry
        .register("b", Lifecycle::new(Unit::default()), &["c"])
        .unwrap();
    let cycle = registry.register("c", Lifecycle::new(Unit::default()), &["a"]);
    match cycle {
        Err(RegistryError::Cycle(path)) => assert_eq!(path, ["c", "a", "b", "c"]),
        other => panic!("expected a cycle, got {other:?}"),
    }
    let own = registry.register("d", Lifecycle::new(Unit::default()), &["d"]);
    assert_eq!(own.unwrap_err().to_string(), "dependency cycle: d -> d");
    // A requirement never registered is an unknown name when it matters.
    let lonely = Registry::new();
    lonely
        .register("x", Lifecycle::new(Unit::default()), &["ghost"])
        .unwrap();
    assert_eq!(
        lonely.start("x").unwrap_err().to_string(),
        "cannot start `x`: it requires `ghost`, which is not registered"
    );
    assert!(matches!(lonely.start_with_deps("x"), Err(RegistryError::Unknown(n)) if n == "ghost"));
}

#[test]
fn starts_need_running_requirements_and_stops_need_stopped_dependents() {
    let (registry, units) = chain();
    let refused = registry.start("cache").unwrap_err();
    assert_eq!(
        refused.to_string(),
        "cannot start `cache`: it requires `db`, which is stopped"
    );
    registry.start("db").unwrap();
    registry.start("cache").unwrap();
    registry.start("api").unwrap();
    let refused = registry.stop("db").unwrap_err();
    assert!(
        matches!(&refused, RegistryError::DependentRunning { dependent, .. } if dependent == "cache" || dependent == "api"),
        "{refused}"
    );
    assert!(matches!(
        registry.restart("cache"),
        Err(RegistryError::DependentRunning { .. })
    ));
    registry.restart("api").unwrap();
    assert_eq!(units[2].service().starts.load(Ordering::SeqCst), 2);
    registry.stop("api").unwrap();
    registry.stop("cache").unwrap();
    registry.stop("db").unwrap();
    assert!(registry.status().iter().all(|(_, s)| *s == State::Stopped));
    // The lifecycle's own refusal comes through with the name.
    let again = registry.stop("db").unwrap_err();
    assert_eq!(
        again.to_string(),
        "`db`: cannot stop: the service is stopped"
    );
}

#[test]
fn start_with_deps_starts_in_dependency_order_all_or_none() {
    let (registry, units) = chain();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    for (name, unit) in ["db", "cache", "api"].iter().zip(&units) {
        let order = Arc::clone(&order);
        unit.subscribe(move |t| {
            if t.to == State::Running {
                order.lock().unwrap().push(*name);
            }
        });
    }
    registry.start_with_deps("api").unwrap();
    assert_eq!(*order.lock().unwrap(), ["db", "cache", "api"]);

    // Already running requirements are left alone; a busy target refuses the whole claim.
    registry.stop("api").unwrap();
    registry.start_with_deps("api").unwrap();
    assert_eq!(units[0].service().starts.load(Ordering::SeqCst), 1);
    assert!(matches!(
        registry.start_with_deps("api"),
        Err(RegistryError::Service {
            error: LifecycleError::Refused(_),
            ..
        })
    ));
}

#[test]
fn start_with_deps_calls_off_dependents_of_a_failed_requirement() {
    let (registry, units) = chain();
    units[0].service().broken.store(true, Ordering::SeqCst);
    let failed = registry.start_with_deps("api").unwrap_err();
    assert!(
        matches!(&failed, RegistryError::Service { service, error: LifecycleError::Failed(e) } if service == "db" && e == "disk missing"),
        "{failed}"
    );
    assert!(matches!(registry.state("db").unwrap(), State::Failed(_)));
    // The dependents were claimed, then called off: stopped, never started.
    assert_eq!(registry.state("cache").unwrap(), State::Stopped);
    assert_eq!(registry.state("api").unwrap(), State::Stopped);
    assert_eq!(units[1].service().starts.load(Ordering::SeqCst), 0);
    units[0].service().broken.store(false, Ordering::SeqCst);
    registry.start_with_deps("api").unwrap();
    assert_eq!(registry.state("api").unwrap(), State::Running);
}

#[test]
fn a_dependent_start_and_a_requirement_stop_never_both_win() {
    // Race `start api` (needs db running) against `stop db` (needs api stopped) many times:
    // never may api run while db is not.
    for _ in 0..300 {
        let registry = Registry::new();
        registry
            .register("db", Lifecycle::new(Unit::default()), &[])
            .unwrap();
        registry
            .register("api", Lifecycle::new(Unit::default()), &["db"])
            .unwrap();
        registry.start("db").unwrap();
        let (a, b) = (registry.clone(), registry.clone());
        // Released together, so the two requests overlap instead of running in spawn order.
        let gate = Arc::new(std::sync::Barrier::new(2));
        let (ga, gb) = (gate.clone(), gate);
        let start = spawn_reporting(move || {
            ga.wait();
            a.start("api").is_ok()
        });
        let stop = spawn_reporting(move || {
            gb.wait();
            b.stop("db").is_ok()
        });
        let (started, stopped) = (finish(&start, "start api"), finish(&stop, "stop db"));
        assert!(!(started && stopped), "api started while db stopped");
        let status = registry.status();
        let running = |name: &str| {
            status
                .iter()
                .any(|(n, s)| n == name && *s == State::Running)
        };
        assert!(!running("api") || running("db"), "{status:?}");
    }
}

#[test]
fn start_with_deps_claims_none_while_a_member_is_busy() {
    let (registry, units) = chain();
    // `cache` is held in `Starting` by another request.
    units[0].start().unwrap();
    units[1].service().hold.store(true, Ordering::SeqCst);
    let busy = {
        let registry = registry.clone();
        spawn_reporting(move || registry.start("cache"))
    };
    units[1]
        .wait_for(|s| *s == State::Starting, common::LIMIT)
        .unwrap();
    let refused = registry.start_with_deps("api").unwrap_err();
    assert!(
        matches!(&refused, RegistryError::Service { service, error: LifecycleError::Refused(_) } if service == "cache"),
        "{refused}"
    );
    // None of the group was claimed: `api` never left `Stopped`, nothing else started.
    assert_eq!(registry.state("api").unwrap(), State::Stopped);
    assert_eq!(units[2].history().len(), 0);
    assert_eq!(units[0].service().starts.load(Ordering::SeqCst), 1);
    units[1].service().hold.store(false, Ordering::SeqCst);
    finish(&busy, "the held start").unwrap();
    registry.start_with_deps("api").unwrap();
}
