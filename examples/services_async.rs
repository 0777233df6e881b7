//! The services example on tokio: an admin port that starts and stops TCP services on 127.0.0.1
//! for many concurrent admin clients, with `AsyncLifecycle` guaranteeing that no start races
//! another, no failure or cancellation leaves a service stuck, and every reply tells the truth.
//!
//! Clients send one command per line and get one line back: `start <service>`,
//! `stop <service>`, `restart <service>`, `status`. Two services are managed, by name, in a
//! `Registry` of async services: `http` (answers `GET /`) and `echo` (echoes lines); the admin
//! server is itself a service under an `AsyncLifecycle`. Every start and stop is async (a tokio
//! listener, an accept task, a graceful shutdown that waits for the connections), and the admin
//! commands use the registry's async calls (`start_async`, `stop_async`, `restart_async`): no
//! thread blocks in the lifecycle.
//!
//! The example drives itself:
//! 1. a scripted client starts both services (while a task `wait_for`s http to run), makes an
//!    HTTP request and an echo round trip, restarts `echo`, and sends malformed commands;
//! 2. 32 clients send 10 conflicting commands each, at once;
//! 3. the replies are checked against what the services really did (each service counts its own
//!    starts and stops), then everything shuts down and the process exits.
//!
//! Run with `cargo run --release --example services_async`.

use mvstm::lifecycle::{AsyncLifecycle, AsyncService, Registry, RegistryError, State};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// What a service does with each connection.
#[derive(Clone, Copy)]
enum Kind {
    Http,
    Echo,
    Admin,
}

/// Serves each connection on loopback until stopped; counts its real starts and stops so the
/// replies can be checked against them.
struct TcpService {
    name: &'static str,
    kind: Kind,
    addr: Mutex<Option<SocketAddr>>,
    starts: AtomicUsize,
    stops: AtomicUsize,
}

/// A running `TcpService`: the sender that ends its accept loop, and the loop's task.
struct Listening {
    shutdown: oneshot::Sender<()>,
    acceptor: JoinHandle<()>,
}

impl TcpService {
    fn new(name: &'static str, kind: Kind) -> TcpService {
        TcpService {
            name,
            kind,
            addr: Mutex::new(None),
            starts: AtomicUsize::new(0),
            stops: AtomicUsize::new(0),
        }
    }

    fn addr(&self) -> Option<SocketAddr> {
        *self.addr.lock().unwrap()
    }
}

impl AsyncService for TcpService {
    type Running = Listening;
    type Error = io::Error;

    async fn start(&self) -> io::Result<Listening> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel();
        let acceptor = tokio::spawn(accept_loop(listener, stopped, self.kind));
        *self.addr.lock().unwrap() = Some(addr);
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(Listening { shutdown, acceptor })
    }

    async fn stop(&self, running: Listening) -> io::Result<()> {
        let _ = running.shutdown.send(());
        running
            .acceptor
            .await
            .map_err(|e| io::Error::other(format!("the {} accept task failed: {e}", self.name)))?;
        *self.addr.lock().unwrap() = None;
        self.stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Accept until told to stop, one task per connection; on the way out, end every connection's
/// task, so a stopped service leaves nothing behind.
async fn accept_loop(listener: TcpListener, mut stop: oneshot::Receiver<()>, kind: Kind) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                // A peer that vanishes mid-request is that connection's problem only.
                connections.spawn(async move { let _ = serve(kind, stream).await; });
            }
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve(kind: Kind, stream: TcpStream) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    match kind {
        Kind::Http => {
            let Some(request) = lines.next_line().await? else {
                return Ok(());
            };
            while let Some(header) = lines.next_line().await? {
                if header.is_empty() {
                    break;
                }
            }
            let (status, body) = if request.starts_with("GET / ") {
                ("200 OK", "hello from an async service started by mvstm\n")
            } else {
                ("404 Not Found", "not found\n")
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            write.write_all(response.as_bytes()).await?;
            write.shutdown().await
        }
        Kind::Echo => {
            while let Some(line) = lines.next_line().await? {
                write.write_all(format!("{line}\n").as_bytes()).await?;
            }
            Ok(())
        }
        Kind::Admin => {
            while let Some(line) = lines.next_line().await? {
                let reply = admin_command(line).await;
                write.write_all(format!("{reply}\n").as_bytes()).await?;
            }
            Ok(())
        }
    }
}

/// The services the admin protocol drives, set once in `main`: the registry the commands go
/// through, and a handle on each lifecycle to read its address and counts.
struct Managed {
    registry: Registry,
    handles: BTreeMap<&'static str, AsyncLifecycle<TcpService>>,
}

