//! Optimistic concurrency across think time with `Versioned` records.
//!
//! Two editors open the same customer record, each edits a different field while "thinking"
//! (outside any transaction), then saves naming the version they read. The first save wins; the
//! second gets `StaleVersion`, re-reads the record, merges its own change into the new version,
//! and saves again.
//!
//! Run with `cargo run --release --example optimistic`.

use mvstm::atomically;
use mvstm::collections::{StaleVersion, Versioned};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;

#[derive(Clone, Debug, PartialEq)]
struct Customer {
    name: String,
    email: String,
    phone: String,
}

/// One editor's session: read, think, save; on a stale save, re-read, merge, save again.
fn edit(
    who: &str,
    record: &Versioned<Customer>,
    think: impl FnOnce(),
    change: impl Fn(&mut Customer),
) -> u64 {
    let (mut draft, mut version) = record.load();
    println!("{who}: opened version {version}: {draft:?}");
    think();
    change(&mut draft);
    loop {
        match atomically(|tx| record.update(tx, version, draft.clone())) {
            Ok(new_version) => {
                println!("{who}: saved version {new_version}");
                return new_version;
            }
            Err(StaleVersion { expected, actual }) => {
                println!(
                    "{who}: save refused: based on version {expected}, the record is at {actual}"
                );
                // Merge: take the current record and re-apply only this editor's change.
                let (current, current_version) = record.load();
                draft = current;
                change(&mut draft);
                version = current_version;
                println!("{who}: merged onto version {version}: {draft:?}");
            }
        }
    }
}

fn main() {
    let record = Versioned::new(Customer {
        name: "Ada".into(),
        email: "ada@old.example".into(),
        phone: "555-0100".into(),
    });
    // Both editors read before either saves; Bob thinks longer and saves after Alice.
    let both_read = Arc::new(Barrier::new(2));
    let (alice_saved, alice_done) = mpsc::channel::<()>();
    let alice = {
        let (record, both_read) = (record.clone(), both_read.clone());
        thread::spawn(move || {
            let v = edit(
                "alice",
                &record,
                || {
                    both_read.wait();
                },
                |c| c.email = "ada@new.example".into(),
            );
            alice_saved.send(()).unwrap();
            v
        })
    };
    let bob = {
        let (record, both_read) = (record.clone(), both_read.clone());
        thread::spawn(move || {
            let think = || {
                both_read.wait();
                alice_done.recv().unwrap();
            };
            edit("bob", &record, think, |c| c.phone = "555-0199".into())
        })
    };
    let (a, b) = (alice.join().unwrap(), bob.join().unwrap());
    let (merged, version) = record.load();
    println!("final version {version} (alice saved {a}, bob saved {b}): {merged:?}");
    assert_eq!(merged.email, "ada@new.example", "alice's change survived");
    assert_eq!(merged.phone, "555-0199", "bob's change survived");
    assert_eq!(version, 2, "one version per committed update");
}
