//! The quickstart seed: the admin account and tenant, and the demonstration data of
//! `services/core/seed/` (see its README), loaded through the same paths as real data.
//!
//! Every step is idempotent: documents are ingested by content (the same bytes are stored
//! once), the admin keeps its first password, SBOMs are imported by content.

use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tracing::info;

use crate::aggregation::{self, Kind, Outcome};
use crate::authority::{self, Caller};
use crate::{Error, scans};

/// The tenant the quickstart creates.
pub const TENANT: &str = "default";
/// The administrator the quickstart creates.
pub const ADMIN: &str = "admin";

/// `(kind, source, locator, bytes)` of every seeded source document.
pub const DOCUMENTS: &[(Kind, &str, &str, &[u8])] = &[
    (
        Kind::Advisory,
        "seed-osv-a",
        "GHSA-jfh8-c2jp-5v3q.json",
        include_bytes!("../seed/osv-a/GHSA-jfh8-c2jp-5v3q.json"),
    ),
    (
        Kind::Advisory,
        "seed-osv-a",
        "GHSA-wcg3-cvx6-7396.json",
        include_bytes!("../seed/osv-a/GHSA-wcg3-cvx6-7396.json"),
    ),
    (
        Kind::Advisory,
        "seed-osv-a",
        "GHSA-35jh-r3h4-6jhm.json",
        include_bytes!("../seed/osv-a/GHSA-35jh-r3h4-6jhm.json"),
    ),
    (Kind::Advisory, "seed-osv-b", "RUSTSEC-2020-0071.json", include_bytes!("../seed/osv-b/RUSTSEC-2020-0071.json")),
    (Kind::Vex, "seed-openvex", "demo-vex.json", include_bytes!("../seed/openvex/demo-vex.json")),
];

/// `(scan name, bytes)` of every seeded SBOM.
pub const SBOMS: &[(&str, &[u8])] = &[
    ("demo-payments", include_bytes!("../seed/sboms/demo-payments.spdx.json")),
    ("demo-web", include_bytes!("../seed/sboms/demo-web.cdx.json")),
];

/// The console's and the CLI's sample scan (`stella import`): not seeded, so that importing it
/// in the Welcome wizard creates a scan and shows its progress.
pub const SAMPLE_SBOM: (&str, &[u8]) = ("sample-checkout", include_bytes!("../seed/sboms/sample-checkout.cdx.json"));

/// `(name, bytes)` of every seeded task pack.
pub const PACKS: &[(&str, &[u8])] = &[
    ("stack-health", include_bytes!("../seed/packs/stack-health.json")),
    ("export-to-production", include_bytes!("../seed/packs/export-to-production.json")),
];

/// Creates the tenant and its administrator (when a password is given), and in quickstart mode
/// the demonstration data. `reset_admin`: an existing admin gets `admin_password` too (a
/// deliberate rotation), and its sessions end.
pub async fn run(db: &PgPool, admin_password: Option<&str>, reset_admin: bool, quickstart: bool) -> Result<(), Error> {
    if reset_admin && admin_password.is_none() {
        return Err(Error::bad("STELLA_ADMIN_PASSWORD_RESET", "needs the new password in STELLA_ADMIN_PASSWORD_FILE"));
    }
    let admin_created = match admin_password {
        Some(p) => {
            let created = authority::ensure_admin(db, TENANT, ADMIN, p).await?;
            if reset_admin && !created {
                let ended = authority::reset_password(db, TENANT, ADMIN, p).await?;
                info!(tenant = TENANT, user = ADMIN, sessions_ended = ended, "admin password reset on purpose");
            }
            created
        }
        None => {
            sqlx::query("INSERT INTO stella.tenants (slug, display_name) VALUES ($1, 'Default tenant') ON CONFLICT (slug) DO NOTHING")
                .bind(TENANT)
                .execute(db)
                .await?;
            false
        }
    };
    info!(tenant = TENANT, admin_created, "tenant ready");
    if !quickstart {
        info!("not in quickstart mode: no demonstration data");
        return Ok(());
    }
    let mut stored = 0;
    for (kind, source, locator, bytes) in DOCUMENTS {
        match aggregation::ingest(db, *kind, source, locator, bytes).await? {
            Outcome::Stored { .. } => stored += 1,
            Outcome::Unchanged { .. } => {}
            Outcome::Rejected { problem, .. } => {
                return Err(Error::Internal(format!("seed document {locator}: {problem}")));
            }
        }
    }
    let admin = admin_caller(db).await?;
    let mut imported = 0;
    for (name, bytes) in SBOMS {
        if scans::import(db, &admin, Some(name), bytes).await?.0 {
            imported += 1;
        }
    }
    let mut packs = 0;
    for (_, bytes) in PACKS {
        if crate::taskrunner::register(db, &admin, bytes).await?.0 {
            packs += 1;
        }
    }
    info!(documents_stored = stored, scans_imported = imported, packs_registered = packs, "quickstart seed loaded");
    Ok(())
}

/// The seeded admin as a caller, to import the demo SBOMs under its name.
async fn admin_caller(db: &PgPool) -> Result<Caller, Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT n.id, u.id FROM stella.users u JOIN stella.tenants n ON n.id = u.tenant_id WHERE n.slug = $1 AND u.username = $2",
    )
    .bind(TENANT)
    .bind(ADMIN)
    .fetch_optional(db)
    .await?;
    let (tenant_id, user_id) = row.ok_or_else(|| {
        Error::bad(
            "quickstart seed",
            "needs the admin account: set STELLA_ADMIN_PASSWORD_FILE (or STELLA_ADMIN_PASSWORD)",
        )
    })?;
    Ok(Caller {
        tenant_id,
        tenant: TENANT.into(),
        username: ADMIN.into(),
        user_id,
        role: "admin".into(),
        token_name: "seed".into(),
    })
}
