//! The `serde` feature: `State`, `Failure`, `Op` and `Transition` survive a JSON round trip, as a
//! status endpoint would send them, and the JSON has the documented shape.
#![cfg(feature = "serde")]

use mvstm_lifecycle::{Failure, Lifecycle, Op, Service, State, Transition};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn round_trip<T>(value: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let json = serde_json::to_string(value).expect("serializes");
    serde_json::from_str(&json).expect("deserializes what it serialized")
}

#[test]
fn every_state_round_trips() {
    let failed = State::Failed(Failure {
        during: Op::Stop,
        message: "still draining \"jobs\"".into(),
        panicked: true,
    });
    for state in [
        State::Stopped,
        State::Starting,
        State::Running,
        State::Stopping,
        failed,
    ] {
        assert_eq!(round_trip(&state), state);
    }
    for op in [Op::Start, Op::Stop, Op::Restart] {
        assert_eq!(round_trip(&op), op);
    }
}

#[test]
fn the_json_has_the_documented_shape() {
    assert_eq!(
        serde_json::to_string(&State::Running).unwrap(),
        "\"Running\""
    );
    let failed = State::Failed(Failure {
        during: Op::Start,
        message: "port in use".into(),
        panicked: false,
    });
    let value = serde_json::to_value(&failed).unwrap();
    assert_eq!(value["Failed"]["during"], "Start");
    assert_eq!(value["Failed"]["message"], "port in use");
    assert_eq!(value["Failed"]["panicked"], false);
    let t = Transition {
        seq: 7,
        from: State::Stopped,
        to: State::Starting,
        at: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
    };
    let value = serde_json::to_value(&t).unwrap();
    assert_eq!(value["seq"], 7);
    assert_eq!(value["at"]["secs_since_epoch"], 1_700_000_000u64);
    assert_eq!(value["at"]["nanos_since_epoch"], 5);
}

#[test]
fn a_real_history_round_trips() {
    struct Flaky;
    impl Service for Flaky {
        type Running = ();
        type Error = String;
        fn start(&self) -> Result<(), String> {
            Ok(())
        }
        fn stop(&self, _: ()) -> Result<(), String> {
            Err("refused to stop".into())
        }
    }
    let service = Lifecycle::new(Flaky);
    let before = SystemTime::now();
    service.start().unwrap();
    service.stop().unwrap_err();
    let history = service.history();
    assert_eq!(history.len(), 4); // starting, running, stopping, failed
    let back: Vec<Transition> = round_trip(&history);
    assert_eq!(back, history);
    assert!(matches!(&back[3].to, State::Failed(f) if &*f.message == "refused to stop"));
    assert!(back[0].at >= before, "the time survived the trip");
}
