//! `stella-ai`: Advisory AI assistant on port 8090, off by default.
//!
//! With `STELLA_AI_ENDPOINT` set, answers questions about an advisory linkset through an
//! OpenAI-compatible API (`stella_core::ai`); without it, every question is answered 503.

use stella_core::ai;

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("ai", 8090)
        .setting(ai::ENDPOINT)
        .setting(ai::API_KEY)
        .setting(ai::MODEL)
        .setting(ai::MAX_TOKENS)
        .setting(ai::MAX_PROMPT)
        .routes(|ctx| stella_core::worker_routes::ai(stella_core::Core::new(ctx), ai::Assistant::new(ctx)))
        .main()
}
