//! Entrypoint of `stella-postgres`: initialises an empty data directory, then becomes the server.
fn main() {
    stella_support::run(stella_support::postgres::main);
}
