//! The admin protocol end to end over real sockets: runs `examples/services.rs`, which asserts
//! every reply (bad input included) against what its TCP services really did.

#[path = "../examples/services.rs"]
mod services;

#[test]
fn the_services_example_runs_and_its_replies_match_reality() {
    services::main().expect("the services example");
}
