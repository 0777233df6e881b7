//! The durable command queue: ordering, the retry ladder and dead letters, exactly-once
//! effects with many workers in two processes, the outbox, a corrupt payload, durability
//! across reopening, and hostile queue names.

mod common;

use common::{backends, child, lines_with, now_us, role, unique};
use mvstm::durable::{Delivery, Error, OutcomeKind, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Command {
    Greet { name: String },
    Fail,
}

#[test]
fn commands_run_in_enqueue_order() {
    for (db, url) in backends("queue-order") {
        let store = Store::open(&url).unwrap();
        let q = store.queue::<u32>(&unique("order"), 3).unwrap();
        let ids: Vec<u64> = (0..25).map(|i| q.enqueue(&i).unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{db}: {ids:?}");
        let mut seen = Vec::new();
        let handled = q
            .process_due_with(|d: Delivery, cmd: u32| -> Result<(), String> {
                seen.push((d.id, d.attempt, cmd));
                Ok(())
            })
            .unwrap();
        assert_eq!(handled, 25, "{db}");
        let expected: Vec<_> = ids.iter().zip(0..).map(|(id, i)| (*id, 1, i)).collect();
        assert_eq!(seen, expected, "{db}");
        assert_eq!(q.pending().unwrap(), 0);
        assert_eq!(q.process_due(|_: u32| Ok::<(), String>(())).unwrap(), 0);
    }
}

#[test]
fn retry_ladder_then_dead_letter() {
    for (db, url) in backends("queue-retry") {
        let store = Store::open(&url).unwrap();
        let q = store
            .queue::<Command>(&unique("retry"), 3)
            .unwrap()
            .with_backoff(Duration::from_millis(300));
        let bad = q.enqueue(&Command::Fail).unwrap();
        let good = q.enqueue(&Command::Greet { name: "ann".into() }).unwrap();
        let attempts = Mutex::new(Vec::new());
        let handler = |d: Delivery, cmd: Command| -> Result<(), String> {
            attempts.lock().unwrap().push((d.id, d.attempt));
            match cmd {
                Command::Fail => Err(format!("refused on attempt {}", d.attempt)),
                Command::Greet { .. } => Ok(()),
            }
        };
        // The first pass fails `bad` once and runs `good` behind it.
        assert_eq!(q.process_due_with(handler).unwrap(), 2, "{db}");
        // `bad` waits out its backoff: an immediate pass finds nothing due.
        assert_eq!(q.process_due_with(handler).unwrap(), 0, "{db}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while q.pending().unwrap() > 0 {
            assert!(Instant::now() < deadline, "{db}: retries did not finish");
            q.process_due_with(handler).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            *attempts.lock().unwrap(),
            vec![(bad, 1), (good, 1), (bad, 2), (bad, 3)],
            "{db}"
        );
        let dead = q.dead_letters().unwrap();
        assert_eq!(dead.len(), 1, "{db}");
        assert_eq!(dead[0].id, bad);
        assert_eq!(dead[0].command, Some(Command::Fail));
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(dead[0].error, "refused on attempt 3");
        let log: Vec<_> = q
            .outcomes()
            .unwrap()
            .into_iter()
            .map(|o| (o.command_id, o.attempt, o.kind, o.error))
            .collect();
        assert_eq!(
            log,
            vec![
                (
                    bad,
                    1,
                    OutcomeKind::Failed,
                    Some("refused on attempt 1".into())
                ),
                (good, 1, OutcomeKind::Done, None),
                (
                    bad,
                    2,
                    OutcomeKind::Failed,
                    Some("refused on attempt 2".into())
                ),
                (
                    bad,
                    3,
                    OutcomeKind::DeadLettered,
                    Some("refused on attempt 3".into())
                ),
            ],
            "{db}"
        );
    }
}

#[test]
fn a_panicking_handler_is_a_failed_attempt() {
    for (db, url) in backends("queue-panic") {
        let store = Store::open(&url).unwrap();
        let q = store.queue::<u8>(&unique("panic"), 1).unwrap();
        q.enqueue(&1).unwrap();
        let handled = q
            .process_due(|_: u8| -> Result<(), String> { panic!("boom") })
            .unwrap();
        assert_eq!(handled, 1, "{db}");
        let dead = q.dead_letters().unwrap();
        assert_eq!(dead[0].error, "handler panicked: boom", "{db}");
    }
}

/// The child side of `exactly_once_many_workers_two_processes`: two worker threads process
/// the queue until it is empty; each handler run is recorded in the effects table with its
/// start and end time.
#[test]
fn worker_child() {
    if role().as_deref() != Some("worker") {
        return;
    }
    let url = std::env::var("WORK_URL").unwrap();
    let queue = std::env::var("WORK_QUEUE").unwrap();
    let table = std::env::var("WORK_TABLE").unwrap();
    run_workers(&url, &queue, &table, 2);
    println!("CHILD DONE");
}

/// `workers` threads, each with its own queue handle, until the queue is empty.
fn run_workers(url: &str, queue: &str, table: &str, workers: usize) {
    let store = Store::open(url).unwrap();
    let running = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (store, running) = (&store, &running);
            s.spawn(move || {
                let q = store
                    .queue::<u64>(queue, 3)
                    .unwrap()
                    .with_lease(Duration::from_secs(20))
                    .with_batch_limit(3);
                let insert = format!(
                    "INSERT INTO {table} (command, delivery, worker, started_us, ended_us) \
                     VALUES ($1, $2, $3, $4, $5)"
                );
                loop {
                    let handled = q
                        .process_due_with(|d: Delivery, cmd: u64| -> Result<(), Error> {
                            // One at a time per queue, inside this process too.
                            assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0);
                            let started = now_us();
                            std::thread::sleep(Duration::from_millis(3));
                            let ended = now_us();
                            running.fetch_sub(1, Ordering::SeqCst);
                            let worker = q.worker().to_string();
                            let insert = insert.clone();
                            store.transaction(move |db| {
                                db.execute_params(
                                    &insert,
                                    &[
                                        (cmd as i64).into(),
                                        (d.id as i64).into(),
                                        worker.as_str().into(),
                                        started.into(),
                                        ended.into(),
                                    ],
                                )
                            })?;
                            Ok(())
                        })
                        .unwrap();
                    if handled == 0 && q.pending().unwrap() == 0 {
                        break;
                    }
                    // Poll again shortly, leaving the others a turn at the queue's lease.
                    std::thread::sleep(Duration::from_millis(if handled == 0 { 5 } else { 2 }));
                }
            });
        }
    });
}

