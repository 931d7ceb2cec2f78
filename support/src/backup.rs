//! `stella-postgres backup DIR`: one consistent dump of the StellaOps database into `DIR`, what
//! the Helm chart's backup CronJob runs (`docs/install/helm-prod.md`, "Backup and restore").
//!
//! The connection is a `postgres://` URL read from the file `STELLA_BACKUP_DATABASE_URL_FILE`
//! (the chart mounts the migrator's Secret: the owner role can read every table). It reaches
//! `pg_dump` as libpq's `PG*` variables, so no password is ever on a command line. The dump
//! (`pg_dump -Fc`: one snapshot, compressed, what `pg_restore` reads) is written under a
//! temporary name, read back with `pg_restore --list`, and only then renamed to
//! `stella-<UTC time>.pgdump`; the oldest dumps beyond `STELLA_BACKUP_KEEP` (default 7) are
//! removed after a new one is in place, so a failed run never costs an old dump.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Failure;
use crate::postgres::BIN_DIR;

pub fn backup(args: &[String]) -> Result<(), Failure> {
    let [dir] = args else {
        return Err(Failure::config("usage: stella-postgres backup DIR (the directory the dumps are kept in)"));
    };
    let dir = Path::new(dir);
    let keep: usize = crate::var("STELLA_BACKUP_KEEP", "7")
        .parse()
        .ok()
        .filter(|k| *k >= 1)
        .ok_or_else(|| Failure::config("STELLA_BACKUP_KEEP must be a whole number of dumps, 1 or more"))?;
    let env = connection()?;
    if !dir.is_dir() {
        return Err(Failure::config(format!("{}: no such directory (mount the backup volume there)", dir.display())));
    }
    let name = format!("stella-{}.pgdump", utc_stamp(std::time::SystemTime::now()));
    let partial = dir.join(format!(".{name}.partial"));
    let bin = Path::new(BIN_DIR);
    crate::log(
        "INFO",
        &format!(
            "dumping database {} on {} into {}",
            env_value(&env, "PGDATABASE"),
            env_value(&env, "PGHOST"),
            dir.join(&name).display()
        ),
    );
    let dumped = Command::new(bin.join("pg_dump"))
        .args(["--format=custom", "--no-password", "--file"])
        .arg(&partial)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .map_err(|e| Failure::other(format!("starting {}: {e}", bin.join("pg_dump").display())))?;
    if !dumped.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(Failure::other(format!("pg_dump failed ({dumped}); its error is above; no dump was kept")));
    }
    // Read it back: a dump pg_restore cannot list is not a backup.
    let listed = Command::new(bin.join("pg_restore"))
        .arg("--list")
        .arg(&partial)
        .output()
        .map_err(|e| Failure::other(format!("starting pg_restore: {e}")))?;
    if !listed.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(Failure::other(format!(
            "the new dump does not read back: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        )));
    }
    let path = dir.join(&name);
    std::fs::rename(&partial, &path)
        .map_err(|e| Failure::other(format!("renaming {} to {}: {e}", partial.display(), path.display())))?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let entries =
        String::from_utf8_lossy(&listed.stdout).lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).count();
    crate::log("INFO", &format!("wrote {} ({size} bytes, {entries} entries)", path.display()));
    for old in prune(dir, keep)? {
        crate::log("INFO", &format!("removed {} (keeping the newest {keep})", old.display()));
    }
    Ok(())
}

/// libpq's variables from the URL in `STELLA_BACKUP_DATABASE_URL_FILE`.
fn connection() -> Result<Vec<(String, String)>, Failure> {
    let Some(text) = crate::secret("STELLA_BACKUP_DATABASE_URL")? else {
        return Err(Failure::config(
            "STELLA_BACKUP_DATABASE_URL_FILE is not set: give the file holding postgres://user:password@host:port/database",
        ));
    };
    let bad = |why: &str| {
        Failure::config(format!(
            "STELLA_BACKUP_DATABASE_URL_FILE: {why}; expected postgres://user:password@host:port/database"
        ))
    };
    let url = url::Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(bad(&format!("the scheme is {:?}", url.scheme())));
    }
    // Percent-decoding only: in a URL's user and password `+` is a plus, not a space.
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?;
    let database = url.path().trim_start_matches('/');
    if database.is_empty() {
        return Err(bad("no database name"));
    }
    let mut env = vec![
        ("PGHOST".to_string(), host.trim_start_matches('[').trim_end_matches(']').to_string()),
        ("PGPORT".to_string(), url.port().unwrap_or(5432).to_string()),
        ("PGDATABASE".to_string(), decode(database)),
        ("PGUSER".to_string(), decode(url.username())),
    ];
    if let Some(p) = url.password() {
        env.push(("PGPASSWORD".to_string(), decode(p)));
    }
    for (k, v) in url.query_pairs() {
        if k == "sslmode" {
            env.push(("PGSSLMODE".to_string(), v.into_owned()));
        }
    }
    Ok(env)
}

fn env_value<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
}

/// Removes the oldest `stella-*.pgdump` beyond the newest `keep` (names sort by time).
fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, Failure> {
    let mut dumps: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Failure::other(format!("reading {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("stella-") && n.ends_with(".pgdump"))
        })
        .collect();
    dumps.sort();
    let old = dumps.len().saturating_sub(keep);
    let removed: Vec<PathBuf> = dumps.into_iter().take(old).collect();
    for p in &removed {
        std::fs::remove_file(p).map_err(|e| Failure::other(format!("removing {}: {e}", p.display())))?;
    }
    Ok(removed)
}

/// `YYYYMMDDTHHMMSSZ` in UTC (days to a civil date as in Howard Hinnant's algorithm; no time
/// crate for one format).
fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_civil_dates() {
        let at = |s: u64| utc_stamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_796_556_245), "20261206T112405Z");
    }

    #[test]
    fn only_the_newest_dumps_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "stella-20260101T000000Z.pgdump",
            "stella-20260102T000000Z.pgdump",
            "stella-20260103T000000Z.pgdump",
            "other.txt",
        ] {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        let removed = prune(dir.path(), 2).unwrap();
        assert_eq!(removed, vec![dir.path().join("stella-20260101T000000Z.pgdump")]);
        assert!(dir.path().join("other.txt").exists());
    }
}
