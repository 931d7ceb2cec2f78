//! `stella-ai`: Advisory AI Assistant, off by default.
//!
//! Serves the operational contract of `stella-runtime` on port 8090.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("ai", 8090).main()
}
