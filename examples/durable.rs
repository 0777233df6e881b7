//! Two worker processes share one durable command queue and one lock; one is killed with
//! SIGKILL in the middle of a command while it holds the lock. The other takes the lock over
//! once its lease runs out and handles the interrupted command again; the account at the end
//! shows every command's effect recorded once, the dead letters, and the lock's tokens.
//!
//! ```sh
//! cargo run --release --features durable --example durable                  # SQLite under target/
//! MVSTM_PG_URL=postgres://user@host/db cargo run --release --features durable --example durable
//! ```
//!
//! The example re-executes itself as `durable worker NAME URL QUEUE RESOURCE` for the workers.

use mvstm::durable::{Delivery, Error, Store, Wait};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A lease long enough for a handler, short enough for the example to finish quickly.
const LEASE: Duration = Duration::from_millis(1_000);

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u32,
    /// Fails on every attempt: ends in the dead letters.
    poison: bool,
    /// Fails on its first attempt, then succeeds.
    flaky: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        return worker(&args[2], &args[3], &args[4], &args[5]);
    }
    let (url, sqlite_file) = match std::env::var("MVSTM_PG_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let file = "target/durable-example.db".to_string();
            remove_sqlite(&file);
            (format!("sqlite://{file}"), Some(file))
        }
    };
    let result = coordinate(&url);
    if let Some(file) = sqlite_file {
        remove_sqlite(&file);
    }
    result
}

fn remove_sqlite(file: &str) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{file}{suffix}"));
    }
}

