//! `stella-postgres`: on first start, initialises the data directory (`initdb` with a fixed
//! locale and encoding, the superuser's password from `POSTGRES_PASSWORD_FILE`, SCRAM for every
//! connection), then `exec`s `postgres`, which becomes PID 1 and handles SIGTERM itself.
//! `healthcheck` probes the server; `backup DIR` dumps a database (see [`crate::backup`]).
//!
//! Initialisation writes into a sibling directory and renames it into place, so an interrupted
//! first start is retried from scratch instead of leaving a half-made cluster.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Failure, connect, exchange, exec, log, port, run_step, secret, var};

/// Where Debian's `postgresql-15` puts the server programs.
pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The default data directory: a subdirectory of the volume, so the volume's own root (which
/// may hold `lost+found`) is never the cluster.
pub const DEFAULT_PGDATA: &str = "/var/lib/postgresql/data/pgdata";

pub fn main(args: &[String]) -> Result<(), Failure> {
    let user = var("POSTGRES_USER", "postgres");
    if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Failure::config(format!("POSTGRES_USER={user:?} is not accepted: use letters, digits and `_`")));
    }
    let port = port("PGPORT", 5432)?;
    match args.first().map(String::as_str) {
        Some("healthcheck") => return healthcheck(port, &user),
        Some("backup") => return crate::backup::backup(&args[1..]),
        _ => {}
    }
    let data = PathBuf::from(var("PGDATA", DEFAULT_PGDATA));
    if !data.join("PG_VERSION").exists() {
        init(Path::new(BIN_DIR), &data, &user)?;
    }
    let mut cmd = Command::new(Path::new(BIN_DIR).join("postgres"));
    cmd.arg("-D").arg(&data).arg("-c").arg(format!("port={port}")).args(args);
    Err(exec(&mut cmd))
}

/// Creates the cluster at `data` (see the module header).
pub fn init(bin: &Path, data: &Path, user: &str) -> Result<(), Failure> {
    let Some(password_file) = std::env::var_os("POSTGRES_PASSWORD_FILE") else {
        return Err(Failure::config(format!(
            "POSTGRES_PASSWORD_FILE is not set and {} holds no cluster yet: mount a file holding the \
             superuser's password and set POSTGRES_PASSWORD_FILE to its path",
            data.display()
        )));
    };
    secret("POSTGRES_PASSWORD")?; // validates the file: readable, not empty
    let staging = data.with_extension("init");
    if staging.exists() {
        log("WARN", &format!("removing {} left by an interrupted initialisation", staging.display()));
        std::fs::remove_dir_all(&staging)
            .map_err(|e| Failure::other(format!("removing {}: {e}", staging.display())))?;
    }
    log("INFO", &format!("initialising a new cluster in {}", data.display()));
    run_step(
        Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&staging)
            .arg("-U")
            .arg(user)
            .arg(format!("--pwfile={}", Path::new(&password_file).display()))
            .args(["--auth=scram-sha-256", "--locale=C", "--encoding=UTF8", "--no-instructions"])
            .stdout(Stdio::null()),
    )?;
    append(
        &staging.join("pg_hba.conf"),
        "\n# stella-postgres: every network client authenticates with SCRAM.\nhost all all all scram-sha-256\n",
    )?;
    // Listen on the container's network only: no Unix socket (the root file system is
    // read-only), no JIT (its LLVM libraries are not in the image).
    append(
        &staging.join("postgresql.conf"),
        "\n# stella-postgres\nlisten_addresses = '*'\nunix_socket_directories = ''\njit = off\n",
    )?;
    if let Ok(db) = std::env::var("POSTGRES_DB")
        && !db.is_empty()
        && db != "postgres"
    {
        create_database(bin, &staging, &db)?;
    }
    std::fs::rename(&staging, data)
        .map_err(|e| Failure::other(format!("moving {} to {}: {e}", staging.display(), data.display())))?;
    log("INFO", "cluster initialised");
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Failure::other(format!("writing {}: {e}", path.display())))
}

