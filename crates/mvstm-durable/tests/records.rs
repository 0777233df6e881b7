//! Versioned records (`@Version`): the basic contract, exactly one winner among concurrent
//! savers of one version (threads and processes), durability across reopening, hostile names
//! and a corrupt stored value.

mod common;

use common::{backends, child, lines_with, now_ms, role, unique, wait_until};
use mvstm::durable::{Error, Store};
use std::sync::{Arc, Barrier};

#[test]
fn create_get_save_delete() {
    for (db, url) in backends("records-basic") {
        let store = Store::open(&url).unwrap();
        let names = store.records::<String>(&unique("names")).unwrap();
        assert_eq!(names.get("joe").unwrap(), None, "{db}");
        assert_eq!(names.create("joe", &"Joe".into()).unwrap(), 1);
        assert!(matches!(
            names.create("joe", &"Again".into()),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(names.get("joe").unwrap(), Some(("Joe".to_string(), 1)));
        assert_eq!(names.save("joe", 1, &"Jack".into()).unwrap(), 2);
        let stale = names.save("joe", 1, &"Jill".into()).unwrap_err();
        assert_eq!(
            stale,
            Error::StaleVersion {
                expected: 1,
                actual: 2
            }
        );
        assert!(stale.is_stale());
        assert_eq!(names.get("joe").unwrap(), Some(("Jack".to_string(), 2)));
        assert!(matches!(
            names.save("nobody", 1, &"x".into()),
            Err(Error::NotFound { .. })
        ));
        assert!(names.delete("joe", 1).unwrap_err().is_stale());
        names.delete("joe", 2).unwrap();
        assert_eq!(names.get("joe").unwrap(), None, "{db}");
    }
}

#[test]
fn version_race_threads_exactly_one_winner() {
    const THREADS: usize = 8;
    for (db, url) in backends("records-race-threads") {
        let store = Store::open(&url).unwrap();
        let set = unique("race");
        let records = store.records::<u64>(&set).unwrap();
        for round in 0..3 {
            let key = format!("k{round}");
            records.create(&key, &0).unwrap();
            let barrier = Arc::new(Barrier::new(THREADS));
            let results: Vec<Result<u64, Error>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|i| {
                        let barrier = barrier.clone();
                        // Half the threads share the store (its pool), half open their own.
                        let store = if i % 2 == 0 {
                            store.clone()
                        } else {
                            Store::open(&url).unwrap()
                        };
                        let (set, key) = (set.clone(), key.clone());
                        s.spawn(move || {
                            let records = store.records::<u64>(&set).unwrap();
                            barrier.wait();
                            records.save(&key, 1, &(i as u64 + 1))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(winners, 1, "{db} round {round}: {results:?}");
            for r in &results {
                match r {
                    Ok(v) => assert_eq!(*v, 2),
                    Err(e) => assert_eq!(
                        *e,
                        Error::StaleVersion {
                            expected: 1,
                            actual: 2
                        },
                        "{db}"
                    ),
                }
            }
            let (value, version) = records.get(&key).unwrap().unwrap();
            assert_eq!(version, 2);
            assert!((1..=THREADS as u64).contains(&value));
        }
    }
}

/// The child side of `version_race_two_processes`: 4 threads save version 1 at a shared
/// start time and print `WON` or `STALE`.
#[test]
fn race_child() {
    if role().as_deref() != Some("race") {
        return;
    }
    let url = std::env::var("RACE_URL").unwrap();
    let set = std::env::var("RACE_SET").unwrap();
    let start: u64 = std::env::var("RACE_START").unwrap().parse().unwrap();
    let store = Store::open(&url).unwrap();
    let results: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let store = if i == 0 {
                    store.clone()
                } else {
                    Store::open(&url).unwrap()
                };
                let set = set.clone();
                s.spawn(move || {
                    let records = store.records::<u64>(&set).unwrap();
                    wait_until(start);
                    match records.save("contested", 1, &(std::process::id() as u64)) {
                        Ok(_) => "WON".to_string(),
                        Err(e) if e.is_stale() => "STALE".to_string(),
                        Err(e) => format!("ERROR {e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        println!("RESULT {r}");
    }
}

#[test]
fn version_race_two_processes_exactly_one_winner() {
    for (db, url) in backends("records-race-processes") {
        let store = Store::open(&url).unwrap();
        let set = unique("race-processes");
        store
            .records::<u64>(&set)
            .unwrap()
            .create("contested", &0)
            .unwrap();
        let start = now_ms() + 1_500;
        let children: Vec<_> = (0..2)
            .map(|_| {
                child(
                    "race_child",
                    "race",
                    &[
                        ("RACE_URL", url.clone()),
                        ("RACE_SET", set.clone()),
                        ("RACE_START", start.to_string()),
                    ],
                )
                .spawn()
                .unwrap()
            })
            .collect();
        let mut results = Vec::new();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{db}: child failed");
            results.extend(lines_with(&String::from_utf8_lossy(&out.stdout), "RESULT "));
        }
        assert_eq!(results.len(), 8, "{db}: {results:?}");
        assert_eq!(
            results.iter().filter(|r| *r == "WON").count(),
            1,
            "{db}: {results:?}"
        );
        assert_eq!(
            results.iter().filter(|r| *r == "STALE").count(),
            7,
            "{db}: {results:?}"
        );
        let (_, version) = store
            .records::<u64>(&set)
            .unwrap()
            .get("contested")
            .unwrap()
            .unwrap();
        assert_eq!(version, 2, "{db}");
    }
}

#[test]
fn records_survive_reopening() {
    for (db, url) in backends("records-reopen") {
        let set = unique("durable");
        {
            let store = Store::open(&url).unwrap();
            let r = store.records::<Vec<u32>>(&set).unwrap();
            r.create("list", &vec![1, 2, 3]).unwrap();
            r.save("list", 1, &vec![4, 5]).unwrap();
        }
        let store = Store::open(&url).unwrap();
        let r = store.records::<Vec<u32>>(&set).unwrap();
        assert_eq!(r.get("list").unwrap(), Some((vec![4, 5], 2)), "{db}");
    }
}

const HOSTILE: &[&str] = &[
    "'; DROP TABLE mvstm_records; --",
    "Robert'); DELETE FROM mvstm_commands; --",
    "\"quoted\" and 'single'",
    "$1 ?1 :name @p",
    "ünïcödé ✓ 🚀 中文",
    "back\\slash\nnew line\ttab",
    " ",
];

#[test]
fn hostile_names_are_bound_not_pasted() {
    for (db, url) in backends("records-hostile") {
        let store = Store::open(&url).unwrap();
        for (i, name) in HOSTILE.iter().enumerate() {
            let set = format!("{}{name}", unique("s"));
            let r = store.records::<String>(&set).unwrap();
            r.create(name, &name.to_string()).unwrap();
            assert_eq!(
                r.get(name).unwrap(),
                Some((name.to_string(), 1)),
                "{db} #{i}"
            );
            assert_eq!(r.save(name, 1, &format!("{name}{name}")).unwrap(), 2);
            // The other set with the same key is untouched: the set name was not mangled.
            let other = store.records::<String>(&unique("other")).unwrap();
            assert_eq!(other.get(name).unwrap(), None);
        }
        // The tables are all still there.
        let n = store
            .transaction(|db| db.query_i64("SELECT COUNT(*) FROM mvstm_records", &[]))
            .unwrap();
        assert!(n.unwrap() >= HOSTILE.len() as i64, "{db}");
        // Empty and NUL names are refused clearly.
        let e = store.records::<u8>("").unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "invalid record set name \"\": must not be empty"
        );
        let r = store.records::<u8>("fine").unwrap();
        assert!(matches!(r.create("", &1), Err(Error::Invalid { .. })));
        let e = r.create("nul\0byte", &1).unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
    }
}

#[test]
fn corrupt_value_is_a_clear_error_and_nothing_is_lost() {
    for (db, url) in backends("records-corrupt") {
        let store = Store::open(&url).unwrap();
        let set = unique("corrupt");
        let r = store.records::<u64>(&set).unwrap();
        r.create("n", &5).unwrap();
        let s = set.clone();
        store
            .transaction(move |db| {
                db.execute_params(
                    "UPDATE mvstm_records SET value = $1 WHERE set_name = $2 AND key = $3",
                    &["{not json".into(), s.as_str().into(), "n".into()],
                )
            })
            .unwrap();
        let e = r.get("n").unwrap_err();
        assert!(
            matches!(e, Error::CorruptPayload { what: "record", .. }),
            "{db}: {e:?}"
        );
        assert!(e.to_string().starts_with("corrupt record payload"), "{e}");
        // The row is still there, at its version: a save from that version repairs it.
        assert_eq!(r.save("n", 1, &6).unwrap(), 2);
        assert_eq!(r.get("n").unwrap(), Some((6, 2)), "{db}");
    }
}