static SERVICES: OnceLock<Managed> = OnceLock::new();

/// One admin command. Boxed, with its `Send` spelled out: the admin service's own start spawns
/// the task that calls this, which starts services of the same type, and the compiler cannot
/// infer `Send` through that cycle of opaque futures.
fn admin_command(line: String) -> Pin<Box<dyn Future<Output = String> + Send>> {
    Box::pin(async move { admin_reply(&line).await })
}

async fn admin_reply(line: &str) -> String {
    let services = SERVICES.get().expect("the services are set before serving");
    let words: Vec<&str> = line.split_whitespace().collect();
    let (verb, name) = match words.as_slice() {
        ["status"] => {
            // One consistent snapshot of every state, from the registry.
            let parts: Vec<String> = services
                .registry
                .status()
                .into_iter()
                .map(|(name, state)| {
                    let at = services.handles[name.as_str()]
                        .service()
                        .addr()
                        .filter(|_| state == State::Running)
                        .map(|a| format!(" on {a}"))
                        .unwrap_or_default();
                    format!("{name}={state}{at}")
                })
                .collect();
            return format!("ok: {}", parts.join(" "));
        }
        [verb @ ("start" | "stop" | "restart"), name] => (*verb, *name),
        [verb @ ("start" | "stop" | "restart")] => {
            return format!("error: `{verb}` needs a service name");
        }
        [verb @ ("start" | "stop" | "restart" | "status"), ..] => {
            return format!("error: too many words for `{verb}`");
        }
        [] => return "error: empty command".to_string(),
        [verb, ..] => {
            return format!(
                "error: unknown command `{verb}`; try start|stop|restart <service> or status"
            )
        }
    };
    // An unknown name, a refused claim and a failed start all come back as a RegistryError.
    let registry = &services.registry;
    let outcome: Result<(), RegistryError> = match verb {
        "start" => registry.start_async(name).await,
        "stop" => registry.stop_async(name).await,
        _ => registry.restart_async(name).await,
    };
    let done = match verb {
        "start" => "started",
        "stop" => "stopped",
        _ => "restarted",
    };
    match outcome {
        Ok(()) => format!("ok: {name} {done}"),
        Err(e) => format!("error: {e}"),
    }
}

/// An admin client: one connection, one command at a time.
struct Admin {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Admin {
    async fn connect(addr: SocketAddr) -> io::Result<Admin> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Admin {
            lines: BufReader::new(read).lines(),
            write,
        })
    }

    async fn send(&mut self, command: &str) -> io::Result<String> {
        self.write
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        let reply = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply in 10 s"))??;
        reply.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the admin port closed"))
    }
}

async fn http_get(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// The real starts and stops of each managed service, and whether it runs now.
fn counts(
    services: &BTreeMap<&'static str, AsyncLifecycle<TcpService>>,
) -> HashMap<&'static str, (usize, usize, bool)> {
    services
        .iter()
        .map(|(name, lc)| {
            let s = lc.service();
            let running = lc.state() == State::Running;
            (
                *name,
                (
                    s.starts.load(Ordering::SeqCst),
                    s.stops.load(Ordering::SeqCst),
                    running,
                ),
            )
        })
        .collect()
}

