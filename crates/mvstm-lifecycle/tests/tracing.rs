//! The `tracing` feature: lifecycle transitions, refused claims, the spans around
//! `Service::start`/`stop`, and command handling (by the processor thread, and by the async
//! processor's task across its awaits) reach a subscriber with the documented names, fields and
//! levels, and the service's and handlers' own events land inside the span.
#![cfg(feature = "tracing")]

use mvstm_lifecycle::{CommandQueue, HandlerError, Lifecycle, Service};
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// What the collector saw: one line per span creation and per event.
static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

#[derive(Clone, Debug)]
struct Seen {
    /// "span" or "event".
    kind: &'static str,
    level: Level,
    name: String,
    /// `field=value` pairs, space separated (the message as `message=...`).
    fields: String,
    /// The names of the spans entered on the emitting thread, outermost first.
    inside: Vec<String>,
    /// The emitting thread's name (tests run in parallel: each looks at its own threads).
    thread: Option<String>,
}

thread_local! {
    static ENTERED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Collector {
    next: AtomicU64,
    names: Mutex<Vec<(u64, String)>>,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl Collector {
    fn inside(&self) -> Vec<String> {
        let names = self.names.lock().unwrap();
        ENTERED.with(|e| {
            e.borrow()
                .iter()
                .filter_map(|id| names.iter().find(|(i, _)| i == id).map(|(_, n)| n.clone()))
                .collect()
        })
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields(String::new());
        span.record(&mut fields);
        let name = span.metadata().name().to_string();
        self.names.lock().unwrap().push((id, name.clone()));
        SEEN.lock().unwrap().push(Seen {
            kind: "span",
            level: *span.metadata().level(),
            name,
            fields: fields.0,
            inside: self.inside(),
            thread: std::thread::current().name().map(str::to_string),
        });
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        SEEN.lock().unwrap().push(Seen {
            kind: "event",
            level: *event.metadata().level(),
            name: event.metadata().target().to_string(),
            fields: fields.0,
            inside: self.inside(),
            thread: std::thread::current().name().map(str::to_string),
        });
    }
    fn enter(&self, id: &Id) {
        ENTERED.with(|e| e.borrow_mut().push(id.into_u64()));
    }
    fn exit(&self, id: &Id) {
        ENTERED.with(|e| {
            let mut e = e.borrow_mut();
            if let Some(at) = e.iter().rposition(|x| *x == id.into_u64()) {
                e.remove(at);
            }
        });
    }
}

fn collect() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Collector {
            next: AtomicU64::new(0),
            names: Mutex::new(Vec::new()),
        })
        .expect("no other global subscriber");
    });
}

/// What was seen whose fields mention `needle`.
fn seen_with(needle: &str) -> Vec<Seen> {
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|s| s.fields.contains(needle))
        .cloned()
        .collect()
}

struct TracedService;
impl Service for TracedService {
    type Running = ();
    type Error = String;
    fn start(&self) -> Result<(), String> {
        tracing::info!(marker = "TracedService-inside-start", "binding");
        Ok(())
    }
    fn stop(&self, _: ()) -> Result<(), String> {
        Err("refused to stop".into())
    }
}

#[test]
fn transitions_refusals_and_operation_spans_are_traced() {
    collect();
    let service = Lifecycle::new(TracedService);
    service.start().unwrap();
    assert!(service.start().is_err()); // refused: running
    assert!(service.stop().is_err()); // the service's stop fails: Failed

    let name = "TracedService";
    let transitions: Vec<(Level, String)> = seen_with(name)
        .into_iter()
        .filter(|s| s.kind == "event" && s.fields.contains("message=transition"))
        .map(|s| (s.level, s.fields))
        .collect();
    let expected = [
        (Level::INFO, "seq=1 from=stopped to=starting"),
        (Level::INFO, "seq=2 from=starting to=running"),
        (Level::INFO, "seq=3 from=running to=stopping"),
        (
            Level::WARN,
            "seq=4 from=stopping to=failed (stop failed: refused to stop)",
        ),
    ];
    assert_eq!(transitions.len(), expected.len(), "{transitions:#?}");
    for ((level, fields), (want_level, want)) in transitions.iter().zip(expected) {
        assert_eq!(*level, want_level, "{fields}");
        assert!(fields.contains(want), "{fields} should contain {want}");
    }

    let refused = seen_with("message=claim refused");
    assert!(
        refused.iter().any(|s| s.level == Level::DEBUG
            && s.fields.contains(name)
            && s.fields.contains("op=start found=running")),
        "{refused:#?}"
    );

    // The span around Service::start, and the service's own event inside it.
    let spans: Vec<Seen> = seen_with(name)
        .into_iter()
        .filter(|s| s.kind == "span")
        .collect();
    assert!(spans
        .iter()
        .any(|s| s.name == "lifecycle.start" && s.level == Level::INFO));
    assert!(spans.iter().any(|s| s.name == "lifecycle.stop"));
    let inner = seen_with("TracedService-inside-start");
    assert_eq!(inner.len(), 1);
    assert_eq!(inner[0].inside, ["lifecycle.start"], "{inner:#?}");
}

