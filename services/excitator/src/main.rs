//! `stella-excitator`: VEX aggregator (Vexer), aggregation only.
//!
//! Serves the operational contract of `stella-runtime` on port 8085.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("excitator", 8085).aggregation_only().main()
}
