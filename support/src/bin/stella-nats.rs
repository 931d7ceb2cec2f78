//! Entrypoint of `stella-nats`: NATS with JetStream on the data volume.
fn main() {
    stella_support::run(stella_support::nats::main);
}
