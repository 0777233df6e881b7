//! A real server: an admin port that starts and stops TCP services on 127.0.0.1 for concurrent
//! admin clients, with mvstm's lifecycle guaranteeing that no start races another, no failure
//! leaves a service stuck, and every reply tells the truth.
//!
//! The process listens on an admin port. Clients send one command per line and get one line
//! back: `start <service>`, `stop <service>`, `restart <service>`, `status`. Two services are
//! managed: `http` (answers `GET /`) and `echo` (echoes lines). The admin server is itself a
//! service under a `Lifecycle`.
//!
//! The example drives itself:
//! 1. a scripted client starts both services, makes an HTTP request and an echo round trip,
//!    restarts `echo`, and sends malformed commands;
//! 2. six clients send conflicting commands at once; every reply is printed;
//! 3. the replies are checked against what the services really did (each service counts its own
//!    starts and stops), then everything shuts down and the process exits.
//!
//! Run with `cargo run --release --example services`.

use mvstm::lifecycle::{Lifecycle, Registry, RegistryError, Service, State};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Serves each connection on loopback with `handle` until stopped; counts its real starts and
/// stops so the replies can be checked against them.
struct TcpService {
    name: &'static str,
    handle: fn(&mut BufReader<TcpStream>, &mut TcpStream) -> io::Result<()>,
    addr: Mutex<Option<SocketAddr>>,
    starts: AtomicUsize,
    stops: AtomicUsize,
}

/// A running `TcpService`: where it listens, its shutdown flag and its accept thread.
struct Listening {
    addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
}

impl TcpService {
    fn new(
        name: &'static str,
        handle: fn(&mut BufReader<TcpStream>, &mut TcpStream) -> io::Result<()>,
    ) -> TcpService {
        TcpService {
            name,
            handle,
            addr: Mutex::new(None),
            starts: AtomicUsize::new(0),
            stops: AtomicUsize::new(0),
        }
    }

    fn addr(&self) -> Option<SocketAddr> {
        *self.addr.lock().unwrap()
    }
}

impl Service for TcpService {
    type Running = Listening;
    type Error = io::Error;

    fn start(&self) -> io::Result<Listening> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let (flag, handle) = (Arc::clone(&shutdown), self.handle);
        let acceptor = thread::Builder::new()
            .name(format!("{}-accept", self.name))
            .spawn(move || accept_loop(listener, flag, handle))?;
        *self.addr.lock().unwrap() = Some(addr);
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(Listening {
            addr,
            shutdown,
            acceptor,
        })
    }

    fn stop(&self, running: Listening) -> io::Result<()> {
        running.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees the flag and returns.
        TcpStream::connect(running.addr)?;
        running
            .acceptor
            .join()
            .map_err(|_| io::Error::other("the accept thread panicked"))?;
        *self.addr.lock().unwrap() = None;
        self.stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Accept until `shutdown`, one thread per connection. On the way out, shut every connection
/// down (which ends its blocking reads) and join its thread, so a stopped service leaves no
/// thread behind.
fn accept_loop(
    listener: TcpListener,
    shutdown: Arc<AtomicBool>,
    handle: fn(&mut BufReader<TcpStream>, &mut TcpStream) -> io::Result<()>,
) {
    let mut connections = Vec::new();
    for stream in listener.incoming() {
        if shutdown.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        // Replies are small lines: send each at once instead of waiting for an ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let (Ok(read_half), Ok(control)) = (stream.try_clone(), stream.try_clone()) else {
            continue;
        };
        let thread = thread::spawn(move || {
            // A peer that vanishes mid-request is that connection's problem only.
            let _ = handle(&mut BufReader::new(read_half), &mut stream);
        });
        connections.retain(|(_, thread): &(TcpStream, JoinHandle<()>)| !thread.is_finished());
        connections.push((control, thread));
    }
    for (control, thread) in connections {
        let _ = control.shutdown(Shutdown::Both);
        let _ = thread.join();
    }
}

