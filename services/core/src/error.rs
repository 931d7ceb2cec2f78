//! The one error type of the core, and how each variant answers over HTTP.
//!
//! Bad input is a 4xx whose message names the document and the problem; database failures are
//! logged in full and answered with a generic message, so no SQL or connection detail leaks: a
//! 503 naming the database when it cannot be reached (the client should retry, and a load
//! balancer or an operator sees an outage, not a bug), a 500 for anything else.

use stella_runtime::axum::Json;
use stella_runtime::axum::http::StatusCode;
use stella_runtime::axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or document is malformed: `what` names it, `problem` says what is wrong.
    #[error("{what}: {problem}")]
    BadInput { what: String, problem: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The request is larger than this service will take.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// It existed and was deleted on purpose (retention).
    #[error("{0}")]
    Gone(String),
    /// A rate limit: the message says what the limit is and when to retry.
    #[error("{0}")]
    TooMany(String),
    /// Refused for a while (login throttling): `Retry-After` is `retry_after` seconds.
    #[error("{message}")]
    Throttled { message: String, retry_after: u64 },
    #[error("database: {0}")]
    Database(stella_runtime::sqlx::Error),
    /// The database cannot be reached (down, restarting, refusing connections, no connection
    /// free in time): 503 with `"dependency": "database"`, never a 500.
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(stella_runtime::sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl From<stella_runtime::sqlx::Error> for Error {
    /// Text PostgreSQL cannot store (a NUL character, invalid encoding) is the input's fault: a
    /// 422, not a 500.
    fn from(e: stella_runtime::sqlx::Error) -> Error {
        let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
        match code.as_deref() {
            Some("22021" | "22P05") => {
                Error::bad("input", "contains a character that cannot be stored (a NUL character?)")
            }
            _ if unreachable(&e) => Error::DatabaseUnavailable(e),
            _ => Error::Database(e),
        }
    }
}

/// Whether `e` says PostgreSQL cannot be reached, as opposed to a query that failed: the
/// connection itself failed (I/O, TLS, the pool's wait ran out or it was closed), or the server
/// refused or dropped the session (SQLSTATE class 08 connection exception; 57P01-57P03 shutting
/// down or starting up; 53300 too many connections).
pub fn unreachable(e: &stella_runtime::sqlx::Error) -> bool {
    use stella_runtime::sqlx::Error as E;
    match e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        E::Database(d) => {
            d.code().is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300"))
        }
        _ => false,
    }
}

/// The message every unreachable-database answer carries (the console's page shows it too).
pub const DATABASE_UNAVAILABLE: &str = "the database (PostgreSQL) is unavailable; this service answers again as soon as it is back (see /health/readiness)";

impl Error {
    pub fn bad(what: impl Into<String>, problem: impl Into<String>) -> Error {
        Error::BadInput { what: what.into(), problem: problem.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadInput { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::TooMany(_) | Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Gone(_) => StatusCode::GONE,
            Error::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::BadInput { .. } => "bad_input",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::TooLarge(_) => "too_large",
            Error::Unavailable(_) | Error::DatabaseUnavailable(_) => "unavailable",
            Error::TooMany(_) | Error::Throttled { .. } => "too_many_requests",
            Error::Gone(_) => "gone",
            Error::Database(_) | Error::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Error::Database(e) => {
                stella_runtime::tracing::error!(error = %e, "database error");
                "the database failed to answer; see the service log".to_string()
            }
            Error::DatabaseUnavailable(e) => {
                stella_runtime::tracing::warn!(error = %e, "the database is unavailable");
                DATABASE_UNAVAILABLE.to_string()
            }
            Error::Internal(e) => {
                stella_runtime::tracing::error!(error = %e, "internal error");
                "internal error; see the service log".to_string()
            }
            other => other.to_string(),
        };
        let mut body = serde_json::json!({"error": self.code(), "message": message});
        if let Error::DatabaseUnavailable(_) = self {
            body["dependency"] = "database".into();
        }
        let mut response = (status, Json(body)).into_response();
        if let Error::DatabaseUnavailable(_) = self {
            response.headers_mut().insert("retry-after", 5.into());
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let seconds = match &self {
                Error::Throttled { retry_after, .. } => *retry_after,
                _ => 30,
            };
            response.headers_mut().insert("retry-after", seconds.into());
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert("www-authenticate", "Bearer realm=\"stella\"".parse().expect("static header"));
        }
        response
    }
}
