//! `stella-notify`: Notifications Studio worker.
//!
//! Serves the operational contract of `stella-runtime` on port 8089.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("notify", 8089).main()
}
