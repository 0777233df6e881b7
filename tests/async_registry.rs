//! `Registry` from async code: blocking and async services in one registry, the `*_async` calls
//! on tokio and on `futures`' executors, the blocking calls refusing async entries, mixed users
//! (threads and tasks) racing on one registry, and futures dropped midway.

mod common;

use common::{finish, panic_message, spawn_reporting};
use futures::executor::{block_on, LocalPool};
use futures::task::LocalSpawnExt;
use mvstm::lifecycle::{
    AsyncLifecycle, AsyncService, Lifecycle, LifecycleError, Op, Registry, RegistryError, Service,
    State,
};
use mvstm::{atomically, atomically_async, retry, TVar};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The order in which services really started, shared by the services of one test.
type Starts = Arc<Mutex<Vec<&'static str>>>;

/// A blocking service that logs its starts.
struct Blocking {
    name: &'static str,
    starts: Starts,
}

impl Service for Blocking {
    type Running = ();
    type Error = String;

    fn start(&self) -> Result<(), String> {
        self.starts.lock().unwrap().push(self.name);
        Ok(())
    }

    fn stop(&self, (): ()) -> Result<(), String> {
        Ok(())
    }
}

/// An async service that logs its starts; while `hold` is set its start waits (asynchronously,
/// on any executor) for `hold` to clear, and while `broken` is set it fails.
struct Awaiting {
    name: &'static str,
    starts: Starts,
    hold: TVar<bool>,
    broken: AtomicBool,
    entered: AtomicUsize,
}

impl Awaiting {
    fn new(name: &'static str, starts: &Starts) -> Awaiting {
        Awaiting {
            name,
            starts: starts.clone(),
            hold: TVar::new(false),
            broken: AtomicBool::new(false),
            entered: AtomicUsize::new(0),
        }
    }
}

impl AsyncService for Awaiting {
    type Running = ();
    type Error = String;

    async fn start(&self) -> Result<(), String> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let hold = &self.hold;
        atomically_async(|tx| if tx.read(hold)? { retry() } else { Ok(()) }).await;
        if self.broken.load(Ordering::SeqCst) {
            return Err("no route".into());
        }
        self.starts.lock().unwrap().push(self.name);
        Ok(())
    }

    async fn stop(&self, (): ()) -> Result<(), String> {
        Ok(())
    }
}

/// `disk` (blocking) <- `db` (async) <- `api` (blocking): requirements that cross the kinds.
struct Chain {
    registry: Registry,
    starts: Starts,
    db: AsyncLifecycle<Awaiting>,
}

fn chain() -> Chain {
    let starts = Starts::default();
    let registry = Registry::new();
    let db = AsyncLifecycle::new(Awaiting::new("db", &starts));
    let blocking = |name| {
        Lifecycle::new(Blocking {
            name,
            starts: starts.clone(),
        })
    };
    registry.register("disk", blocking("disk"), &[]).unwrap();
    registry.register("db", db.clone(), &["disk"]).unwrap();
    registry.register("api", blocking("api"), &["db"]).unwrap();
    Chain {
        registry,
        starts,
        db,
    }
}

fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

fn states(registry: &Registry) -> Vec<(String, State)> {
    registry.status()
}

#[test]
fn one_registry_holds_both_kinds_and_the_async_calls_run_both() {
    let Chain {
        registry, starts, ..
    } = chain();
    block_on(async {
        registry.start_with_deps_async("api").await.unwrap();
        assert_eq!(*starts.lock().unwrap(), ["disk", "db", "api"]);
        let refused = registry.stop_async("db").await.unwrap_err();
        assert!(
            matches!(&refused, RegistryError::DependentRunning { service, dependent, state }
                if service == "db" && dependent == "api" && *state == State::Running),
            "{refused}"
        );
        registry.restart_async("db").await.unwrap_err(); // api still runs: refused too
        registry.stop_async("api").await.unwrap();
        registry.restart_async("db").await.unwrap(); // async: stop, then start
        registry.restart_async("api").await.unwrap(); // blocking, stopped: a plain start
        assert_eq!(*starts.lock().unwrap(), ["disk", "db", "api", "db", "api"]);
        registry.stop_async("api").await.unwrap();
        registry.stop_async("db").await.unwrap();
        registry.stop_async("disk").await.unwrap();
    });
    assert!(states(&registry)
        .iter()
        .all(|(_, state)| *state == State::Stopped));
}