/// `pub` so that `tests/services_async.rs` runs this very program as a test.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let http = AsyncLifecycle::new(TcpService::new("http", Kind::Http));
    let echo = AsyncLifecycle::new(TcpService::new("echo", Kind::Echo));
    let registry = Registry::new();
    registry.register("http", http.clone(), &[])?;
    registry.register("echo", echo.clone(), &[])?;
    let managed = SERVICES.get_or_init(|| Managed {
        registry,
        handles: BTreeMap::from([("http", http.clone()), ("echo", echo.clone())]),
    });
    let services = &managed.handles;

    let admin = AsyncLifecycle::new(TcpService::new("admin", Kind::Admin));
    admin.start().await?;
    let admin_addr = admin
        .service()
        .addr()
        .expect("a running service has an address");
    println!("admin port listening on {admin_addr}\n");

    println!("== 1. one admin client, step by step");
    // A task that waits, without a thread, for http to run.
    let http_up = {
        let http = http.clone();
        tokio::spawn(async move {
            http.wait_for(|s| *s == State::Running, Duration::from_secs(10))
                .await
        })
    };
    let mut client = Admin::connect(admin_addr).await?;
    for command in ["status", "start http", "start echo", "start http", "status"] {
        println!("> {command:<14} {}", client.send(command).await?);
    }
    assert_eq!(http_up.await?, Ok(State::Running));
    println!("  a task waiting for http saw it running");
    let http_addr = http.service().addr().expect("http runs");
    let response = http_get(http_addr).await?;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    println!(
        "  GET http://{http_addr}/ -> {} | {}",
        response.lines().next().unwrap_or(""),
        response.lines().last().unwrap_or("")
    );
    let mut echo_client = Admin::connect(echo.service().addr().expect("echo runs")).await?;
    let echoed = echo_client.send("ping").await?;
    assert_eq!(echoed, "ping");
    println!("  echo round trip -> {echoed}");
    drop(echo_client);
    for command in ["restart echo", "stop http", "stop http", "status"] {
        println!("> {command:<14} {}", client.send(command).await?);
    }
    for command in [
        "launch http",
        "start ftp",
        "start",
        "",
        "stop   ",
        "stop http now",
    ] {
        let reply = client.send(command).await?;
        assert!(
            reply.starts_with("error: "),
            "bad input must get an error: {reply}"
        );
        println!("> {command:<14} {reply}");
    }
    let baseline = counts(services);

    const CLIENTS: u64 = 32;
    const COMMANDS: usize = 10;
    println!("\n== 2. {CLIENTS} admin clients at once, {COMMANDS} conflicting commands each");
    let mut clients = JoinSet::new();
    for id in 0..CLIENTS {
        clients.spawn(async move {
            let mut client = Admin::connect(admin_addr).await?;
            let mut oks: HashMap<(&str, &str), usize> = HashMap::new();
            let mut replies = Vec::new();
            let mut seed = id * 0x9E37_79B9 + 1;
            for _ in 0..COMMANDS {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let verb =
                    ["start", "stop", "restart", "start", "stop", "status"][(seed % 6) as usize];
                let name = ["http", "echo"][(seed >> 8) as usize % 2];
                let command = if verb == "status" {
                    verb.to_string()
                } else {
                    format!("{verb} {name}")
                };
                let reply = client.send(&command).await?;
                if reply.starts_with("ok:") && verb != "status" {
                    *oks.entry((verb, name)).or_default() += 1;
                }
                replies.push(format!("[client {id:>2}] {command:<12} -> {reply}"));
            }
            Ok::<_, io::Error>((oks, replies))
        });
    }
    let mut oks: HashMap<(&str, &str), usize> = HashMap::new();
    let mut shown = 0;
    while let Some(done) = clients.join_next().await {
        let (client_oks, replies) = done??;
        for (key, n) in client_oks {
            *oks.entry(key).or_default() += n;
        }
        // A sample of the replies (all of them would be 320 lines).
        for reply in replies.into_iter().take(2) {
            if shown < 24 {
                println!("{reply}");
                shown += 1;
            }
        }
    }

    println!("\n== 3. replies against what the services did");
    let now = counts(services);
    for (name, lc) in services {
        let ok = |verb: &str| oks.get(&(verb, *name)).copied().unwrap_or(0);
        let (start0, stop0, running_before) = baseline[name];
        let (starts, stops) = (now[name].0 - start0, now[name].1 - stop0);
        // A restart that succeeded stopped (if it was running) and started once; one that found
        // the service stopped only started. So: starts = ok starts + ok restarts, and
        // stops = ok stops + restarts that stopped, which lies between ok stops and that plus ok
        // restarts; the state at the end pins it: every start is matched by a stop, or the
        // service is still running.
        println!(
            "{name}: {} ok starts + {} ok restarts / {starts} real starts, {} ok stops / {stops} real stops, now {}",
            ok("start"),
            ok("restart"),
            ok("stop"),
            lc.state()
        );
        assert_eq!(
            ok("start") + ok("restart"),
            starts,
            "a start reply lied about {name}"
        );
        assert!(
            (ok("stop")..=ok("stop") + ok("restart")).contains(&stops),
            "a stop reply lied about {name}"
        );
        let running_at_start = usize::from(running_before);
        let running_now = usize::from(lc.state() == State::Running);
        assert_eq!(
            running_at_start + starts,
            stops + running_now,
            "{name}: starts and stops do not add up to its state"
        );
    }
    println!("every reply matched a real start or stop, and none ran twice");

    println!("\n== shutting down");
    for command in ["stop http", "stop echo", "status"] {
        println!("> {command:<14} {}", client.send(command).await?);
    }
    drop(client);
    admin.stop().await?;
    let status = managed.registry.status();
    assert!(status.iter().all(|(_, state)| *state == State::Stopped));
    println!(
        "admin port closed; {}",
        status
            .iter()
            .map(|(n, state)| format!("{n}={state}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
