//! `AsyncLifecycle`: the claim–act–record protocol with async `start`/`stop`, on tokio's
//! multi-thread runtime and on `futures`' executor. Concurrent starts run the service once; a
//! failing, panicking or cancelled (dropped) start or stop leaves the service `Failed`, never
//! stuck in `Starting`/`Stopping`, and startable again; restart, `wait_for` and subscribers; the
//! futures are `Send`.

mod common;

use common::panic_message;
use futures::executor::block_on;
use mvstm::lifecycle::{AsyncLifecycle, AsyncService, LifecycleError, Op, State};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::Notify;

/// A service that counts its starts and stops and how many instances are live, and behaves as
/// told: fail, panic, or wait for `release` before finishing a start.
#[derive(Default)]
struct Probe {
    starts: AtomicU32,
    stops: AtomicU32,
    running_now: AtomicU32,
    overlapping: AtomicBool,
    fail: AtomicBool,
    panic: AtomicBool,
    hold_start: AtomicBool,
    hold_stop: AtomicBool,
    release: Notify,
}

/// The service: a handle on the probe the test keeps.
struct Svc(Arc<Probe>);

impl std::ops::Deref for Svc {
    type Target = Probe;
    fn deref(&self) -> &Probe {
        &self.0
    }
}

/// A running instance; the probe counts it out when it is dropped.
struct Instance(Arc<Probe>);

impl AsyncService for Svc {
    type Running = Instance;
    type Error = String;

    async fn start(&self) -> Result<Instance, String> {
        if self.running_now.fetch_add(1, Ordering::SeqCst) != 0 {
            self.overlapping.store(true, Ordering::SeqCst);
        }
        self.starts.fetch_add(1, Ordering::SeqCst);
        // Give the executor a chance to run racing starts while this one is in progress.
        tokio::task::yield_now().await;
        let holding = self.hold_start.load(Ordering::SeqCst);
        if holding {
            self.release.notified().await;
        }
        if self.panic.load(Ordering::SeqCst) {
            self.running_now.fetch_sub(1, Ordering::SeqCst);
            panic!("start exploded");
        }
        if self.fail.load(Ordering::SeqCst) {
            self.running_now.fetch_sub(1, Ordering::SeqCst);
            return Err("no port".into());
        }
        Ok(Instance(Arc::clone(&self.0)))
    }