fn coordinate(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(url)?;
    println!("store: {} ({:?})", store.url(), store.backend());
    let run = format!("example-{}", std::process::id());
    let (queue_name, resource) = (format!("{run}-jobs"), format!("{run}/printer"));
    let queue = store.queue::<Job>(&queue_name, 3)?;
    let mut ids = Vec::new();
    for n in 1..=10 {
        let job = Job {
            n,
            poison: n == 7,
            flaky: n == 4,
        };
        ids.push((queue.enqueue(&job)?, n));
    }
    println!("enqueued 10 jobs (job 7 is poison, job 4 fails once)");

    // The victim starts first; the steady worker joins once the victim has handled a job.
    let mut victim = spawn_worker("victim", url, &queue_name, &resource)?;
    let mut victim_out = BufReader::new(victim.stdout.take().ok_or("no stdout")?).lines();
    let mut steady: Option<Child> = None;
    let mut steady_thread = None;
    let mut victim_token = 0u64;
    let mut victim_command = 0u64;
    for line in victim_out.by_ref() {
        let line = line?;
        println!("  [victim] {line}");
        if line.starts_with("handled") && steady.is_none() {
            let mut s = spawn_worker("steady", url, &queue_name, &resource)?;
            let out = BufReader::new(s.stdout.take().ok_or("no stdout")?);
            steady_thread = Some(std::thread::spawn(move || {
                let mut lines = Vec::new();
                for line in out.lines().map_while(Result::ok) {
                    println!("  [steady] {line}");
                    lines.push(line);
                }
                lines
            }));
            steady = Some(s);
        }
        if let Some(rest) = line.strip_prefix("HOLDING ") {
            for field in rest.split_whitespace() {
                if let Some(t) = field.strip_prefix("token=") {
                    victim_token = t.parse()?;
                }
                if let Some(c) = field.strip_prefix("command=") {
                    victim_command = c.parse()?;
                }
            }
            victim.kill()?; // SIGKILL: no destructor runs, nothing is released
            victim.wait()?;
            println!("killed the victim (SIGKILL) in the middle of command {victim_command}, holding lock token {victim_token}");
            break;
        }
    }
    let mut steady = steady.ok_or("the victim never handled a job")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while steady.try_wait()?.is_none() {
        if Instant::now() > deadline {
            steady.kill()?;
            return Err("the steady worker did not finish within a minute".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let steady_lines = steady_thread
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    // "took the lock over with token N after ..."
    let takeover_token: u64 = steady_lines
        .iter()
        .find_map(|l| l.strip_prefix("took the lock over with token "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);

    // The account, read back from the database.
    println!("\n== account");
    let effects = store.records::<String>(&format!("{run}-effects"))?;
    let outcomes = queue.outcomes()?;
    let mut all_once = true;
    for (id, n) in &ids {
        let effect = effects.get(&format!("command-{id}"))?;
        let attempts: Vec<String> = outcomes
            .iter()
            .filter(|o| o.command_id == *id)
            .map(|o| format!("#{} {:?} by {}", o.attempt, o.kind, o.worker))
            .collect();
        let effect_text = match &effect {
            Some((by, _)) => format!("effect recorded once, by {by}"),
            None => "no effect".to_string(),
        };
        if effect.is_none() && *n != 7 {
            all_once = false;
        }
        let note = if *id == victim_command {
            "  <- interrupted by SIGKILL, delivered again"
        } else {
            ""
        };
        println!(
            "job {n:>2} (command {id}): {effect_text}; attempts logged: {}{note}",
            if attempts.is_empty() {
                "none (attempt 1 died with its worker)".to_string()
            } else {
                attempts.join(", ")
            }
        );
    }
    for dead in queue.dead_letters()? {
        println!(
            "dead letter: command {} ({:?}) after {} attempts, last error: {}",
            dead.id, dead.command, dead.attempts, dead.error
        );
    }
    let last_token = last_token(&store, &resource)?;
    println!(
        "lock {resource:?}: the victim held token {victim_token} when killed; the steady worker took it over with token {takeover_token} after the lease ran out (last token handed out: {last_token})"
    );
    let took_over = takeover_token > victim_token;
    println!(
        "every command handled once: {}",
        if all_once { "yes" } else { "NO" }
    );
    cleanup(&store, &run, &queue_name, &resource)?;
    if !all_once || !took_over || queue.pending()? != 0 {
        return Err("the account does not balance".into());
    }
    Ok(())
}

/// The last fencing token the lock handed out.
fn last_token(store: &Store, resource: &str) -> Result<u64, Error> {
    let resource = resource.to_string();
    let token = store.transaction(move |db| {
        db.query_i64(
            "SELECT last_token FROM mvstm_lock_tokens WHERE resource = $1",
            &[resource.as_str().into()],
        )
    })?;
    Ok(token.unwrap_or(0) as u64)
}

/// Leave a shared PostgreSQL database as it was (the SQLite file is removed instead).
fn cleanup(store: &Store, run: &str, queue: &str, resource: &str) -> Result<(), Error> {
    let (run, queue, resource) = (run.to_string(), queue.to_string(), resource.to_string());
    store.transaction(move |db| {
        let q = [queue.as_str().into()];
        db.execute_params("DELETE FROM mvstm_commands WHERE queue = $1", &q)?;
        db.execute_params("DELETE FROM mvstm_outcomes WHERE queue = $1", &q)?;
        db.execute_params("DELETE FROM mvstm_queue_leases WHERE queue = $1", &q)?;
        db.execute_params(
            "DELETE FROM mvstm_records WHERE set_name = $1",
            &[format!("{run}-effects").into()],
        )?;
        let r = [resource.as_str().into()];
        db.execute_params("DELETE FROM mvstm_locks WHERE resource = $1", &r)?;
        db.execute_params("DELETE FROM mvstm_lock_tokens WHERE resource = $1", &r)
    })?;
    Ok(())
}

fn spawn_worker(name: &str, url: &str, queue: &str, resource: &str) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args(["worker", name, url, queue, resource])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
}

/// A worker: take the lock, handle one due command, release the lock; until the queue is empty.
fn worker(
    name: &str,
    url: &str,
    queue: &str,
    resource: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(url)?;
    let run = queue.trim_end_matches("-jobs");
    let effects = store.records::<String>(&format!("{run}-effects"))?;
    let q = store
        .queue::<Job>(queue, 3)?
        .with_lease(LEASE)
        .with_backoff(Duration::from_millis(100))
        .with_batch_limit(1)
        .with_worker(name)?;
    let locks = store.locks()?;
    let mut handled = 0;
    loop {
        let asked = Instant::now();
        let guard = locks.lock(
            &[resource],
            name,
            &[],
            Wait::Block(Duration::from_secs(30)),
            LEASE,
        )?;
        let token = guard.token(resource).unwrap_or(0);
        if asked.elapsed() > LEASE / 2 {
            say(&format!(
                "took the lock over with token {token} after waiting {} ms: its holder stopped renewing and the lease ran out",
                asked.elapsed().as_millis()
            ));
        }
        let n = q.process_due_with(|d: Delivery, job: Job| -> Result<(), String> {
            let key = format!("command-{}", d.id);
            // The effect, made idempotent by the command id: a second delivery finds it done.
            match effects.create(&key, &name.to_string()) {
                Ok(_) => {}
                Err(Error::AlreadyExists { .. }) => {
                    say(&format!(
                        "command {} (job {}) attempt {}: effect already recorded by an earlier delivery; nothing to redo",
                        d.id, job.n, d.attempt
                    ));
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            }
            if name == "victim" && handled == 1 {
                say(&format!("HOLDING command={} token={token}", d.id));
                std::thread::sleep(Duration::from_secs(600)); // killed here
            }
            if job.poison || (job.flaky && d.attempt == 1) {
                effects.delete_any(&key).map_err(|e| e.to_string())?;
                return Err(format!("job {} failed on attempt {}", job.n, d.attempt));
            }
            Ok(())
        })?;
        if n > 0 {
            handled += 1;
            say(&format!("handled a command (lock token {token})"));
        }
        match guard.release() {
            Ok(()) => {}
            Err(e) if e.is_stale() => say(&format!("late: {e}")),
            Err(e) => return Err(e.into()),
        }
        if n == 0 {
            if q.pending()? == 0 {
                say(&format!("queue empty; {handled} commands handled here"));
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