#[test]
fn exactly_once_many_workers_two_processes() {
    const COMMANDS: u64 = 120;
    for (db, url) in backends("queue-exactly-once") {
        let store = Store::open(&url).unwrap();
        let queue = unique("work");
        // The test's own table: its name is made here, not given by a caller.
        let table = format!("effects_{}", unique("t").replace('-', "_"));
        let create = format!(
            "CREATE TABLE {table} (command BIGINT, delivery BIGINT, worker TEXT, \
             started_us BIGINT, ended_us BIGINT)"
        );
        store.transaction(move |db| db.execute(&create)).unwrap();
        let q = store.queue::<u64>(&queue, 3).unwrap();
        for i in 0..COMMANDS {
            q.enqueue(&i).unwrap();
        }
        let vars = [
            ("WORK_URL", url.clone()),
            ("WORK_QUEUE", queue.clone()),
            ("WORK_TABLE", table.clone()),
        ];
        let children: Vec<_> = (0..2)
            .map(|_| child("worker_child", "worker", &vars).spawn().unwrap())
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{db}: a worker process failed");
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(lines_with(&text, "CHILD DONE").len(), 1, "{db}");
        }
        let select = format!(
            "SELECT command, delivery, worker, started_us, ended_us FROM {table} ORDER BY started_us"
        );
        let rows = store.transaction(move |db| db.query(&select, &[])).unwrap();
        let commands: Vec<i64> = rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
        let distinct: HashSet<i64> = commands.iter().copied().collect();
        assert_eq!(
            commands.len() as u64,
            COMMANDS,
            "{db}: an effect ran twice or never"
        );
        assert_eq!(distinct.len() as u64, COMMANDS, "{db}");
        // No two handler runs overlapped in time, across both processes.
        for w in rows.windows(2) {
            let (prev_end, next_start) = (w[0][4].as_i64().unwrap(), w[1][3].as_i64().unwrap());
            assert!(prev_end <= next_start, "{db}: handlers overlapped: {w:?}");
        }
        let workers: HashSet<&str> = rows.iter().map(|r| r[2].as_str().unwrap()).collect();
        println!(
            "{db}: {COMMANDS} commands handled once by {} workers",
            workers.len()
        );
        assert_eq!(q.pending().unwrap(), 0);
        assert!(q.dead_letters().unwrap().is_empty());
    }
}

