//! `stella-ledger`: Findings Ledger worker.
//!
//! Serves the operational contract of `stella-runtime` on port 8087.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("ledger", 8087).main()
}
