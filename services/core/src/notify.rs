//! Notifications: an outbox written in the transaction that causes the event (a new critical
//! finding at import, a job that failed for good), and the stella-notify worker that delivers
//! it to the configured sinks in batches, retries with backoff and dead-letters what it gives
//! up on (status `dead`, with the last error, listed by the API).
//!
//! Sinks (`STELLA_NOTIFY_SINKS`, secret because webhook URLs carry tokens): `name=log` writes one
//! log line per notification; `name=webhook:URL` POSTs one JSON batch per window;
//! `name=smtp:smtp://relay?from=...&to=...` mails one message per batch (`lettre`). A delivery row
//! per notification and sink is the delivery state, so a sink that is down does not hold back
//! the others. Text comes from templates, `<event>.txt` in `STELLA_NOTIFY_TEMPLATES` when set
//! (a mounted directory), else the built-in ones; `{{key}}` is replaced by the payload's field.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stella_runtime::config::{Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tokio;
use stella_runtime::tracing::{info, warn};

use crate::Error;
use crate::http::{self, Redirects};
use crate::urls::origin;

pub const SINKS: Setting = s(
    "STELLA_NOTIFY_SINKS",
    SettingKind::Text,
    Fallback::Value("log=log"),
    "Comma-separated sinks: `name=log`, `name=webhook:URL` or `name=smtp:smtp://[user:pass@]relay[:port]?from=ADDR&to=ADDR;ADDR[&tls=required]` (or smtps://); every notification goes to every sink.",
)
.secret();

pub const WINDOW: Setting = s(
    "STELLA_NOTIFY_WINDOW",
    SettingKind::Duration,
    Fallback::Value("10s"),
    "Batching window: notifications due for a sink are sent together once per window.",
);

pub const ATTEMPTS: Setting = s(
    "STELLA_NOTIFY_ATTEMPTS",
    SettingKind::Count { min: 1, max: 100 },
    Fallback::Value("5"),
    "Delivery attempts per notification and sink before it is dead-lettered.",
);

pub const TEMPLATES: Setting = s(
    "STELLA_NOTIFY_TEMPLATES",
    SettingKind::Text,
    Fallback::None,
    "Directory of message templates, `finding.critical.txt` and `job.failed.txt`, with `{{field}}` placeholders.",
);

/// Events a notification may be about (the table's CHECK says the same).
pub const EVENTS: [&str; 2] = ["finding.critical", "job.failed"];

/// Records a notification in the caller's transaction.
pub async fn record(
    tx: &mut sqlx::PgConnection,
    tenant_id: Option<i64>,
    event: &str,
    payload: Value,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO stella.notifications (tenant_id, event, payload) VALUES ($1, $2, $3)")
        .bind(tenant_id)
        .bind(event)
        .bind(payload)
        .execute(tx)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    Log,
    Webhook(String),
    /// One mail per batch through an SMTP relay.
    Smtp(Smtp),
}

/// `smtp://[user:password@]host[:port]?from=ADDR&to=ADDR;ADDR[&tls=required]` (STARTTLS when
/// `tls=required`; plain otherwise, for a relay on the host or cluster) or `smtps://...`
/// (implicit TLS).
#[derive(Debug, Clone, PartialEq)]
pub struct Smtp {
    /// The relay URL as lettre reads it: our `from` and `to` parameters taken out.
    relay: String,
    from: String,
    to: Vec<String>,
}

fn parse_smtp(url: &str) -> Result<Smtp, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut from, mut to, mut kept) = (None, Vec::new(), Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("from", v)) => from = Some(v.to_string()),
            Some(("to", v)) => to.extend(v.split(';').filter(|a| !a.is_empty()).map(str::to_string)),
            _ => kept.push(pair),
        }
    }
    let from = from.ok_or("needs ?from=ADDRESS")?;
    if to.is_empty() {
        return Err("needs &to=ADDRESS (several separated by ;)".into());
    }
    for address in std::iter::once(&from).chain(&to) {
        address.parse::<lettre::message::Mailbox>().map_err(|e| format!("`{address}` is not a mail address: {e}"))?;
    }
    let relay = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    lettre::SmtpTransport::from_url(&relay).map_err(|e| format!("not an SMTP URL: {e}"))?;
    Ok(Smtp { relay, from, to })
}