/// `CREATE DATABASE` through single-user mode, before the server ever listens.
fn create_database(bin: &Path, data: &Path, db: &str) -> Result<(), Failure> {
    if !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(Failure::config(format!("POSTGRES_DB={db:?} is not accepted: use letters, digits, `_` and `-`")));
    }
    let mut child = Command::new(bin.join("postgres"))
        .args(["--single", "-j", "-D"])
        .arg(data)
        .args(["-c", "jit=off", "postgres"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| Failure::other(format!("starting postgres --single: {e}")))?;
    let sql = format!("CREATE DATABASE \"{db}\";\n");
    child
        .stdin
        .take()
        .map(|mut s| s.write_all(sql.as_bytes()))
        .transpose()
        .map_err(|e| Failure::other(e.to_string()))?;
    let status = child.wait().map_err(|e| Failure::other(e.to_string()))?;
    if !status.success() {
        return Err(Failure::other(format!("creating database {db} failed ({status})")));
    }
    Ok(())
}

/// What the server says to a startup message, as `pg_isready` reads it: any answer but "the
/// database system is starting up / shutting down" (SQLSTATE 57P03) means it accepts connections.
pub fn healthcheck(port: u16, user: &str) -> Result<(), Failure> {
    let mut stream = connect(port)?;
    let reply = exchange(&mut stream, &startup_message(user), complete_message)?;
    match classify(&reply) {
        Ok(()) => Ok(()),
        Err(why) => Err(Failure::other(format!("postgres on port {port}: {why}"))),
    }
}

/// A protocol 3.0 StartupMessage for `user` and the `postgres` database.
pub fn startup_message(user: &str) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", "postgres")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend(body);
    msg
}

fn complete_message(reply: &[u8]) -> bool {
    reply.len() >= 5 && {
        let len = i32::from_be_bytes([reply[1], reply[2], reply[3], reply[4]]).max(4) as usize;
        reply.len() > len
    }
}

/// Reads the server's first message: `Ok` when it accepts connections.
pub fn classify(reply: &[u8]) -> Result<(), String> {
    match reply.first() {
        None => Err("closed the connection without answering".into()),
        Some(b'R') => Ok(()), // an authentication request: the server is up
        Some(b'E') => {
            let mut code = String::new();
            let mut message = String::new();
            for field in reply.get(5..).unwrap_or_default().split(|b| *b == 0) {
                match field.split_first() {
                    Some((b'C', v)) => code = String::from_utf8_lossy(v).into_owned(),
                    Some((b'M', v)) => message = String::from_utf8_lossy(v).into_owned(),
                    _ => {}
                }
            }
            if code == "57P03" { Err(format!("{message} ({code})")) } else { Ok(()) }
        }
        Some(other) => Err(format!("unexpected first message type {:?}", *other as char)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, message: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in [(b'S', "FATAL"), (b'C', code), (b'M', message)] {
            body.push(k);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = vec![b'E'];
        msg.extend(((body.len() + 4) as i32).to_be_bytes());
        msg.extend(body);
        msg
    }

    #[test]
    fn startup_message_is_length_prefixed_protocol_3() {
        let m = startup_message("postgres");
        assert_eq!(i32::from_be_bytes(m[0..4].try_into().unwrap()) as usize, m.len());
        assert_eq!(&m[4..8], &196608i32.to_be_bytes());
        assert!(m.ends_with(b"postgres\0\0"));
    }

    #[test]
    fn starting_up_is_unhealthy_and_other_answers_are_healthy() {
        assert!(classify(&error("57P03", "the database system is starting up")).is_err());
        assert!(classify(&error("28P01", "password authentication failed")).is_ok());
        assert!(classify(&[b'R', 0, 0, 0, 12, 0, 0, 0, 10]).is_ok());
        assert!(classify(&[]).is_err());
        assert!(complete_message(&error("57P03", "x")));
        assert!(!complete_message(&error("57P03", "x")[..6]));
    }
}