struct TracedJob(u32);

#[test]
fn command_handling_is_traced_in_a_span_per_attempt() {
    collect();
    let queue = CommandQueue::builder()
        .max_attempts(2)
        .handler(|tx, job: &TracedJob| {
            tracing::debug!(marker = "TracedJob-handler", "handling");
            if job.0 == 0 {
                return tx.abort(HandlerError::new("zero"));
            }
            Ok(())
        })
        .build();
    queue.enqueue(TracedJob(1)).unwrap();
    queue.enqueue(TracedJob(0)).unwrap();
    queue.processor().start().unwrap();
    assert!(queue.wait_idle(Duration::from_secs(10)));
    queue.processor().stop().unwrap();

    let spans: Vec<Seen> = seen_with("TracedJob")
        .into_iter()
        .filter(|s| s.kind == "span" && s.name == "command")
        .collect();
    // One span per attempt: the good job once, the bad one twice.
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert!(spans.iter().all(|s| s.level == Level::DEBUG));
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.fields.contains("attempt=2"))
            .count(),
        1
    );

    let outcomes: Vec<Seen> = SEEN
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.kind == "event" && s.inside == ["command"])
        .filter(|s| s.thread.as_deref() == Some("mvstm-command-processor"))
        .filter(|s| !s.fields.contains("TracedJob-handler"))
        .cloned()
        .collect();
    let messages: Vec<(Level, &str)> = outcomes
        .iter()
        .map(|s| {
            let m = s.fields.split("message=").nth(1).unwrap_or_default();
            (
                s.level,
                m.split(" error=").next().unwrap_or_default().trim(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            (Level::DEBUG, "processed"),
            (Level::DEBUG, "failed; queued again"),
            (Level::WARN, "failed; dead-lettered"),
        ],
        "{outcomes:#?}"
    );
    assert!(outcomes[2].fields.contains("error=zero"), "{outcomes:#?}");
    // The handler's own events are inside the command span.
    let handler = seen_with("TracedJob-handler");
    assert!(!handler.is_empty() && handler.iter().all(|s| s.inside == ["command"]));
}

#[derive(Clone)]
struct AwaitedJob(u32);

/// The async processor's attempts get the same span, entered at each poll of the attempt: the
/// handler's events after an await and the outcome events are inside it.
#[cfg(feature = "async")]
#[test]
fn async_command_handling_is_traced_in_a_span_per_attempt() {
    const THREAD: &str = "async-processor-under-trace";
    collect();
    let queue = CommandQueue::builder()
        .max_attempts(2)
        .handler_async(|job: AwaitedJob| async move {
            // Yield once (waking itself): the span is left and entered again.
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if std::mem::replace(&mut yielded, true) {
                    return std::task::Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            })
            .await;
            tracing::debug!(marker = "AwaitedJob-handler", "handling");
            match job.0 {
                0 => Err(HandlerError::new("zero")),
                _ => Ok(()),
            }
        })
        .spawner(|task| {
            std::thread::Builder::new()
                .name(THREAD.into())
                .spawn(move || futures::executor::block_on(task))
                .unwrap();
        })
        .build();
    queue.enqueue(AwaitedJob(1)).unwrap();
    queue.enqueue(AwaitedJob(0)).unwrap();
    futures::executor::block_on(async {
        queue.async_processor().start().await.unwrap();
        assert!(queue.wait_idle_async(Duration::from_secs(10)).await);
        queue.async_processor().stop().await.unwrap();
    });

    let spans: Vec<Seen> = seen_with("AwaitedJob")
        .into_iter()
        .filter(|s| s.kind == "span" && s.name == "command")
        .collect();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let handler = seen_with("AwaitedJob-handler");
    assert_eq!(handler.len(), 3);
    assert!(
        handler.iter().all(|s| s.inside == ["command"]),
        "{handler:#?}"
    );
    let outcomes: Vec<String> = SEEN
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.kind == "event" && s.thread.as_deref() == Some(THREAD))
        .filter(|s| !s.fields.contains("AwaitedJob-handler"))
        .map(|s| {
            assert_eq!(s.inside, ["command"], "{s:?}");
            let m = s.fields.split("message=").nth(1).unwrap_or_default();
            m.split(" error=")
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(
        outcomes,
        ["processed", "failed; queued again", "failed; dead-lettered"]
    );
}
