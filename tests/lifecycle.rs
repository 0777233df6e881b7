//! `Lifecycle`: racing starts and stops, failures and panics at every step, composed claims,
//! waiting, subscribers and history.

mod common;

use common::{finish, spawn_reporting, Rng, LIMIT};
use mvstm::lifecycle::{
    ClaimError, Failure, Lifecycle, LifecycleError, Op, Service, State, Transition,
};
use mvstm::{atomically, try_atomically, TVar};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A service that checks that its own starts and stops strictly alternate and never overlap,
/// and counts them.
#[derive(Default)]
struct Strict {
    busy: AtomicBool,
    up: AtomicBool,
    starts: AtomicUsize,
    stops: AtomicUsize,
    violations: AtomicUsize,
}

impl Strict {
    fn enter(&self) {
        if self.busy.swap(true, Ordering::SeqCst) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        thread::yield_now(); // widen the window another call would overlap in
    }

    fn leave(&self) {
        self.busy.store(false, Ordering::SeqCst);
    }
}

impl Service for Strict {
    type Running = u64;
    type Error = String;

    fn start(&self) -> Result<u64, String> {
        self.enter();
        if self.up.swap(true, Ordering::SeqCst) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        let n = self.starts.fetch_add(1, Ordering::SeqCst) as u64;
        self.leave();
        Ok(n)
    }

    fn stop(&self, running: u64) -> Result<(), String> {
        self.enter();
        if !self.up.swap(false, Ordering::SeqCst) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        // The instance handed back is the one the last start returned.
        if running as usize + 1 != self.starts.load(Ordering::SeqCst) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        self.stops.fetch_add(1, Ordering::SeqCst);
        self.leave();
        Ok(())
    }
}