    async fn stop(&self, running: Instance) -> Result<(), String> {
        self.stops.fetch_add(1, Ordering::SeqCst);
        if self.hold_stop.load(Ordering::SeqCst) {
            self.release.notified().await;
        }
        drop(running);
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.0.running_now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn probe() -> (Arc<Probe>, AsyncLifecycle<Svc>) {
    let probe = Arc::new(Probe::default());
    (probe.clone(), AsyncLifecycle::new(Svc(probe)))
}

fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_run_the_service_once() {
    for _ in 0..20 {
        let (probe, service) = probe();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let service = service.clone();
                tokio::spawn(async move { service.start().await })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(()) => won += 1,
                Err(LifecycleError::Refused(e)) => assert_eq!(e.op, Op::Start),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(probe.starts.load(Ordering::SeqCst), 1);
        assert!(!probe.overlapping.load(Ordering::SeqCst));
        assert_eq!(service.state(), State::Running);
        service.stop().await.unwrap();
        assert_eq!(probe.running_now.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn a_failing_start_leaves_it_failed_and_startable() {
    let (probe, service) = probe();
    probe.fail.store(true, Ordering::SeqCst);
    let r = block_on(service.start());
    assert!(
        matches!(r, Err(LifecycleError::Failed(ref e)) if e == "no port"),
        "{r:?}"
    );
    match service.state() {
        State::Failed(f) => {
            assert_eq!(f.during, Op::Start);
            assert!(!f.panicked);
            assert_eq!(&*f.message, "no port");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    probe.fail.store(false, Ordering::SeqCst);
    block_on(service.start()).unwrap();
    assert_eq!(service.state(), State::Running);
}

#[test]
fn a_panicking_start_leaves_it_failed_not_stuck() {
    let (probe, service) = probe();
    probe.panic.store(true, Ordering::SeqCst);
    let r = block_on(service.start());
    assert!(
        matches!(r, Err(LifecycleError::Panicked(ref m)) if m == "start exploded"),
        "{r:?}"
    );
    assert!(matches!(service.state(), State::Failed(ref f) if f.panicked));
    probe.panic.store(false, Ordering::SeqCst);
    block_on(service.start()).unwrap();
}

#[test]
fn a_start_dropped_midway_is_recorded_as_cancelled() {
    let (probe, service) = probe();
    probe.hold_start.store(true, Ordering::SeqCst);
    {
        let mut start = pin!(service.start());
        assert!(poll_once(start.as_mut()).is_pending());
        assert!(poll_once(start.as_mut()).is_pending());
        assert_eq!(service.state(), State::Starting);
    } // dropped while the service's start awaits
    match service.state() {
        State::Failed(f) => {
            assert_eq!(f.during, Op::Start);
            assert!(f.message.contains("cancelled"), "{}", f.message);
        }
        other => panic!("a dropped start left {other:?}"),
    }
    let steps: Vec<State> = service.history().into_iter().map(|t| t.to).collect();
    assert!(matches!(
        steps.as_slice(),
        [State::Starting, State::Failed(_)]
    ));
    // Startable again (the dropped start's count is reset: it never made an instance).
    probe.hold_start.store(false, Ordering::SeqCst);
    probe.running_now.store(0, Ordering::SeqCst);
    block_on(service.start()).unwrap();
    assert_eq!(service.state(), State::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_cut_by_a_timeout_or_an_aborted_task_is_recorded() {
    let (probe, service) = probe();
    probe.hold_start.store(true, Ordering::SeqCst);
    let cut = tokio::time::timeout(Duration::from_millis(20), service.start()).await;
    assert!(cut.is_err(), "the held start finished");
    assert!(matches!(service.state(), State::Failed(ref f) if f.during == Op::Start));

    let task = {
        let service = service.clone();
        tokio::spawn(async move { service.start().await })
    };
    while service.state() != State::Starting {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(matches!(service.state(), State::Failed(ref f) if f.message.contains("cancelled")));
}

#[test]
fn a_stop_dropped_midway_is_recorded_and_the_instance_is_consumed() {
    let (probe, service) = probe();
    block_on(service.start()).unwrap();
    probe.hold_stop.store(true, Ordering::SeqCst);
    {
        let mut stop = pin!(service.stop());
        assert!(poll_once(stop.as_mut()).is_pending());
        assert_eq!(service.state(), State::Stopping);
    }
    assert!(matches!(service.state(), State::Failed(ref f) if f.during == Op::Stop));
    // The instance went into the dropped stop: the service starts afresh.
    probe.hold_stop.store(false, Ordering::SeqCst);
    block_on(service.start()).unwrap();
    assert_eq!(probe.starts.load(Ordering::SeqCst), 2);
}

#[test]
fn a_start_that_finishes_records_running_in_the_same_poll() {
    // The start's future completes in the poll that sees the release: the instance is stored and
    // `Running` recorded before that poll returns, so no drop can come in between.
    let (probe, service) = probe();
    probe.hold_start.store(true, Ordering::SeqCst);
    let mut start = Box::pin(service.start());
    assert!(poll_once(start.as_mut()).is_pending());
    assert!(poll_once(start.as_mut()).is_pending());
    probe.release.notify_one();
    assert!(matches!(poll_once(start.as_mut()), Poll::Ready(Ok(()))));
    drop(start);
    assert_eq!(service.state(), State::Running);
    block_on(service.stop()).unwrap();
    assert_eq!(probe.running_now.load(Ordering::SeqCst), 0);
}

#[test]
fn stop_and_restart() {
    let (probe, service) = probe();
    block_on(async {
        assert!(matches!(
            service.stop().await,
            Err(LifecycleError::Refused(_))
        ));
        service.restart().await.unwrap(); // a plain start
        service.restart().await.unwrap(); // stop, then start
        assert_eq!(service.state(), State::Running);
        service.stop().await.unwrap();
    });
    assert_eq!(probe.starts.load(Ordering::SeqCst), 2);
    assert_eq!(probe.stops.load(Ordering::SeqCst), 2);
    assert_eq!(probe.running_now.load(Ordering::SeqCst), 0);
    assert_eq!(service.state(), State::Stopped);
    let steps: Vec<String> = service.history().iter().map(|t| t.to.to_string()).collect();
    assert_eq!(
        steps,
        ["starting", "running", "stopping", "starting", "running", "stopping", "stopped"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_wakes_on_the_transition_and_times_out_otherwise() {
    let (_probe, service) = probe();
    let waiter = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .wait_for(|s| *s == State::Running, Duration::from_secs(10))
                .await
        })
    };
    service.start().await.unwrap();
    assert_eq!(waiter.await.unwrap(), Ok(State::Running));
    let gave_up = service
        .wait_for(|s| *s == State::Stopped, Duration::from_millis(20))
        .await;
    assert_eq!(gave_up.unwrap_err().last, State::Running);
}

#[test]
fn a_subscriber_panic_is_raised_after_the_outcome_was_recorded() {
    let (_probe, service) = probe();
    service.subscribe(|t| {
        if t.to == State::Starting {
            panic!("subscriber failed");
        }
    });
    let r = catch_unwind(AssertUnwindSafe(|| block_on(service.start())));
    assert_eq!(panic_message(&*r.unwrap_err()), "subscriber failed");
    // The claim was carried through despite the panic at its commit.
    assert_eq!(service.state(), State::Running);
}

#[test]
fn the_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (_probe, service) = probe();
    assert_send(&service.start());
    assert_send(&service.stop());
    assert_send(&service.restart());
    assert_send(&service.wait_for(|s| s.is_busy(), Duration::from_millis(1)));
}
