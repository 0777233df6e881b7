//! Banking with mvstm: the problems users come with, reproduced and printed.
//!
//! 1. A transfer conflicts with a concurrent withdrawal (forced deterministically): the body
//!    runs twice, `on_abort` reports the conflict, and the `on_commit` message prints once.
//! 2. A limited withdrawal blocks with `retry` until a transfer funds the account, parked.
//! 3. `or_else` pays from whichever account can, and waits while none can.
//! 4. `try_atomically` refuses an overdraft with a typed error.
//!
//! Run with `cargo run --release --example banking`.

use mvstm::{atomically, retry, try_atomically, StmResult, TVar, Txn};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

type Account = TVar<i64>;

/// Move `amount` from one account to another; composes into larger transactions.
fn transfer(tx: &mut Txn, from: &Account, to: &Account, amount: i64) -> StmResult<()> {
    tx.modify(from, |b| b - amount)?;
    tx.modify(to, |b| b + amount)
}

/// Take `amount` out of `account`, blocking (via `retry`) until the balance allows it.
fn withdraw(tx: &mut Txn, account: &Account, amount: i64) -> StmResult<()> {
    let balance = tx.read(account)?;
    if balance < amount {
        return retry();
    }
    tx.write(account, balance - amount)
}

#[derive(Debug)]
struct Overdraft {
    needed: i64,
    available: i64,
}

impl fmt::Display for Overdraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "overdraft: needed {} but only {} available",
            self.needed, self.available
        )
    }
}

impl std::error::Error for Overdraft {}

fn main() {
    let alice = TVar::new(100i64);
    let bob = TVar::new(0i64);
    let carol = TVar::new(0i64);

    conflicting_transfer(&alice, &bob);
    blocking_withdraw(&alice, &carol);
    pay_from_either(&carol);
    refuse_overdraft(&bob);

    let (a, b, c) = atomically(|tx| Ok((tx.read(&alice)?, tx.read(&bob)?, tx.read(&carol)?)));
    println!("\nfinal balances: alice {a}, bob {b}, carol {c}");
}

fn conflicting_transfer(alice: &Account, bob: &Account) {
    println!("1. a transfer that conflicts with a concurrent withdrawal");
    let (go, go_rx) = mpsc::channel::<()>();
    let (done, done_rx) = mpsc::channel::<()>();
    let withdrawer = {
        let alice = alice.clone();
        thread::spawn(move || {
            go_rx.recv().unwrap();
            atomically(|tx| tx.modify(&alice, |b| b - 30));
            println!("   withdrawal of 30 from alice committed in another thread");
            done.send(()).unwrap();
        })
    };
    let commits_printed = Arc::new(AtomicUsize::new(0));
    let mut body_runs = 0;
    atomically(|tx| {
        body_runs += 1;
        let attempt = tx.attempt();
        tx.on_abort(move |cause| println!("   on_abort: attempt {attempt} abandoned: {cause:?}"));
        let printed = commits_printed.clone();
        tx.on_commit(move || {
            printed.fetch_add(1, Ordering::SeqCst);
            println!("   on_commit: transfer of 50 alice -> bob is certain (attempt {attempt})");
        });
        let balance = tx.read(alice)?;
        if attempt == 1 {
            // Force the conflict: let the withdrawal commit between our read and our commit.
            go.send(()).unwrap();
            done_rx.recv().unwrap();
        }
        tx.write(alice, balance - 50)?;
        tx.modify(bob, |b| b + 50)
    });
    withdrawer.join().unwrap();
    println!(
        "   the body ran {body_runs} times, the on_commit message printed {} time(s); \
         alice {} (100 - 30 - 50), bob {}",
        commits_printed.load(Ordering::SeqCst),
        alice.load(),
        bob.load()
    );
}

fn blocking_withdraw(alice: &Account, carol: &Account) {
    println!("\n2. a limited withdrawal that blocks until the account is funded");
    let runs = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (carol, runs) = (carol.clone(), runs.clone());
        thread::spawn(move || {
            atomically(|tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                withdraw(tx, &carol, 15)
            });
        })
    };
    thread::sleep(Duration::from_millis(200));
    println!(
        "   carol has {}; the withdrawal of 15 is parked: its body ran {} time(s) in 200 ms",
        carol.load(),
        runs.load(Ordering::SeqCst)
    );
    atomically(|tx| transfer(tx, alice, carol, 20));
    println!("   transferred 20 alice -> carol");
    waiter.join().unwrap();
    println!(
        "   the withdrawal woke and completed: its body ran {} times in total; carol has {}",
        runs.load(Ordering::SeqCst),
        carol.load()
    );
}

fn pay_from_either(carol: &Account) {
    println!("\n3. or_else: pay from whichever account can, wait while none can");
    let checking = TVar::new(10i64);
    let savings = TVar::new(25i64);
    let pay = |checking: &Account, savings: &Account, amount: i64| {
        atomically(|tx| {
            tx.or_else(
                |tx| withdraw(tx, checking, amount).map(|()| "checking"),
                |tx| withdraw(tx, savings, amount).map(|()| "savings"),
            )
        })
    };
    println!(
        "   paid 20 from {} (checking 10, savings 25)",
        pay(&checking, &savings, 20)
    );
    let payer = {
        let (checking, savings) = (checking.clone(), savings.clone());
        thread::spawn(move || pay(&checking, &savings, 30))
    };
    thread::sleep(Duration::from_millis(100));
    println!(
        "   paying 30 waits: checking {}, savings {}; carol deposits 5 into checking",
        checking.load(),
        savings.load()
    );
    atomically(|tx| transfer(tx, carol, &checking, 5));
    thread::sleep(Duration::from_millis(50));
    println!("   still waiting (checking 15); savings receives 40");
    atomically(|tx| tx.modify(&savings, |b| b + 40));
    let source = payer.join().unwrap();
    println!(
        "   paid 30 from {source}: checking {}, savings {}",
        checking.load(),
        savings.load()
    );
}

fn refuse_overdraft(bob: &Account) {
    println!("\n4. try_atomically refuses an overdraft with a typed error");
    let result: Result<(), Overdraft> = try_atomically(|tx| {
        let balance = tx.read(bob)?;
        if balance < 500 {
            return tx.abort(Overdraft {
                needed: 500,
                available: balance,
            });
        }
        tx.write(bob, balance - 500)
    });
    match result {
        Ok(()) => println!("   withdrew 500 from bob"),
        Err(e) => println!("   refused: {e}; bob still has {}", bob.load()),
    }
}
