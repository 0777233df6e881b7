//! Opening stores: unknown schemes, unreachable databases, an idempotent schema set-up from
//! many threads at once, and a schema from a newer library refused.

mod common;

use common::{backends, sqlite_url};
use mvstm::durable::{Backend, Error, Store};

#[test]
fn unknown_scheme_is_a_clear_error() {
    for url in [
        "mysql://root@localhost/db",
        "sqlite:/no-slashes.db",
        "",
        "target/x.db",
    ] {
        let e = Store::open(url).unwrap_err();
        assert!(matches!(e, Error::UnknownScheme { .. }), "{url}: {e:?}");
        assert!(
            e.to_string().starts_with("unknown database url scheme"),
            "{e}"
        );
    }
    let e = Store::open("sqlite://").unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
}

#[test]
fn unreachable_databases_are_clear_errors() {
    // Nothing listens on port 1; the password must not show in the error.
    let e = Store::open("postgres://mvstm:hunter2@127.0.0.1:1/nothing").unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("cannot open database \"postgres://mvstm:***@127.0.0.1:1/nothing\""),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
    // A file path below a regular file cannot be created.
    let file = sqlite_url("open-blocker")
        .trim_start_matches("sqlite://")
        .to_string();
    std::fs::write(&file, b"not a folder").unwrap();
    let e = Store::open(&format!("sqlite://{file}/inner/db.sqlite")).unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    // A file that is not a database.
    let e = Store::open(&format!("sqlite://{file}")).unwrap_err();
    assert!(
        matches!(e, Error::Connect { .. } | Error::Database { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("not a database"), "{e}");
}

#[test]
fn opening_is_idempotent_and_concurrent() {
    for (db, url) in backends("open-concurrent") {
        let stores: Vec<Store> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6).map(|_| s.spawn(|| Store::open(&url))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        let expected = if db == "sqlite" {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        for s in &stores {
            assert_eq!(s.backend(), expected);
        }
        let version = stores[0]
            .transaction(|db| db.query_i64("SELECT version FROM mvstm_schema", &[]))
            .unwrap();
        assert_eq!(version, Some(1), "{db}");
    }
}

#[test]
fn a_schema_from_a_newer_library_is_refused() {
    let url = sqlite_url("open-newer");
    let store = Store::open(&url).unwrap();
    store
        .transaction(|db| db.execute("UPDATE mvstm_schema SET version = 99"))
        .unwrap();
    drop(store);
    let e = Store::open(&url).unwrap_err();
    assert!(e.to_string().contains("newer than this library"), "{e}");
}
