//! The snippets of `shared/API.md` §1–3, unchanged, as tests.

use mvstm::{atomically, retry, try_atomically, AbortCause, StmResult, TVar, Txn};

#[test]
fn core_snippet() {
    let a = TVar::new(100i64); // TVar<T>: cheap Clone handle, Send + Sync when T is
    let same = a.clone(); // the same variable
    let b = TVar::new(50i64);
    assert_eq!(same.load(), 100); // latest committed value, outside any transaction

    let sum: i64 = atomically(|tx| Ok(tx.read(&a)? + tx.read(&b)?));
    assert_eq!(sum, 150);
    atomically(|tx| tx.write(&a, 5));
    atomically(|tx| tx.modify(&a, |x| x + 1));
    let old: i64 = atomically(|tx| tx.replace(&a, 7));
    assert_eq!(old, 6);

    // helpers compose by taking the transaction
    fn withdraw(tx: &mut Txn, acc: &TVar<i64>, amount: i64) -> StmResult<()> {
        let bal = tx.read(acc)?;
        if bal < amount {
            return retry(); // block until something this attempt read changes, then re-run
        }
        tx.write(acc, bal - amount)
    }

    // (a holds 7 here, so the first branch retries and 10 is taken from b)
    atomically(|tx| tx.or_else(|tx| withdraw(tx, &a, 10), |tx| withdraw(tx, &b, 10)));
    assert_eq!(b.load(), 40);

    #[derive(Debug, PartialEq)]
    struct Insufficient;
    let r: Result<(), Insufficient> = try_atomically(|tx| {
        if tx.read(&a)? < 1_000 {
            return tx.abort(Insufficient);
        }
        tx.modify(&a, |x| x - 1_000)
    });
    assert_eq!(r, Err(Insufficient));
}

#[test]
fn hooks_snippet() {
    let a = TVar::new(1i64);
    atomically(|tx| {
        tx.modify(&a, |x| x + 1)?;
        tx.on_abort(|cause: AbortCause| eprintln!("attempt abandoned: {cause:?}"));
        tx.on_commit(|| println!("commit is certain; not yet visible"));
        tx.after_commit(|| println!("visible; locks released"));
        Ok(())
    });

    // a vetoable commit hook: Err aborts the whole transaction with that error
    let r: Result<(), String> = try_atomically(|tx| {
        tx.write(&a, 0)?;
        tx.try_on_commit(|| Err::<(), String>("database refused".into()));
        Ok(())
    });
    assert!(r.is_err() && a.load() != 0);
}

#[test]
fn try_atomically_takes_two_type_parameters() {
    let a = TVar::new(1u8);
    let r = try_atomically::<u8, String>(|tx| tx.read(&a));
    assert_eq!(r, Ok(1));
}

#[test]
fn threads_smoke() {
    let c = TVar::new(0u64);
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    atomically(|tx| tx.modify(&c, |x| x + 1));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(c.load(), 40_000);
}

/// API.md §5, with the `todo!()` bodies filled in: a real listener thread on loopback.
#[test]
fn lifecycle_snippet() -> Result<(), Box<dyn std::error::Error>> {
    use mvstm::lifecycle::{Lifecycle, Service, State};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Http {
        shutdown: Arc<AtomicBool>,
        port: std::sync::Mutex<u16>,
    }
    impl Service for Http {
        type Running = std::thread::JoinHandle<()>; // whatever the running instance needs
        type Error = std::io::Error;
        fn start(&self) -> Result<Self::Running, Self::Error> {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            *self.port.lock().unwrap() = listener.local_addr()?.port();
            self.shutdown.store(false, Ordering::SeqCst);
            let shutdown = Arc::clone(&self.shutdown);
            Ok(std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shutdown.load(Ordering::SeqCst) {
                        return;
                    }
                    drop(stream);
                }
            }))
        }
        fn stop(&self, running: Self::Running) -> Result<(), Self::Error> {
            self.shutdown.store(true, Ordering::SeqCst);
            TcpStream::connect(("127.0.0.1", *self.port.lock().unwrap()))?; // wake the accept
            running
                .join()
                .map_err(|_| std::io::Error::other("the server thread panicked"))
        }
    }
    let http = Lifecycle::new(Http {
        shutdown: Arc::new(AtomicBool::new(false)),
        port: std::sync::Mutex::new(0),
    });
    http.start()?; // Err at once if starting, running or stopping
    assert!(matches!(http.state(), State::Running));
    assert!(http.start().is_err());
    http.stop()?; // Err at once if not running
    assert!(http.stop().is_err());
    assert_eq!(http.state(), State::Stopped);
    Ok(())
}
