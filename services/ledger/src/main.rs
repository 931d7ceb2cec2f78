//! `stella-ledger`: Findings Ledger on port 8087.
//!
//! Serves the tenant's ledger chain and verifies it (`stella_core::ledger`); the services that
//! record events append to it in their own transactions. With a key, it signs each tenant's head
//! into the object store (`stella_core::checkpoint`), and verification checks the chain against it.

use stella_core::checkpoint;

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("ledger", 8087)
        .checked_setting(checkpoint::KEY, |raw| checkpoint::parse_key(raw).map(|_| ()))
        .setting(checkpoint::INTERVAL)
        .routes(|ctx| {
            let core = stella_core::Core::new(ctx);
            checkpoint::spawn(ctx, core.checkpoints.clone());
            stella_core::routes::ledger(core)
        })
        .main()
}
