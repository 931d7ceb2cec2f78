//! `stella-policy`: Policy Engine on port 8086.
//!
//! Evaluates every scan under the newest policy version in a background worker and serves the
//! policies and verdicts (`stella_core::policy`).

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("policy", 8086)
        .setting(stella_core::policy::INTERVAL)
        .routes(|ctx| {
            // The route builder runs once, inside the runtime, before the server starts.
            stella_core::policy::spawn(ctx);
            stella_core::routes::policy(stella_core::Core::new(ctx))
        })
        .main()
}
