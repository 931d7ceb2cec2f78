//! `stella-excitator`: VEX aggregator (Vexer) on port 8085, aggregation only.
//!
//! Polls the configured OpenVEX sources, stores every document as received and serves linksets
//! that link to the originals (`stella_core::aggregation`). There is no merge path.

fn main() -> std::process::ExitCode {
    stella_core::aggregation::service("excitator", 8085, stella_core::aggregation::Kind::Vex).main()
}