#[test]
fn racing_starts_and_stops_alternate_strictly() {
    const THREADS: usize = 8;
    const REQUESTS: usize = 2_000;
    let service = Lifecycle::new(Strict::default());
    let oks = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let runs: Vec<_> = (0..THREADS)
        .map(|t| {
            let (service, oks) = (service.clone(), Arc::clone(&oks));
            spawn_reporting(move || {
                let mut rng = Rng(t as u64 * 7919 + 1);
                for _ in 0..REQUESTS {
                    let stop = rng.below(2) == 1;
                    let result = if stop {
                        service.stop()
                    } else {
                        service.start()
                    };
                    match result {
                        Ok(()) => {
                            oks[stop as usize].fetch_add(1, Ordering::SeqCst);
                        }
                        Err(LifecycleError::Refused(ClaimError { op, found })) => {
                            // Refused only for a state that does not admit the operation.
                            assert!(!found.admits(op), "refused {op} in {found}");
                        }
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
            })
        })
        .collect();
    for run in &runs {
        finish(run, "an admin thread");
    }
    let strict = service.service();
    let (starts_ok, stops_ok) = (oks[0].load(Ordering::SeqCst), oks[1].load(Ordering::SeqCst));
    println!(
        "{} requests: {starts_ok} starts and {stops_ok} stops succeeded",
        THREADS * REQUESTS
    );
    assert_eq!(strict.violations.load(Ordering::SeqCst), 0);
    // Every Ok matches one real call, and nothing ran that no Ok reported.
    assert_eq!(strict.starts.load(Ordering::SeqCst), starts_ok);
    assert_eq!(strict.stops.load(Ordering::SeqCst), stops_ok);
    assert!(starts_ok > 0 && stops_ok > 0);
    let expected = if starts_ok == stops_ok + 1 {
        State::Running
    } else {
        State::Stopped
    };
    assert!(starts_ok == stops_ok || starts_ok == stops_ok + 1);
    assert_eq!(service.state(), expected);
}

/// A service whose start and stop do what the test scripts next.
#[derive(Default)]
struct Scripted {
    /// What the next start does: `None` succeeds, `Some(true)` panics, `Some(false)` fails.
    start_fails: Mutex<Vec<bool>>,
    stop_fails: Mutex<Vec<bool>>,
    /// The next start blocks until this is cleared.
    hold: AtomicBool,
    holding: AtomicBool,
    starts: AtomicUsize,
}

fn scripted(step: &Mutex<Vec<bool>>, what: &str) -> Result<(), String> {
    let next = step.lock().unwrap().pop();
    match next {
        None => Ok(()),
        Some(true) => panic!("{what} exploded"),
        Some(false) => Err(format!("{what} refused")),
    }
}

impl Service for Scripted {
    type Running = ();
    type Error = String;

    fn start(&self) -> Result<(), String> {
        while self.hold.load(Ordering::SeqCst) {
            self.holding.store(true, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(1));
        }
        scripted(&self.start_fails, "start")?;
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn stop(&self, (): ()) -> Result<(), String> {
        scripted(&self.stop_fails, "stop")
    }
}

fn failure(during: Op, message: &str, panicked: bool) -> State {
    State::Failed(Failure {
        during,
        message: message.into(),
        panicked,
    })
}

#[test]
fn a_failing_start_reports_and_leaves_failed_then_starts_again() {
    let service = Lifecycle::new(Scripted::default());
    service.service().start_fails.lock().unwrap().push(false);
    match service.start() {
        Err(LifecycleError::Failed(e)) => assert_eq!(e, "start refused"),
        other => panic!("expected the service's error, got {other:?}"),
    }
    assert_eq!(service.state(), failure(Op::Start, "start refused", false));
    service.start().expect("a start after a failure works");
    assert_eq!(service.state(), State::Running);
}

#[test]
fn a_panicking_start_is_reported_and_the_next_start_works() {
    let service = Lifecycle::new(Scripted::default());
    service.service().start_fails.lock().unwrap().push(true);
    match service.start() {
        Err(LifecycleError::Panicked(m)) => assert_eq!(m, "start exploded"),
        other => panic!("expected the panic to be reported, got {other:?}"),
    }
    assert_eq!(service.state(), failure(Op::Start, "start exploded", true));
    service.start().unwrap();
    assert_eq!(service.state(), State::Running);
}

#[test]
fn failing_and_panicking_stops_leave_failed_and_consume_the_instance() {
    let service = Lifecycle::new(Scripted::default());
    service
        .service()
        .stop_fails
        .lock()
        .unwrap()
        .extend([true, false]);
    service.start().unwrap();
    assert!(matches!(service.stop(), Err(LifecycleError::Failed(_))));
    assert_eq!(service.state(), failure(Op::Stop, "stop refused", false));
    // Failed counts as not running: stop is refused, start is admitted.
    assert!(matches!(service.stop(), Err(LifecycleError::Refused(_))));
    service.start().unwrap();
    assert!(matches!(service.stop(), Err(LifecycleError::Panicked(_))));
    assert_eq!(service.state(), failure(Op::Stop, "stop exploded", true));
}

#[test]
fn a_claim_in_progress_refuses_every_other_operation_at_once() {
    let service = Lifecycle::new(Scripted::default());
    service.service().hold.store(true, Ordering::SeqCst);
    let starter = {
        let service = service.clone();
        spawn_reporting(move || service.start())
    };
    service
        .wait_for(|s| *s == State::Starting, LIMIT)
        .expect("the start claims");
    for (op, result) in [
        (Op::Start, service.start()),
        (Op::Stop, service.stop()),
        (Op::Restart, service.restart()),
    ] {
        match result {
            Err(LifecycleError::Refused(e)) => {
                assert_eq!((e.op, e.found), (op, State::Starting));
            }
            other => panic!("{op} while starting: expected a refusal, got {other:?}"),
        }
    }
    service.service().hold.store(false, Ordering::SeqCst);
    finish(&starter, "the start").unwrap();
    assert_eq!(service.service().starts.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panicking_subscriber_cannot_leave_the_state_stuck() {
    let service = Lifecycle::new(Scripted::default());
    service.subscribe(|t: &Transition| {
        if t.to == State::Starting {
            panic!("logging exploded");
        }
    });
    let panicked = catch_unwind(AssertUnwindSafe(|| service.start()));
    assert!(
        panicked.is_err(),
        "the subscriber's panic reaches the caller"
    );
    // The start itself still ran and its outcome was recorded.
    assert_eq!(service.state(), State::Running);
    assert_eq!(service.service().starts.load(Ordering::SeqCst), 1);
    service.stop().unwrap();
}

#[test]
fn a_panic_after_the_service_call_records_what_the_service_reached() {
    // The subscriber panics on the recording of `Running`, i.e. after start returned: the state
    // must say `Running` (the instance is held) and a stop must work.
    let service = Lifecycle::new(Scripted::default());
    service.subscribe(|t: &Transition| {
        if t.to == State::Running {
            panic!("metrics exploded");
        }
    });
    assert!(catch_unwind(AssertUnwindSafe(|| service.start())).is_err());
    assert_eq!(service.state(), State::Running);
    service.stop().unwrap();
    assert_eq!(service.state(), State::Stopped);
}

#[test]
fn restart_stops_and_starts_without_a_gap() {
    let service = Lifecycle::new(Scripted::default());
    // Not running: a restart is a start.
    service.restart().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    service.subscribe(move |t| sink.lock().unwrap().push((t.from.clone(), t.to.clone())));
    service.restart().unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (State::Running, State::Stopping),
            (State::Stopping, State::Starting),
            (State::Starting, State::Running),
        ]
    );
    assert_eq!(service.service().starts.load(Ordering::SeqCst), 2);
}

#[test]
fn group_claims_are_all_or_none_and_commit_with_the_callers_writes() {
    let (a, b) = (
        Lifecycle::new(Scripted::default()),
        Lifecycle::new(Scripted::default()),
    );
    let starts = TVar::new(0u32);
    b.start().unwrap();
    let refused = try_atomically::<_, ClaimError>(|tx| {
        tx.modify(&starts, |n| n + 1)?;
        Ok((a.claim_start(tx)?, b.claim_start(tx)?))
    });
    assert_eq!(
        refused.unwrap_err(),
        ClaimError {
            op: Op::Start,
            found: State::Running
        }
    );
    assert_eq!((a.state(), starts.load()), (State::Stopped, 0));
    assert_eq!(a.service().starts.load(Ordering::SeqCst), 0);

    b.stop().unwrap();
    let claims = try_atomically::<_, ClaimError>(|tx| {
        tx.modify(&starts, |n| n + 1)?;
        Ok([a.claim_start(tx)?, b.claim_start(tx)?])
    })
    .unwrap();
    for claim in claims {
        assert_eq!(claim.op(), Op::Start);
        claim.outcome().unwrap();
    }
    assert_eq!(
        (a.state(), b.state(), starts.load()),
        (State::Running, State::Running, 1)
    );
}

#[test]
fn a_claim_in_a_transaction_that_retries_first_runs_once() {
    let service = Lifecycle::new(Scripted::default());
    let go = TVar::new(false);
    let runs = Arc::new(AtomicUsize::new(0));
    let starter = {
        let (service, go, runs) = (service.clone(), go.clone(), Arc::clone(&runs));
        spawn_reporting(move || {
            let claim = try_atomically::<_, ClaimError>(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let claim = service.claim_start(tx)?;
                if !tx.read(&go)? {
                    return mvstm::retry(); // drops the claim's write and hook
                }
                Ok(claim)
            })
            .unwrap();
            claim.outcome()
        })
    };
    common::wait_for_runs(&runs, 1);
    thread::sleep(common::QUIET);
    assert_eq!(
        service.state(),
        State::Stopped,
        "a retried claim left nothing"
    );
    atomically(|tx| tx.write(&go, true));
    finish(&starter, "the claiming transaction").unwrap();
    assert_eq!(service.service().starts.load(Ordering::SeqCst), 1);
}

#[test]
fn wait_for_wakes_on_the_transition_and_times_out_otherwise() {
    let service = Lifecycle::new(Scripted::default());
    let waiter = {
        let service = service.clone();
        spawn_reporting(move || service.wait_for(|s| *s == State::Running, LIMIT))
    };
    thread::sleep(common::QUIET);
    common::still_blocked(&waiter, "wait_for before the start");
    service.start().unwrap();
    assert_eq!(finish(&waiter, "wait_for"), Ok(State::Running));
    let timeout = service.wait_for(|s| *s == State::Stopped, Duration::from_millis(20));
    assert_eq!(timeout.unwrap_err().last, State::Running);
}

#[test]
fn history_is_bounded_ordered_and_carries_errors() {
    let service = Lifecycle::with_history(Scripted::default(), 4);
    service.service().start_fails.lock().unwrap().push(false);
    let _ = service.start();
    service.start().unwrap();
    service.stop().unwrap();
    let history = service.history();
    assert_eq!(history.len(), 4);
    let seqs: Vec<u64> = history.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, [3, 4, 5, 6]);
    assert_eq!(history[0].to, State::Starting);
    assert_eq!(history[0].from, failure(Op::Start, "start refused", false));
    assert!(history
        .windows(2)
        .all(|w| w[0].to == w[1].from && w[0].at <= w[1].at));
    assert_eq!(history[3].to, State::Stopped);
}

#[test]
fn unsubscribed_callbacks_stop_being_called() {
    let service = Lifecycle::new(Scripted::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let id = service.subscribe(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    service.start().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(service.unsubscribe(id));
    assert!(!service.unsubscribe(id));
    service.stop().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
#[should_panic(expected = "has not committed")]
fn a_claims_outcome_inside_its_own_transaction_panics_clearly() {
    let service = Lifecycle::new(Scripted::default());
    let _ = try_atomically::<(), ClaimError>(|tx| {
        let claim = service.claim_start(tx)?;
        let _ = claim.outcome();
        Ok(())
    });
}

#[test]
fn a_subscriber_panicking_between_restart_phases_cannot_orphan_the_claim() {
    // The restart records `Stopping -> Starting` itself, between the stop and the start: a
    // subscriber panicking there must not leave the service `Starting` with no owner.
    let service = Lifecycle::new(Scripted::default());
    service.start().unwrap();
    service.subscribe(|t: &Transition| {
        if t.from == State::Stopping && t.to == State::Starting {
            panic!("audit log exploded");
        }
    });
    assert!(catch_unwind(AssertUnwindSafe(|| service.restart())).is_err());
    assert_eq!(service.state(), State::Running, "the restart completed");
    assert_eq!(service.service().starts.load(Ordering::SeqCst), 2);
    service.stop().unwrap();
}

#[test]
fn a_claim_in_an_or_else_branch_that_retries_is_dropped_with_it() {
    let (service, other) = (
        Lifecycle::new(Scripted::default()),
        Lifecycle::new(Scripted::default()),
    );
    let claim = try_atomically::<_, ClaimError>(|tx| {
        tx.or_else(
            |tx| {
                let _dropped = service.claim_start(tx)?;
                mvstm::retry()
            },
            |tx| other.claim_start(tx),
        )
    })
    .unwrap();
    claim.outcome().unwrap();
    assert_eq!(
        (service.state(), other.state()),
        (State::Stopped, State::Running)
    );
    assert_eq!(service.service().starts.load(Ordering::SeqCst), 0);
}

#[test]
fn try_claims_report_refusals_without_aborting() {
    let (service, spare) = (
        Lifecycle::new(Scripted::default()),
        Lifecycle::new(Scripted::default()),
    );
    service.start().unwrap();
    #[derive(Debug, PartialEq)]
    struct Quota;
    // A refusal is a value: the caller may claim something else in the same transaction...
    let claim = try_atomically::<_, Quota>(|tx| match service.try_claim_start(tx)? {
        Ok(claim) => Ok(claim),
        Err(refused) => {
            assert_eq!(refused.found, State::Running);
            match spare.try_claim_restart(tx)? {
                Ok(claim) => Ok(claim),
                Err(_) => tx.abort(Quota),
            }
        }
    })
    .unwrap();
    claim.outcome().unwrap();
    assert_eq!(spare.state(), State::Running);
    // ...or abort with its own error type.
    let refused = try_atomically::<(), Quota>(|tx| match spare.try_claim_start(tx)? {
        Ok(_) => unreachable!("spare is running"),
        Err(_) => tx.abort(Quota),
    });
    assert_eq!(refused, Err(Quota));
    let stop = try_atomically::<_, Quota>(|tx| Ok(spare.try_claim_stop(tx)?.expect("running")));
    stop.unwrap().outcome().unwrap();
    assert_eq!(spare.state(), State::Stopped);
}

#[test]
fn a_refused_claim_inside_plain_atomically_panics_naming_the_claim_error() {
    let service = Lifecycle::new(Strict::default());
    service.start().unwrap();
    let extra = TVar::new(0u32);
    let refused = catch_unwind(AssertUnwindSafe(|| {
        atomically(|tx| {
            tx.modify(&extra, |n| n + 1)?;
            service.claim_start(tx) // already running: refused, the transaction aborts
        })
    }));
    let msg = common::panic_message(&*refused.expect_err("a refused claim must panic"));
    assert!(
        msg.contains("of type `mvstm_lifecycle::error::ClaimError`")
            && msg.contains("try_atomically::<_, mvstm_lifecycle::error::ClaimError>"),
        "the message should say that a ClaimError arrived and how to receive it: {msg}"
    );
    assert!(
        !msg.contains("Txn::abort or a veto"),
        "the old, vague message: {msg}"
    );
    assert_eq!(
        extra.load(),
        0,
        "the aborted transaction published its write"
    );
    assert_eq!(service.state(), State::Running);
}

#[test]
fn with_running_sees_the_instance_only_while_running() {
    let service = Lifecycle::new(Strict::default());
    assert_eq!(service.with_running(|n| *n), None, "stopped");
    service.start().unwrap();
    assert_eq!(
        service.with_running(|n| *n),
        Some(0),
        "the instance the first start returned"
    );
    service.restart().unwrap();
    assert_eq!(
        service.with_running(|n| *n),
        Some(1),
        "the instance of the second start"
    );
    service.stop().unwrap();
    assert_eq!(service.with_running(|n| *n), None, "stopped again");
}

#[test]
fn with_running_is_none_while_starting_and_a_stop_waits_for_it() {
    use std::sync::mpsc;
    /// A service whose start waits for a go-ahead, so a test can look at it while `Starting`.
    struct Gated(Mutex<mpsc::Receiver<()>>);
    impl Service for Gated {
        type Running = &'static str;
        type Error = String;
        fn start(&self) -> Result<&'static str, String> {
            self.0.lock().unwrap().recv().map_err(|e| e.to_string())?;
            Ok("instance")
        }
        fn stop(&self, _: &'static str) -> Result<(), String> {
            Ok(())
        }
    }
    let (go, gate) = mpsc::channel();
    let service = Lifecycle::new(Gated(Mutex::new(gate)));
    let starter = {
        let service = service.clone();
        spawn_reporting(move || service.start())
    };
    service
        .wait_for(|s| *s == State::Starting, LIMIT)
        .expect("the start was claimed");
    assert_eq!(
        service.with_running(|r| *r),
        None,
        "starting: no instance yet"
    );
    go.send(()).unwrap();
    finish(&starter, "start").unwrap();
    assert_eq!(service.with_running(|r| *r), Some("instance"));

    // A stop claimed while `f` runs waits for `f` before the service gets the instance.
    let (inside, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let reader = {
        let service = service.clone();
        spawn_reporting(move || {
            service.with_running(|r| {
                inside.send(()).unwrap();
                released.recv().unwrap(); // hold the instance until the test lets go
                *r
            })
        })
    };
    entered.recv_timeout(LIMIT).expect("with_running called f");
    let stopper = {
        let service = service.clone();
        spawn_reporting(move || service.stop())
    };
    service
        .wait_for(|s| *s == State::Stopping, LIMIT)
        .expect("the stop was claimed");
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        service.state(),
        State::Stopping,
        "the stop went on while f held the instance"
    );
    release.send(()).unwrap();
    assert_eq!(finish(&reader, "with_running"), Some("instance"));
    finish(&stopper, "stop").unwrap();
    assert_eq!(service.state(), State::Stopped);
    assert_eq!(service.with_running(|r| *r), None);
}
