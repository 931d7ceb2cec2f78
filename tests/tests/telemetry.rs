//! OpenTelemetry export, for every service: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, request
//! spans (joined to the caller's `traceparent`) and request metrics arrive over OTLP/HTTP.
//!
//! No OpenTelemetry Collector can be installed on this machine, so the receiver is a small
//! HTTP listener here; the payloads are decoded with `opentelemetry-proto`, the project's
//! reference protobuf types, not with our own code.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use stella_e2e::{BinPath, Proc, free_port, get, services, wait_status};

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Accepts OTLP/HTTP posts and records (path, body).
fn receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_string();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        if header.trim().is_empty() {
                            break;
                        }
                        if let Some((_, v)) =
                            header.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    sink.lock().unwrap().push((path, body));
                    let mut out = &stream;
                    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
                }
            });
        }
    });
    (port, received)
}

fn service_name(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|v| match v {
            Value::StringValue(s) => s,
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

#[test]
fn every_server_exports_spans_and_metrics_over_otlp() {
    let (otlp_port, received) = receiver();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let servers: Vec<_> = services().into_iter().filter(|s| s.kind == "server").collect();
    let mut procs = Vec::new();
    for s in &servers {
        let port = free_port();
        let env = [
            ("STELLA_PORT", port.to_string()),
            ("STELLA_LISTEN_ADDR", "127.0.0.1".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{otlp_port}")),
        ];
        let proc = Proc::spawn(&s.path(), &[], &env);
        let base = format!("http://127.0.0.1:{port}");
        assert!(
            wait_status(&format!("{base}/health/liveness"), 200, Duration::from_secs(10)).is_some(),
            "{}",
            s.binary
        );
        let agent = ureq::Agent::new_with_defaults();
        agent
            .get(&format!("{base}/version"))
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .call()
            .expect("version answers");
        assert_eq!(get(&format!("{base}/version")).unwrap().0, 200);
        procs.push((s.binary.clone(), proc));
    }
    for (binary, proc) in &mut procs {
        proc.signal(libc::SIGTERM);
        assert!(proc.wait_for(Duration::from_secs(10)).is_some_and(|s| s.success()), "{binary} did not exit cleanly");
    }

    let mut spans: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut metrics: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, body) in received.lock().unwrap().iter() {
        match path.as_str() {
            "/v1/traces" => {
                let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("valid OTLP traces");
                for rs in req.resource_spans {
                    let service = service_name(&rs.resource.map(|r| r.attributes).unwrap_or_default());
                    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        let id: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                        spans.entry(service.clone()).or_default().push((span.name, id));
                    }
                }
            }
            "/v1/metrics" => {
                let req = ExportMetricsServiceRequest::decode(body.as_slice()).expect("valid OTLP metrics");
                for rm in req.resource_metrics {
                    let service = service_name(&rm.resource.map(|r| r.attributes).unwrap_or_default());
                    for m in rm.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                        metrics.entry(service.clone()).or_default().push(m.name);
                    }
                }
            }
            other => panic!("unexpected OTLP path {other}"),
        }
    }
    for s in &servers {
        let got = spans.get(&s.binary).unwrap_or_else(|| panic!("no spans from {}: {spans:?}", s.binary));
        assert!(
            got.iter().any(|(name, id)| name == "GET /version" && id == trace_id),
            "{}: no `GET /version` span joined to the caller's trace: {got:?}",
            s.binary
        );
        let got = metrics.get(&s.binary).unwrap_or_else(|| panic!("no metrics from {}", s.binary));
        assert!(got.iter().any(|m| m == "http.server.request.duration"), "{}: {got:?}", s.binary);
    }
}