/// Parses `STELLA_NOTIFY_SINKS`; the error names the entry (never the URL: it may hold a token).
pub fn parse_sinks(raw: &str) -> Result<Vec<(String, Sink)>, String> {
    let mut sinks = Vec::new();
    for (i, entry) in raw.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let Some((name, spec)) = entry.split_once('=') else {
            return Err(format!("entry {} is not `name=log` or `name=webhook:URL`", i + 1));
        };
        let sink = match spec.split_once(':') {
            _ if spec == "log" => Sink::Log,
            Some(("webhook", url)) if url.starts_with("http://") || url.starts_with("https://") => {
                Sink::Webhook(url.to_string())
            }
            Some(("smtp", url)) if url.starts_with("smtp://") || url.starts_with("smtps://") => {
                Sink::Smtp(parse_smtp(url).map_err(|e| format!("sink `{name}`: {e}"))?)
            }
            _ => return Err(format!("sink `{name}`: expected `log`, `webhook:http(s)://...` or `smtp:smtp(s)://...`")),
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || name.is_empty() {
            return Err(format!("sink name `{name}`: use letters, digits, - and _"));
        }
        if sinks.iter().any(|(n, _)| n == name) {
            return Err(format!("sink `{name}` is named twice"));
        }
        sinks.push((name.to_string(), sink));
    }
    Ok(sinks)
}

/// The message templates: built in, replaced file by file from the directory when given.
pub fn templates(dir: Option<&str>) -> Result<BTreeMap<String, String>, String> {
    let mut t = BTreeMap::from([
        (
            "finding.critical".to_string(),
            "Critical finding {{finding}}: {{linkset}} in {{purl}} (scan {{scan}}, status {{status}})".to_string(),
        ),
        ("job.failed".to_string(), "Job {{job}} ({{kind}}) failed after {{attempts}} attempts: {{reason}}".to_string()),
    ]);
    if let Some(dir) = dir {
        for event in EVENTS {
            let path = std::path::Path::new(dir).join(format!("{event}.txt"));
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    t.insert(event.to_string(), text.trim_end().to_string());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
    }
    Ok(t)
}

/// `{{key}}` replaced by the payload's field (strings without quotes); unknown keys stay.
pub fn render(template: &str, payload: &Value) -> String {
    let mut out = template.to_string();
    if let Some(map) = payload.as_object() {
        for (k, v) in map {
            let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            out = out.replace(&format!("{{{{{k}}}}}"), &text);
        }
    }
    out
}

struct Delivery {
    sinks: Vec<(String, Sink)>,
    templates: BTreeMap<String, String>,
    attempts: i32,
}

/// Starts the delivery worker (stella-notify). Invalid settings were refused at start-up.
pub fn spawn(ctx: &stella_runtime::Context) {
    let Some(db) = ctx.db.clone() else {
        warn!("STELLA_DATABASE_URL is not set: no notifications are delivered");
        return;
    };
    let sinks = parse_sinks(ctx.config.text(SINKS.name).unwrap_or("log=log")).unwrap_or_default();
    let templates = templates(ctx.config.text(TEMPLATES.name)).unwrap_or_default();
    let attempts = ctx.config.int(ATTEMPTS.name).unwrap_or(5).clamp(1, 100) as i32;
    let window = ctx.config.duration(WINDOW.name).unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(100));
    let names: Vec<&str> = sinks.iter().map(|(n, _)| n.as_str()).collect();
    info!(sinks = names.join(","), window = ?window, attempts, "notification delivery started");
    let delivery = Arc::new(Delivery { sinks, templates, attempts });
    ctx.every("notifications", window, move || {
        let (db, delivery) = (db.clone(), delivery.clone());
        async move {
            if let Err(e) = delivery.round(&db).await {
                warn!(error = %e, "delivering notifications failed; retrying");
            }
        }
    });
}

