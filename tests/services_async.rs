//! The async admin protocol end to end over real sockets: runs `examples/services_async.rs`
//! (tokio), which asserts every reply (bad input included) against what its TCP services
//! really did, with 32 admin clients issuing conflicting commands at once.

#[path = "../examples/services_async.rs"]
mod services_async;

#[test]
fn the_async_services_example_runs_and_its_replies_match_reality() {
    services_async::main().expect("the async services example");
}
