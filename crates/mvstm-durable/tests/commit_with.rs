//! `Store::commit_with`: the database transaction commits inside the STM commit. A database
//! refusal leaves no STM effect; an STM attempt that aborts or conflicts leaves no database
//! effect; a serialization failure re-runs the database transaction.

mod common;

use common::{backends, unique};
use mvstm::durable::{Error, Store, Value};
use mvstm::{try_atomically, AbortCause, TVar};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

fn audit_table(store: &Store) -> String {
    let table = format!("audit_{}", unique("t").replace('-', "_"));
    let create = format!("CREATE TABLE {table} (amount BIGINT NOT NULL CHECK (amount >= 0))");
    store.transaction(move |db| db.execute(&create)).unwrap();
    table
}

fn rows(store: &Store, table: &str) -> Vec<i64> {
    let select = format!("SELECT amount FROM {table} ORDER BY amount");
    store
        .transaction(move |db| db.query(&select, &[]))
        .unwrap()
        .into_iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect()
}

fn insert(
    table: &str,
    amount: i64,
) -> impl FnMut(&mut mvstm::durable::Db<'_>) -> Result<u64, Error> {
    let sql = format!("INSERT INTO {table} (amount) VALUES ($1)");
    move |db| db.execute_params(&sql, &[Value::Int(amount)])
}

#[test]
fn both_commit() {
    for (db, url) in backends("commit-with-both") {
        let store = Store::open(&url).unwrap();
        let table = audit_table(&store);
        let balance = TVar::new(100i64);
        try_atomically::<_, Error>(|tx| {
            tx.modify(&balance, |b| b - 10)?;
            store.commit_with(tx, insert(&table, 10))
        })
        .unwrap();
        assert_eq!(balance.load(), 90, "{db}");
        assert_eq!(rows(&store, &table), vec![10], "{db}");
    }
}

#[test]
fn database_refusal_vetoes_the_stm_transaction() {
    for (db, url) in backends("commit-with-refused") {
        let store = Store::open(&url).unwrap();
        let table = audit_table(&store);
        let balance = TVar::new(100i64);
        let aborted = Rc::new(Cell::new(None));
        let r = try_atomically::<_, Error>(|tx| {
            tx.modify(&balance, |b| b - 10)?;
            let aborted = aborted.clone();
            tx.on_abort(move |cause| aborted.set(Some(cause)));
            // The CHECK constraint refuses a negative amount.
            store.commit_with(tx, insert(&table, -10))
        });
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Database { .. }), "{db}: {e:?}");
        assert_eq!(balance.load(), 100, "{db}: the STM write was published");
        assert_eq!(aborted.get(), Some(AbortCause::Abort), "{db}");
        assert!(rows(&store, &table).is_empty(), "{db}");
    }
}

#[test]
fn an_aborted_stm_transaction_leaves_no_database_effect() {
    for (db, url) in backends("commit-with-abort") {
        let store = Store::open(&url).unwrap();
        let table = audit_table(&store);
        let balance = TVar::new(5i64);
        let r: Result<(), Error> = try_atomically(|tx| {
            store.commit_with(tx, insert(&table, 50))?;
            if tx.read(&balance)? < 50 {
                return tx.abort(Error::Invalid {
                    what: "withdrawal",
                    value: "50".into(),
                    reason: "insufficient funds",
                });
            }
            tx.modify(&balance, |b| b - 50)
        });
        assert!(matches!(r, Err(Error::Invalid { .. })), "{db}");
        assert!(rows(&store, &table).is_empty(), "{db}: the database ran");
    }
}

#[test]
fn a_conflicting_stm_attempt_leaves_no_database_effect() {
    for (db, url) in backends("commit-with-conflict") {
        let store = Store::open(&url).unwrap();
        let table = audit_table(&store);
        let balance = TVar::new(100i64);
        let attempts = Cell::new(0);
        try_atomically::<_, Error>(|tx| {
            attempts.set(attempts.get() + 1);
            let seen = tx.read(&balance)?;
            if attempts.get() == 1 {
                // Another thread commits a change to what this attempt read: it must conflict.
                let other = balance.clone();
                std::thread::spawn(move || mvstm::atomically(|tx| tx.modify(&other, |b| b + 1)))
                    .join()
                    .unwrap();
            }
            tx.write(&balance, seen - 10)?;
            store.commit_with(tx, insert(&table, seen))
        })
        .unwrap();
        assert!(
            attempts.get() >= 2,
            "{db}: the first attempt did not conflict"
        );
        assert_eq!(balance.load(), 91, "{db}");
        // Only the attempt that committed wrote to the database, with what it read.
        assert_eq!(rows(&store, &table), vec![101], "{db}");
    }
}

