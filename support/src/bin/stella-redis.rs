//! Entrypoint of `stella-redis`: configures Redis from the environment, then becomes the server.
fn main() {
    stella_support::run(stella_support::redis::main);
}
