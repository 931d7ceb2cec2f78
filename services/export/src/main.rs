//! `stella-export`: Export Center worker.
//!
//! Serves the operational contract of `stella-runtime` on port 8088.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("export", 8088).main()
}