/// Read one line; `Ok(None)` when the peer closed.
fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut line = String::new();
    match reader.read_line(&mut line)? {
        0 => Ok(None),
        _ => Ok(Some(line.trim_end().to_string())),
    }
}

/// `http`: answer `GET /` with a greeting, anything else with 404; one request per connection.
fn serve_http(reader: &mut BufReader<TcpStream>, out: &mut TcpStream) -> io::Result<()> {
    let Some(request) = read_line(reader)? else {
        return Ok(());
    };
    while let Some(header) = read_line(reader)? {
        if header.is_empty() {
            break;
        }
    }
    let (status, body) = if request.starts_with("GET / ") {
        ("200 OK", "hello from a service started by mvstm\n")
    } else {
        ("404 Not Found", "not found\n")
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.shutdown(Shutdown::Write)
}

/// `echo`: send every line back.
fn serve_echo(reader: &mut BufReader<TcpStream>, out: &mut TcpStream) -> io::Result<()> {
    loop {
        match read_line(reader)? {
            Some(line) => out.write_all(format!("{line}\n").as_bytes())?,
            None => return Ok(()),
        }
    }
}

/// The registry the admin protocol drives; set once in `main` (the admin handler is a plain
/// `fn`, like the other services' handlers).
static REGISTRY: std::sync::OnceLock<(Registry, Vec<Lifecycle<TcpService>>)> =
    std::sync::OnceLock::new();

/// `admin`: one command per line, one reply per line.
fn serve_admin(reader: &mut BufReader<TcpStream>, out: &mut TcpStream) -> io::Result<()> {
    loop {
        let Some(line) = read_line(reader)? else {
            return Ok(());
        };
        out.write_all(format!("{}\n", admin_command(&line)).as_bytes())?;
    }
}

fn admin_command(line: &str) -> String {
    let (registry, services) = REGISTRY.get().expect("the registry is set before serving");
    let words: Vec<&str> = line.split_whitespace().collect();
    let outcome: Result<String, RegistryError> = match words.as_slice() {
        ["status"] => {
            let parts: Vec<String> = registry
                .status()
                .into_iter()
                .map(|(name, state)| {
                    let at = services
                        .iter()
                        .find(|s| s.service().name == name)
                        .and_then(|s| s.service().addr())
                        .filter(|_| state == State::Running)
                        .map(|a| format!(" on {a}"))
                        .unwrap_or_default();
                    format!("{name}={state}{at}")
                })
                .collect();
            Ok(parts.join(" "))
        }
        ["start", name] => registry.start(name).map(|()| format!("{name} started")),
        ["stop", name] => registry.stop(name).map(|()| format!("{name} stopped")),
        ["restart", name] => registry.restart(name).map(|()| format!("{name} restarted")),
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
    match outcome {
        Ok(done) => format!("ok: {done}"),
        Err(e) => format!("error: {e}"),
    }
}

/// An admin client: one connection, one command at a time.
struct Admin {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Admin {
    fn connect(addr: SocketAddr) -> io::Result<Admin> {
        let writer = TcpStream::connect(addr)?;
        writer.set_nodelay(true)?;
        writer.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Admin {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    fn send(&mut self, command: &str) -> io::Result<String> {
        self.writer.write_all(format!("{command}\n").as_bytes())?;
        read_line(&mut self.reader)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the admin port closed"))
    }
}

fn http_get(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// `pub` so that `tests/services.rs` runs this very program as a test.
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let http = Lifecycle::new(TcpService::new("http", serve_http));
    let echo = Lifecycle::new(TcpService::new("echo", serve_echo));
    let registry = Registry::new();
    registry.register("http", http.clone(), &[])?;
    registry.register("echo", echo.clone(), &[])?;
    REGISTRY
        .set((registry.clone(), vec![http.clone(), echo.clone()]))
        .map_err(|_| "the services example runs once per process")?;

    let admin = Lifecycle::new(TcpService::new("admin", serve_admin));
    admin.start()?;
    let admin_addr = admin
        .service()
        .addr()
        .expect("a running service has an address");
    println!("admin port listening on {admin_addr}\n");

    println!("== 1. one admin client, step by step");
    let mut client = Admin::connect(admin_addr)?;
    for command in ["status", "start http", "start echo", "start http", "status"] {
        println!("> {command:<14} {}", client.send(command)?);
    }
    let http_addr = http.service().addr().expect("http runs");
    let response = http_get(http_addr)?;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    println!(
        "  GET http://{http_addr}/ -> {} | {}",
        response.lines().next().unwrap_or(""),
        response.lines().last().unwrap_or("")
    );
    let mut echo_client = Admin::connect(echo.service().addr().expect("echo runs"))?;
    let echoed = echo_client.send("ping")?;
    assert_eq!(echoed, "ping");
    println!("  echo round trip -> {echoed}");
    drop(echo_client);
    for command in ["restart echo", "stop http", "stop http", "status"] {
        println!("> {command:<14} {}", client.send(command)?);
    }
    for command in [
        "launch http",
        "start ftp",
        "start",
        "",
        "stop   ",
        "stop http now",
    ] {
        let reply = client.send(command)?;
        assert!(
            reply.starts_with("error: "),
            "bad input must get an error: {reply}"
        );
        println!("> {command:<14} {reply}");
    }
    let baseline: HashMap<&str, (usize, usize)> = [("http", &http), ("echo", &echo)]
        .into_iter()
        .map(|(name, lc)| {
            let s = lc.service();
            (
                name,
                (
                    s.starts.load(Ordering::SeqCst),
                    s.stops.load(Ordering::SeqCst),
                ),
            )
        })
        .collect();

    println!("\n== 2. six admin clients at once, conflicting commands");
    let oks = Arc::new(Mutex::new(HashMap::<(String, String), usize>::new()));
    let clients: Vec<_> = (0..6u64)
        .map(|id| {
            let oks = Arc::clone(&oks);
            thread::spawn(move || -> io::Result<()> {
                let mut client = Admin::connect(admin_addr)?;
                let mut seed = id * 0x9E37_79B9 + 1;
                for _ in 0..8 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let verb = ["start", "stop", "start", "stop", "status"][(seed % 5) as usize];
                    let service = ["http", "echo"][(seed >> 8) as usize % 2];
                    let command = if verb == "status" {
                        verb.to_string()
                    } else {
                        format!("{verb} {service}")
                    };
                    let reply = client.send(&command)?;
                    println!("[client {id}] {command:<10} -> {reply}");
                    if reply.starts_with("ok:") && verb != "status" {
                        *oks.lock()
                            .unwrap()
                            .entry((verb.into(), service.into()))
                            .or_default() += 1;
                    }
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client thread panicked")?;
    }

    println!("\n== 3. replies against what the services did");
    let oks = oks.lock().unwrap();
    for (name, lc) in [("http", &http), ("echo", &echo)] {
        let count = |verb: &str| {
            oks.get(&(verb.to_string(), name.to_string()))
                .copied()
                .unwrap_or(0)
        };
        let (start0, stop0) = baseline[name];
        let s = lc.service();
        let starts = s.starts.load(Ordering::SeqCst) - start0;
        let stops = s.stops.load(Ordering::SeqCst) - stop0;
        println!(
            "{name}: {} ok starts / {starts} real starts, {} ok stops / {stops} real stops, now {}",
            count("start"),
            count("stop"),
            lc.state()
        );
        assert_eq!(
            (count("start"), count("stop")),
            (starts, stops),
            "a reply lied about {name}"
        );
    }
    println!("every reply matched a real start or stop, and none ran twice");

    println!("\n== shutting down");
    for command in ["stop http", "stop echo", "status"] {
        println!("> {command:<14} {}", client.send(command)?);
    }
    drop(client);
    admin.stop()?;
    assert!(registry.status().iter().all(|(_, s)| *s == State::Stopped));
    println!(
        "admin port closed; {}",
        registry
            .status()
            .iter()
            .map(|(n, s)| format!("{n}={s}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