impl Delivery {
    /// One batching window: new notifications get a delivery row per sink, then each sink gets
    /// one batch of what is due for it.
    async fn round(&self, db: &PgPool) -> Result<(), Error> {
        for (name, sink) in &self.sinks {
            // Every notification without a delivery row for this sink gets one; a sink seen for
            // the first time starts with the last day's, not the whole history.
            sqlx::query(
                "INSERT INTO stella.deliveries (notification_id, sink, status)
                 SELECT n.id, $1, 'pending' FROM stella.notifications n
                 WHERE (n.created_at > now() - interval '1 day'
                        OR EXISTS (SELECT 1 FROM stella.deliveries d WHERE d.sink = $1))
                   AND NOT EXISTS (SELECT 1 FROM stella.deliveries d WHERE d.notification_id = n.id AND d.sink = $1)
                 ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .execute(db)
            .await?;
            let mut tx = db.begin().await?;
            type Row = (i64, Option<String>, String, Value, String, i32);
            let due: Vec<Row> = sqlx::query_as(
                "SELECT n.id, t.slug, n.event, n.payload, stella.rfc3339(n.created_at), d.attempts
                 FROM stella.deliveries d JOIN stella.notifications n ON n.id = d.notification_id
                 LEFT JOIN stella.tenants t ON t.id = n.tenant_id
                 WHERE d.sink = $1 AND d.status = 'pending' AND d.next_attempt_at <= now()
                 ORDER BY n.id LIMIT 100 FOR UPDATE OF d SKIP LOCKED",
            )
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
            if due.is_empty() {
                continue;
            }
            let batch: Vec<Value> = due
                .iter()
                .map(|(id, tenant, event, payload, at, _)| {
                    let text = self.templates.get(event).map(|t| render(t, payload)).unwrap_or_default();
                    json!({"id": id, "tenant": tenant, "event": event, "createdAt": at, "text": text, "payload": payload})
                })
                .collect();
            let ids: Vec<i64> = due.iter().map(|r| r.0).collect();
            let sent = send(name, sink, &batch).await;
            match &sent {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE stella.deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = now(),
                                last_error = NULL
                         WHERE sink = $1 AND notification_id = ANY($2)",
                    )
                    .bind(name)
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                    info!(sink = %name, notifications = ids.len(), "notifications delivered");
                }
                Err(e) => {
                    // Backoff 2, 4, 8 ... seconds (at most 5 minutes); dead after the attempts.
                    let dead = sqlx::query_scalar::<_, i64>(
                        "WITH u AS (
                           UPDATE stella.deliveries SET attempts = attempts + 1, last_error = $3,
                                  status = CASE WHEN attempts + 1 >= $4 THEN 'dead' ELSE 'pending' END,
                                  next_attempt_at = now() + make_interval(secs => least(300, 2 ^ (attempts + 1)))
                           WHERE sink = $1 AND notification_id = ANY($2) RETURNING status)
                         SELECT count(*) FROM u WHERE status = 'dead'",
                    )
                    .bind(name)
                    .bind(&ids)
                    .bind(e)
                    .bind(self.attempts)
                    .fetch_one(&mut *tx)
                    .await?;
                    warn!(sink = %name, notifications = ids.len(), dead, error = %e, "delivery failed");
                }
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Sends one batch to one sink.
async fn send(name: &str, sink: &Sink, batch: &[Value]) -> Result<(), String> {
    match sink {
        Sink::Smtp(smtp) => {
            let (smtp, texts) =
                (smtp.clone(), batch.iter().map(|n| n["text"].as_str().unwrap_or_default().to_string()));
            let body = texts.collect::<Vec<_>>().join("\n");
            let subject = format!("StellaOps: {} notification{}", batch.len(), if batch.len() == 1 { "" } else { "s" });
            tokio::task::spawn_blocking(move || {
                use lettre::Transport as _;
                let mut message = lettre::Message::builder().from(smtp.from.parse().map_err(|e| format!("from: {e}"))?);
                for to in &smtp.to {
                    message = message.to(to.parse().map_err(|e| format!("to: {e}"))?);
                }
                let message = message.subject(subject).body(body).map_err(|e| e.to_string())?;
                let transport = lettre::SmtpTransport::from_url(&smtp.relay)
                    .map_err(|e| e.to_string())?
                    .timeout(Some(Duration::from_secs(20)))
                    .build();
                // Only the relay's scheme, host and port in errors and logs.
                let shown = origin(&smtp.relay);
                transport.send(&message).map(|_| ()).map_err(|e| format!("SMTP {shown}: {e}"))
            })
            .await
            .map_err(|e| e.to_string())?
        }
        Sink::Log => {
            for n in batch {
                info!(sink = %name, event = %n["event"].as_str().unwrap_or_default(), id = %n["id"],
                      text = %n["text"].as_str().unwrap_or_default(), "notification");
            }
            Ok(())
        }
        Sink::Webhook(url) => {
            let (url, body) = (url.clone(), json!({"notifications": batch}).to_string());
            tokio::task::spawn_blocking(move || {
                let agent = http::agent(Duration::from_secs(10), Redirects::Refused);
                let shown = origin(&url);
                let reply = agent
                    .post(&url)
                    .header("content-type", "application/json")
                    .send(body.as_bytes())
                    .map_err(|e| format!("POST {shown}: {e}"))?;
                let status = reply.status().as_u16();
                if (200..300).contains(&status) { Ok(()) } else { Err(format!("POST {shown}: status {status}")) }
            })
            .await
            .map_err(|e| e.to_string())?
        }
    }
}

/// The tenant's notifications and their delivery state per sink; `dead` lists the dead letters.
pub async fn list(db: &PgPool, tenant_id: i64, status: Option<&str>) -> Result<Value, Error> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT json_build_object('id', n.id, 'event', n.event, 'payload', n.payload,
                'createdAt', stella.rfc3339(n.created_at), 'sink', d.sink, 'status', d.status,
                'attempts', d.attempts, 'lastError', d.last_error, 'deliveredAt', stella.rfc3339(d.delivered_at))
         FROM stella.notifications n JOIN stella.deliveries d ON d.notification_id = n.id
         WHERE n.tenant_id = $1 AND ($2::text IS NULL OR d.status = $2)
         ORDER BY n.id DESC, d.sink LIMIT 500",
    )
    .bind(tenant_id)
    .bind(status)
    .fetch_all(db)
    .await?;
    Ok(json!({"deliveries": rows}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_parse_and_errors_name_the_entry_not_the_url() {
        let s = parse_sinks("ops=webhook:https://hooks.example/t0ken, audit=log").unwrap();
        assert_eq!(s[0], ("ops".into(), Sink::Webhook("https://hooks.example/t0ken".into())));
        assert_eq!(s[1], ("audit".into(), Sink::Log));
        let e = parse_sinks("ops=webhook:ftp://x/t0ken").unwrap_err();
        assert!(e.contains("ops") && !e.contains("t0ken"), "{e}");
        assert!(parse_sinks("a=log,a=log").unwrap_err().contains("twice"));
        assert!(parse_sinks("nolog").unwrap_err().contains("entry 1"));
        let mail = parse_sinks(
            "mail=smtp:smtp://u:p4ss@relay:2525?from=stella@example.org&to=a@example.org;b@example.org&tls=required",
        )
        .unwrap();
        let Sink::Smtp(smtp) = &mail[0].1 else { panic!("{mail:?}") };
        assert_eq!((smtp.from.as_str(), smtp.to.len()), ("stella@example.org", 2));
        assert_eq!(smtp.relay, "smtp://u:p4ss@relay:2525?tls=required");
        let e = parse_sinks("mail=smtp:smtp://u:p4ss@relay?from=nobody").unwrap_err();
        assert!(e.contains("mail") && !e.contains("p4ss"), "{e}");
    }

    #[test]
    fn templates_render_payload_fields() {
        let t = templates(None).unwrap();
        let text = render(&t["job.failed"], &json!({"job": 7, "kind": "export", "attempts": 3, "reason": "disk full"}));
        assert_eq!(text, "Job 7 (export) failed after 3 attempts: disk full");
    }
}
