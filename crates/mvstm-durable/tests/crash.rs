//! A worker process killed with SIGKILL while it holds a command and a lock: after the
//! leases run out, the command is delivered again (same id, next attempt) and the lock is
//! taken by another owner with a larger fencing token.

mod common;

use common::{backends, child, role, unique};
use mvstm::durable::{Delivery, OutcomeKind, Store, Wait};
use std::io::{BufRead, BufReader};
use std::time::Duration;

const LEASE: Duration = Duration::from_millis(500);

/// The child: take the lock, claim the command, say so, then hang until killed.
#[test]
fn doomed_child() {
    if role().as_deref() != Some("doomed") {
        return;
    }
    let url = std::env::var("CRASH_URL").unwrap();
    let queue = std::env::var("CRASH_QUEUE").unwrap();
    let resource = std::env::var("CRASH_RESOURCE").unwrap();
    let store = Store::open(&url).unwrap();
    let guard = store
        .locks()
        .unwrap()
        .lock(&[&resource], "doomed", &[], Wait::NoWait, LEASE)
        .unwrap();
    let q = store.queue::<String>(&queue, 3).unwrap().with_lease(LEASE);
    q.process_due_with(|d: Delivery, cmd: String| -> Result<(), String> {
        println!(
            "HOLDING command={} attempt={} cmd={cmd} token={}",
            d.id,
            d.attempt,
            guard.token(&resource).unwrap()
        );
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(120));
        Ok(())
    })
    .unwrap();
    unreachable!("the parent kills this process");
}

#[test]
fn sigkilled_holder_command_redelivered_and_lock_taken_after_lease() {
    for (db, url) in backends("crash") {
        let store = Store::open(&url).unwrap();
        let queue = unique("crash");
        let resource = unique("crash-lock");
        let q = store.queue::<String>(&queue, 3).unwrap().with_lease(LEASE);
        let id = q.enqueue(&"charge card 7".to_string()).unwrap();
        let mut doomed = child(
            "doomed_child",
            "doomed",
            &[
                ("CRASH_URL", url.clone()),
                ("CRASH_QUEUE", queue.clone()),
                ("CRASH_RESOURCE", resource.clone()),
            ],
        )
        .spawn()
        .unwrap();
        let mut lines = BufReader::new(doomed.stdout.take().unwrap()).lines();
        let holding = loop {
            let line = lines
                .next()
                .expect("the child exited before claiming")
                .unwrap();
            if let Some(at) = line.find("HOLDING ") {
                break line[at..].to_string();
            }
        };
        assert!(
            holding.contains(&format!("command={id} attempt=1")),
            "{db}: {holding}"
        );
        let child_token: u64 = holding
            .rsplit("token=")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        doomed.kill().unwrap(); // SIGKILL on Unix: no destructor, no release
        doomed.wait().unwrap();

        // The lock is still held until its lease runs out, and nobody else runs the queue.
        let locks = store.locks().unwrap();
        let refused = locks.lock(&[&resource], "heir", &[], Wait::NoWait, LEASE * 4);
        // (On a slow machine the lease may already be over; then the takeover is immediate.)
        let guard = match refused {
            Err(e) => {
                assert!(e.is_refused(), "{db}: {e:?}");
                locks
                    .lock(
                        &[&resource],
                        "heir",
                        &[],
                        Wait::Block(Duration::from_secs(10)),
                        LEASE * 4,
                    )
                    .unwrap()
            }
            Ok(g) => g,
        };
        assert!(guard.token(&resource).unwrap() > child_token, "{db}");

        // The command comes back, same id, next attempt, once the leases have run out.
        let mut redelivered = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while redelivered.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{db}: never redelivered"
            );
            q.process_due_with(|d: Delivery, cmd: String| -> Result<(), String> {
                redelivered.push((d.id, d.attempt, cmd));
                Ok(())
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            redelivered,
            vec![(id, 2, "charge card 7".to_string())],
            "{db}"
        );
        let log: Vec<_> = q
            .outcomes()
            .unwrap()
            .into_iter()
            .map(|o| (o.command_id, o.attempt, o.kind))
            .collect();
        assert_eq!(log, vec![(id, 2, OutcomeKind::Done)], "{db}");
        assert_eq!(q.pending().unwrap(), 0);
        guard.release().unwrap();
    }
}