#[test]
fn a_serialization_failure_reruns_the_database_transaction() {
    for (db, url) in backends("commit-with-rerun") {
        let store = Store::open(&url).unwrap();
        let table = audit_table(&store);
        let balance = TVar::new(0i64);
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        try_atomically::<_, Error>(|tx| {
            tx.write(&balance, 7)?;
            let counter = counter.clone();
            let mut first = true;
            let mut write = insert(&table, 7);
            store.commit_with(tx, move |db| {
                counter.fetch_add(1, Ordering::SeqCst);
                let n = write(db)?;
                if std::mem::take(&mut first) {
                    // What PostgreSQL reports for a serializable conflict (SQLSTATE 40001):
                    // the store rolls back (the insert too) and runs the closure again.
                    return Err(Error::Database {
                        message: "could not serialize access".into(),
                        code: Some("40001".into()),
                        retryable: true,
                    });
                }
                Ok(n)
            })
        })
        .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2, "{db}");
        assert_eq!(balance.load(), 7);
        assert_eq!(
            rows(&store, &table),
            vec![7],
            "{db}: the first run was not rolled back"
        );
    }
}

#[test]
fn a_real_serialization_failure_on_postgres_reruns_inside_the_commit() {
    let Some((_, url)) = backends("commit-with-40001")
        .into_iter()
        .find(|(db, _)| *db == "postgres")
    else {
        return; // SQLite has one writer at a time: no serialization failure to provoke
    };
    let store = Store::open(&url).unwrap();
    let table = format!("counter_{}", unique("t").replace('-', "_"));
    let create =
        format!("CREATE TABLE {table} (n BIGINT NOT NULL); INSERT INTO {table} VALUES (0)");
    store
        .transaction(move |db| {
            for statement in create.split("; ") {
                db.execute(statement)?;
            }
            Ok(())
        })
        .unwrap();
    let (snapshot_taken, wait_for_snapshot) = std::sync::mpsc::channel::<()>();
    let (other_committed, wait_for_other) = std::sync::mpsc::channel::<()>();
    let wait_for_other = Arc::new(std::sync::Mutex::new(wait_for_other));
    let other = {
        let (store, table) = (store.clone(), table.clone());
        std::thread::spawn(move || {
            wait_for_snapshot.recv().unwrap();
            let update = format!("UPDATE {table} SET n = n + 1");
            store.transaction(move |db| db.execute(&update)).unwrap();
            other_committed.send(()).unwrap();
        })
    };
    let runs = Arc::new(AtomicU32::new(0));
    let flag = TVar::new(false);
    try_atomically::<_, Error>(|tx| {
        tx.write(&flag, true)?;
        let (runs, table) = (runs.clone(), table.clone());
        let (snapshot_taken, wait_for_other) = (snapshot_taken.clone(), wait_for_other.clone());
        store.commit_with(tx, move |db| {
            let run = runs.fetch_add(1, Ordering::SeqCst);
            db.query(&format!("SELECT n FROM {table}"), &[])?; // the snapshot
            if run == 0 {
                // Let the other transaction update the row and commit after our snapshot:
                // our update must then fail with SQLSTATE 40001.
                snapshot_taken.send(()).unwrap();
                wait_for_other.lock().unwrap().recv().unwrap();
            }
            db.execute(&format!("UPDATE {table} SET n = n + 10"))
        })
    })
    .unwrap();
    other.join().unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the database transaction was not re-run"
    );
    assert!(flag.load());
    let select = format!("SELECT n FROM {table}");
    let n = store
        .transaction(move |db| db.query_i64(&select, &[]))
        .unwrap();
    assert_eq!(n, Some(11), "both updates applied once");
}
