//! `stella-conseiller`: Advisory aggregator (Feedser), aggregation only.
//!
//! Serves the operational contract of `stella-runtime` on port 8084.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("conseiller", 8084).aggregation_only().main()
}
