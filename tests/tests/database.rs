//! The services against a real PostgreSQL: the migrator is idempotent, and readiness follows
//! the database as it stops and comes back.

use std::time::Duration;

use stella_e2e::pg::Postgres;
use stella_e2e::{BinPath, Proc, bin_path, free_port, get, services, wait_status};

fn migrate(pg: &Postgres, args: &[&str]) -> (i32, String) {
    pg.migrate(args, &[])
}

#[test]
fn migrator_applies_once_and_the_second_run_is_a_no_op() {
    let pg = Postgres::start();
    let (code, log) = migrate(&pg, &[]);
    assert_eq!(code, 0, "first run: {log}");
    assert!(!log.contains("\"applied\":0"), "first run applied nothing: {log}");
    let applied_first = pg.query("SELECT count(*) FROM stella._sqlx_migrations WHERE success");
    assert!(applied_first.parse::<u32>().unwrap() >= 1);
    let schema = pg.query("SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'stella'");

    let (code, log) = migrate(&pg, &[]);
    assert_eq!(code, 0, "second run: {log}");
    assert!(log.contains("\"applied\":0"), "second run applied something: {log}");
    assert_eq!(pg.query("SELECT count(*) FROM stella._sqlx_migrations WHERE success"), applied_first);
    assert_eq!(
        pg.query("SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'stella'"),
        schema
    );

    for _ in 0..2 {
        let (code, log) = migrate(&pg, &["--seed"]);
        assert_eq!(code, 0, "seed: {log}");
    }
    assert_eq!(pg.query("SELECT count(*) FROM stella.tenants WHERE slug = 'default'"), "1");
    assert!(!log.contains(&pg.password), "the migrator logged the password");
}

#[test]
fn migrator_refuses_to_run_without_a_database_and_fails_when_it_stays_away() {
    let mut proc = Proc::spawn(&bin_path("stella-migrator"), &[], &[]);
    let status = proc.wait_for(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(78), "{}", proc.stderr());
    assert!(proc.stderr().contains("STELLA_DATABASE_URL is required"), "{}", proc.stderr());

    let port = free_port();
    let env = [
        ("STELLA_DATABASE_URL", format!("postgres://stella:pw@127.0.0.1:{port}/stella")),
        ("STELLA_MIGRATOR_WAIT", "1s".to_string()),
    ];
    let mut proc = Proc::spawn(&bin_path("stella-migrator"), &[], &env);
    let status = proc.wait_for(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(1), "{}", proc.stdout());
    assert!(proc.stdout().contains("did not answer within 1s"), "{}", proc.stdout());
}

/// Every service with a database: readiness is 503 naming `database` while PostgreSQL is down,
/// and 200 again when it is back, without restarting the service.
#[test]
fn readiness_follows_the_database() {
    let pg = Postgres::start();
    let servers: Vec<_> = services().into_iter().filter(|s| s.kind == "server").collect();
    let procs: Vec<_> = servers
        .iter()
        .map(|s| {
            let port = free_port();
            let env = [
                ("STELLA_PORT", port.to_string()),
                ("STELLA_LISTEN_ADDR", "127.0.0.1".to_string()),
                ("STELLA_DATABASE_URL", pg.url()),
                ("STELLA_READINESS_TIMEOUT", "1s".to_string()),
            ];
            (s.binary.clone(), format!("http://127.0.0.1:{port}/health/readiness"), Proc::spawn(&s.path(), &[], &env))
        })
        .collect();
    for (binary, url, _) in &procs {
        assert!(wait_status(url, 200, Duration::from_secs(15)).is_some(), "{binary} never ready");
    }
    pg.stop();
    for (binary, url, _) in &procs {
        let (status, body) = get(url).expect("answers while the database is down");
        assert_eq!(status, 503, "{binary} still ready without its database: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["failing"], serde_json::json!(["database"]), "{binary}: {body}");
        assert_eq!(body["checks"]["database"]["status"], "down");
    }
    pg.resume();
    for (binary, url, _) in &procs {
        assert!(
            wait_status(url, 200, Duration::from_secs(15)).is_some(),
            "{binary} not ready after the database returned"
        );
    }
}