#[test]
fn the_blocking_calls_refuse_async_entries_and_claim_nothing() {
    let Chain {
        registry,
        db,
        starts,
        ..
    } = chain();
    registry.start("disk").unwrap();
    for (what, refused) in [
        ("start", registry.start("db")),
        ("restart", registry.restart("db")),
        ("start_with_deps", registry.start_with_deps("api")),
    ] {
        match refused {
            Err(RegistryError::NeedsAsync(name)) => assert_eq!(name, "db", "{what}"),
            other => panic!("{what}: expected NeedsAsync, got {other:?}"),
        }
    }
    let message = registry.start("db").unwrap_err().to_string();
    assert!(message.contains("`db` is an async service"), "{message}");
    // Nothing was claimed: db never left Stopped, and api was not claimed with the group.
    assert!(db.history().is_empty());
    assert_eq!(registry.state("api").unwrap(), State::Stopped);
    assert_eq!(*starts.lock().unwrap(), ["disk"]);

    // Blocking calls on blocking entries read async requirements and dependents as usual.
    assert!(matches!(
        registry.start("api"),
        Err(RegistryError::RequirementNotRunning { ref requirement, .. }) if requirement == "db"
    ));
    block_on(registry.start_async("db")).unwrap();
    registry.start("api").unwrap();
    assert!(matches!(
        registry.stop("disk"),
        Err(RegistryError::DependentRunning { ref dependent, .. }) if dependent == "db"
    ));
    assert!(matches!(
        registry.stop("db"),
        Err(RegistryError::NeedsAsync(_))
    ));
    registry.stop("api").unwrap();
    block_on(registry.stop_async("db")).unwrap();
    registry.stop("disk").unwrap();
}

#[test]
fn start_with_deps_async_dropped_midway_leaves_nothing_claimed() {
    let Chain {
        registry,
        starts,
        db,
        ..
    } = chain();
    atomically(|tx| tx.write(&db.service().hold, true));
    {
        let mut group = pin!(registry.start_with_deps_async("api"));
        assert!(poll_once(group.as_mut()).is_pending());
        // disk started (blocking, inline in the poll); db is starting, held; api is claimed.
        assert_eq!(registry.state("disk").unwrap(), State::Running);
        assert_eq!(registry.state("db").unwrap(), State::Starting);
        assert_eq!(registry.state("api").unwrap(), State::Starting);
        assert_eq!(db.service().entered.load(Ordering::SeqCst), 1);
    } // dropped while db's start awaits
    match registry.state("db").unwrap() {
        State::Failed(f) => {
            assert_eq!(f.during, Op::Start);
            assert!(f.message.contains("cancelled"), "{}", f.message);
        }
        other => panic!("db after the drop: {other:?}"),
    }
    // api's start never began: it is back to Stopped, which is true.
    assert_eq!(registry.state("api").unwrap(), State::Stopped);
    assert_eq!(*starts.lock().unwrap(), ["disk"]);
    // Nothing is stuck: the group starts once db may.
    atomically(|tx| tx.write(&db.service().hold, false));
    block_on(registry.start_with_deps_async("api")).unwrap();
    assert_eq!(*starts.lock().unwrap(), ["disk", "db", "api"]);
}