#[test]
fn outbox_enqueue_commits_or_rolls_back_with_the_callers_transaction() {
    for (db, url) in backends("queue-outbox") {
        let store = Store::open(&url).unwrap();
        let q = store.queue::<String>(&unique("outbox"), 1).unwrap();
        let records = store.records::<u32>(&unique("orders")).unwrap();
        records.create("stock", &10).unwrap();
        let refused: Result<u64, Error> = store.transaction(|db| {
            q.enqueue_in(db, &"ship order 1".to_string())?;
            Err(Error::Invalid {
                what: "order",
                value: "1".into(),
                reason: "changed our mind",
            })
        });
        assert!(refused.is_err());
        assert_eq!(
            q.pending().unwrap(),
            0,
            "{db}: a rolled-back enqueue stayed"
        );
        store
            .transaction(|db| q.enqueue_in(db, &"ship order 2".to_string()))
            .unwrap();
        assert_eq!(q.pending().unwrap(), 1, "{db}");
        let mut got = Vec::new();
        q.process_due(|c: String| -> Result<(), String> {
            got.push(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec!["ship order 2".to_string()], "{db}");
    }
}

#[test]
fn corrupt_payload_is_dead_lettered_with_a_clear_error() {
    for (db, url) in backends("queue-corrupt") {
        let store = Store::open(&url).unwrap();
        let q = store.queue::<Command>(&unique("corrupt"), 3).unwrap();
        let before = q.enqueue(&Command::Greet { name: "a".into() }).unwrap();
        let broken = q.enqueue(&Command::Greet { name: "b".into() }).unwrap();
        let after = q.enqueue(&Command::Greet { name: "c".into() }).unwrap();
        store
            .transaction(move |db| {
                db.execute_params(
                    "UPDATE mvstm_commands SET payload = $1 WHERE id = $2",
                    &["{\"Greet\": 42".into(), (broken as i64).into()],
                )
            })
            .unwrap();
        let mut seen = Vec::new();
        let mut handler = |d: Delivery, _: Command| -> Result<(), String> {
            seen.push(d.id);
            Ok(())
        };
        let e = q.process_due_with(&mut handler).unwrap_err();
        assert!(
            matches!(
                e,
                Error::CorruptPayload {
                    what: "command",
                    ..
                }
            ),
            "{db}: {e:?}"
        );
        assert!(e.to_string().starts_with("corrupt command payload"), "{e}");
        // The next pass goes on with the rest.
        assert_eq!(q.process_due_with(&mut handler).unwrap(), 1);
        assert_eq!(seen, vec![before, after], "{db}");
        let dead = q.dead_letters().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].id, broken);
        assert_eq!(dead[0].command, None);
        assert_eq!(
            dead[0].payload, "{\"Greet\": 42",
            "{db}: the payload was not kept"
        );
        assert!(
            dead[0].error.starts_with("corrupt payload"),
            "{:?}",
            dead[0]
        );
    }
}

#[test]
fn commands_survive_reopening() {
    for (db, url) in backends("queue-reopen") {
        let name = unique("reopen");
        {
            let store = Store::open(&url).unwrap();
            let q = store.queue::<String>(&name, 2).unwrap();
            q.enqueue(&"kept".to_string()).unwrap();
        }
        let store = Store::open(&url).unwrap();
        let q = store.queue::<String>(&name, 2).unwrap();
        let mut got = Vec::new();
        q.process_due(|c: String| -> Result<(), String> {
            got.push(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec!["kept".to_string()], "{db}");
    }
}

#[test]
fn hostile_queue_names_are_bound_not_pasted() {
    for (db, url) in backends("queue-hostile") {
        let store = Store::open(&url).unwrap();
        let names = [
            "'; DROP TABLE mvstm_commands; --",
            "q\"uo'te",
            "ünïcödé 🚀",
            "$2",
        ];
        for name in names {
            let q = store
                .queue::<String>(&format!("{}{name}", unique("h")), 1)
                .unwrap();
            q.enqueue(&name.to_string()).unwrap();
            let mut got = Vec::new();
            q.process_due(|c: String| -> Result<(), String> {
                got.push(c);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, vec![name.to_string()], "{db}");
        }
        assert!(matches!(
            store.queue::<u8>("", 1),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            store.queue::<u8>("zero attempts", 0),
            Err(Error::Invalid { .. })
        ));
    }
}

#[test]
fn one_handle_shared_by_threads_runs_one_handler_at_a_time() {
    for (db, url) in backends("queue-shared-handle") {
        let store = Store::open(&url).unwrap();
        let q = store
            .queue::<u32>(&unique("shared-handle"), 1)
            .unwrap()
            .with_batch_limit(2);
        for i in 0..40 {
            q.enqueue(&i).unwrap();
        }
        let (running, most, handled) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while q.pending().unwrap() > 0 {
                        let n = q
                            .process_due(|_: u32| -> Result<(), String> {
                                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                                most.fetch_max(now, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(10));
                                running.fetch_sub(1, Ordering::SeqCst);
                                Ok(())
                            })
                            .unwrap();
                        handled.fetch_add(n, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1, "{db}: handlers overlapped");
        assert_eq!(handled.load(Ordering::SeqCst), 40, "{db}");
    }
}
