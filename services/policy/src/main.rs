//! `stella-policy`: Policy Engine.
//!
//! Serves the operational contract of `stella-runtime` on port 8086.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("policy", 8086).main()
}