#[test]
fn a_failing_async_requirement_calls_off_its_dependents() {
    let Chain {
        registry,
        starts,
        db,
        ..
    } = chain();
    db.service().broken.store(true, Ordering::SeqCst);
    let failed = block_on(registry.start_with_deps_async("api")).unwrap_err();
    assert!(
        matches!(&failed, RegistryError::Service { service, error: LifecycleError::Failed(e) }
            if service == "db" && e == "no route"),
        "{failed}"
    );
    assert_eq!(registry.state("disk").unwrap(), State::Running);
    assert!(matches!(registry.state("db").unwrap(), State::Failed(_)));
    assert_eq!(registry.state("api").unwrap(), State::Stopped); // called off
    assert_eq!(*starts.lock().unwrap(), ["disk"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_async_starts_of_one_service_run_it_once() {
    for _ in 0..20 {
        let Chain {
            registry, starts, ..
        } = chain();
        registry.start("disk").unwrap();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let registry = registry.clone();
                tokio::spawn(async move { registry.start_async("db").await })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(()) => won += 1,
                Err(RegistryError::Service {
                    error: LifecycleError::Refused(e),
                    ..
                }) => assert_eq!(e.op, Op::Start),
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(*starts.lock().unwrap(), ["disk", "db"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_starting_a_dependent_and_a_thread_stopping_its_requirement_never_both_win() {
    // A task's `start_async("api")` (async api, needs db running) against a thread's blocking
    // `stop("db")` (blocking db, needs api stopped): never may api run while db does not.
    for _ in 0..200 {
        let starts = Starts::default();
        let registry = Registry::new();
        let db = Lifecycle::new(Blocking {
            name: "db",
            starts: starts.clone(),
        });
        registry.register("db", db, &[]).unwrap();
        let api = AsyncLifecycle::new(Awaiting::new("api", &starts));
        registry.register("api", api, &["db"]).unwrap();
        registry.start("db").unwrap();
        // Both wait on one TVar, a thread blocked and a task pending, and one commit releases
        // both, so the two requests overlap instead of running in spawn order.
        let go = TVar::new(false);
        let stop = {
            let (registry, go) = (registry.clone(), go.clone());
            spawn_reporting(move || {
                atomically(|tx| if tx.read(&go)? { Ok(()) } else { retry() });
                registry.stop("db").is_ok()
            })
        };
        let start = {
            let (registry, go) = (registry.clone(), go.clone());
            tokio::spawn(async move {
                atomically_async(|tx| if tx.read(&go)? { Ok(()) } else { retry() }).await;
                registry.start_async("api").await.is_ok()
            })
        };
        atomically(|tx| tx.write(&go, true));
        let started = start.await.unwrap();
        let stopped = finish(&stop, "stop db");
        assert!(!(started && stopped), "api started while db stopped");
        let running = |name: &str| registry.state(name).unwrap() == State::Running;
        assert!(!running("api") || running("db"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_async_cut_by_a_timeout_or_an_aborted_task_is_recorded() {
    let Chain { registry, db, .. } = chain();
    registry.start("disk").unwrap();
    atomically(|tx| tx.write(&db.service().hold, true));
    let cut = tokio::time::timeout(Duration::from_millis(20), registry.start_async("db")).await;
    assert!(cut.is_err(), "the held start finished");
    assert!(matches!(registry.state("db").unwrap(), State::Failed(ref f) if f.during == Op::Start));

    let task = {
        let registry = registry.clone();
        tokio::spawn(async move { registry.start_async("db").await })
    };
    db.wait_for(|s| *s == State::Starting, common::LIMIT)
        .await
        .unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(matches!(registry.state("db").unwrap(), State::Failed(_)));

    atomically(|tx| tx.write(&db.service().hold, false));
    registry.start_async("db").await.unwrap();
    registry.start_async("api").await.unwrap();
}

#[test]
fn the_async_calls_run_on_a_local_pool_and_their_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let Chain {
        registry, starts, ..
    } = chain();
    assert_send(&registry.start_async("disk"));
    assert_send(&registry.stop_async("disk"));
    assert_send(&registry.restart_async("disk"));
    assert_send(&registry.start_with_deps_async("api"));

    let mut pool = LocalPool::new();
    let done = Arc::new(AtomicBool::new(false));
    {
        let (registry, done) = (registry.clone(), done.clone());
        pool.spawner()
            .spawn_local(async move {
                registry.start_with_deps_async("api").await.unwrap();
                registry.stop_async("api").await.unwrap();
                done.store(true, Ordering::SeqCst);
            })
            .unwrap();
    }
    pool.run();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(*starts.lock().unwrap(), ["disk", "db", "api"]);
    assert_eq!(registry.state("api").unwrap(), State::Stopped);
}

#[test]
fn a_subscriber_panic_is_raised_after_the_outcome_is_recorded() {
    let Chain { registry, db, .. } = chain();
    registry.start("disk").unwrap();
    db.subscribe(|t| {
        if t.to == State::Running {
            panic!("subscriber exploded");
        }
    });
    let raised = catch_unwind(AssertUnwindSafe(|| block_on(registry.start_async("db"))));
    let panic = raised.expect_err("the subscriber's panic reaches the caller");
    assert_eq!(panic_message(&*panic), "subscriber exploded");
    // The outcome was recorded first: db runs, nothing is left claimed.
    assert_eq!(registry.state("db").unwrap(), State::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waits_for_a_blocking_service_that_a_thread_starts() {
    let Chain {
        registry, starts, ..
    } = chain();
    let disk = Lifecycle::new(Blocking {
        name: "scratch",
        starts: starts.clone(),
    });
    registry.register("scratch", disk.clone(), &[]).unwrap();
    let waiter = {
        let disk = disk.clone();
        tokio::spawn(async move {
            disk.wait_for_async(|s| *s == State::Running, common::LIMIT)
                .await
        })
    };
    let starter = {
        let registry = registry.clone();
        spawn_reporting(move || registry.start("scratch"))
    };
    assert_eq!(waiter.await.unwrap(), Ok(State::Running));
    finish(&starter, "start scratch").unwrap();
    // Nothing stops it: the wait gives up without blocking a worker, and says where it is.
    let gave_up = disk
        .wait_for_async(|s| *s == State::Stopped, Duration::from_millis(10))
        .await;
    assert_eq!(gave_up.unwrap_err().last, State::Running);
}
