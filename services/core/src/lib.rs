//! The StellaOps core: the domain logic behind the service images, on PostgreSQL.
//!
//! Each service binary wires one part of it into the shared runtime:
//! - [`authority`] (in `stella-api`): tenants, users, API tokens and the [`authority::Caller`]
//!   every protected route extracts;
//! - [`aggregation`] (in `stella-conseiller` and `stella-excitator`): source documents stored
//!   exactly as received and grouped into linksets that point at each original. There is no
//!   merge: nothing here writes a record that combines two documents;
//! - [`scans`] (in `stella-api`): SBOM import, matching against advisories, VEX application,
//!   findings and the Vulnerability Explorer query;
//! - [`policy`] (in `stella-policy`): versioned policies and the verdict worker;
//! - [`ledger`] (in `stella-ledger` and every writer): the append-only, hash-chained event log;
//! - [`seed`] (in `stella-migrator --seed`): the quickstart data, loaded through the same paths.
//!
//! The parsers ([`osv`], [`openvex`], [`sbom`]) and the version logic ([`version`], [`purl`])
//! are pure and unit-tested; everything that touches the database is tested against a real
//! PostgreSQL in `tests/tests/core.rs`.

pub mod aggregation;
pub mod ai;
pub mod authority;
pub mod budget;
pub mod checkpoint;
pub mod egress;
pub mod export_formats;
pub mod exports;
pub mod http;
pub mod jobs;
pub mod ledger;
pub mod notify;
pub mod openvex;
pub mod osv;
pub mod packs;
pub mod policy;
pub mod purl;
pub mod routes;
pub mod sbom;
pub mod scans;
pub mod schedules;
pub mod seed;
pub mod sources;
pub mod steps;
pub mod taskrunner;
pub mod throttle;
pub mod urls;
pub mod version;
pub mod wake;
pub mod worker_routes;

pub mod error;

pub use error::Error;
use stella_runtime::sqlx::PgPool;

/// What every core route handler shares: the database pool, when configured.
#[derive(Clone)]
pub struct Core {
    db: Option<PgPool>,
    /// Attempts of the jobs this service enqueues ([`jobs::ATTEMPTS`]).
    pub(crate) attempts: i32,
    /// Session and token lifetimes, login limits ([`authority::SETTINGS`]).
    pub authority: authority::Policy,
    /// The memory budget of SBOM imports ([`budget::IMPORT_MEMORY_BUDGET`]).
    pub imports: budget::ImportBudget,
    /// Signed ledger checkpoints, when this service has a key ([`checkpoint::KEY`]).
    pub checkpoints: Option<std::sync::Arc<checkpoint::Checkpoints>>,
}

impl Core {
    pub fn new(ctx: &stella_runtime::Context) -> Core {
        let attempts = ctx.config.int(jobs::ATTEMPTS.name).unwrap_or(3).clamp(1, 100) as i32;
        Core {
            db: ctx.db.clone(),
            attempts,
            authority: authority::Policy::from_config(&ctx.config),
            imports: budget::ImportBudget::from_config(&ctx.config),
            checkpoints: checkpoint::Checkpoints::from_config(&ctx.config),
        }
    }

    pub fn from_pool(db: PgPool) -> Core {
        Core {
            db: Some(db),
            attempts: 3,
            authority: authority::Policy::default(),
            imports: budget::ImportBudget::new(192),
            checkpoints: None,
        }
    }

    /// Attempts of the jobs this service enqueues (`STELLA_JOBS_ATTEMPTS`).
    pub fn attempts(&self) -> i32 {
        self.attempts
    }

    /// The pool, or 503 naming the missing setting: the contract routes of a service run
    /// without a database, its domain routes cannot.
    pub fn db(&self) -> Result<&PgPool, Error> {
        self.db.as_ref().ok_or_else(|| {
            Error::Unavailable(
                "this service needs PostgreSQL: set STELLA_DATABASE_URL or STELLA_DATABASE_URL_FILE".into(),
            )
        })
    }
}

/// The SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
