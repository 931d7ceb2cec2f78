//! `stella-ledger`: Findings Ledger on port 8087.
//!
//! Serves the tenant's ledger events and verifies the whole hash chain (`stella_core::ledger`);
//! the services that record events append to it in their own transactions.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("ledger", 8087)
        .routes(|ctx| stella_core::routes::ledger(stella_core::Core::new(ctx)))
        .main()
}
