//! Shared by the durable tests: which databases to run against, unique names, and child
//! processes (the test binary re-executed with one test selected and a role in the
//! environment).
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that names a PostgreSQL database for the tests.
pub const PG_ENV: &str = "MVSTM_PG_URL";

/// The environment variable that tells a re-executed test binary which role to play.
pub const ROLE_ENV: &str = "MVSTM_DURABLE_CHILD";

/// A fresh SQLite URL under cargo's per-test temporary folder.
pub fn sqlite_url(test: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("durable-{test}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    format!("sqlite://{}", path.display())
}

/// The databases a test runs against: SQLite always, PostgreSQL when `MVSTM_PG_URL` is set
/// (otherwise it says so).
pub fn backends(test: &str) -> Vec<(&'static str, String)> {
    let mut out = vec![("sqlite", sqlite_url(test))];
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => out.push(("postgres", url)),
        _ => {
            println!("{test} on postgres: skipped: {PG_ENV} not set");
            // Once per test binary, past the harness's output capture (it captures the print
            // macros, not direct writes), so a CI log shows that PostgreSQL did not run.
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "durable tests on postgres: skipped: {PG_ENV} not set (SQLite only)"
                );
            });
        }
    }
    out
}

/// A name unique to this run, so tests sharing one PostgreSQL database do not meet.
pub fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// The role this process plays, if it was started by `child`.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// This test binary, running only `test`, as a child with `role` and extra variables.
pub fn child(test: &str, role: &str, vars: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Milliseconds since the epoch on this host's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Microseconds since the epoch on this host's clock.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Sleep until the host clock reaches `at_ms` (a start line shared by processes).
pub fn wait_until(at_ms: u64) {
    let now = now_ms();
    if at_ms > now {
        std::thread::sleep(std::time::Duration::from_millis(at_ms - now));
    }
}

/// What follows `prefix` on each line the child printed that has it (the test harness may
/// have printed `test name ... ` before it on the same line).
pub fn lines_with(output: &str, prefix: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.find(prefix).map(|at| &l[at + prefix.len()..]))
        .map(str::to_string)
        .collect()
}
