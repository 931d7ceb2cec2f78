//! OpenVEX documents (<https://github.com/openvex/spec>): the statements Excitator indexes.

use serde::Deserialize;
use serde_json::Value;

use crate::purl::Purl;

pub const STATUSES: &[&str] = &["not_affected", "affected", "fixed", "under_investigation"];

/// One statement about one vulnerability and one product.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Statement {
    /// Position of the statement in the document (links point at it).
    pub index: usize,
    pub vulnerability: String,
    pub aliases: Vec<String>,
    /// The product's purl as written (with a version: that version; without: every version).
    pub product: String,
    pub status: String,
    pub justification: Option<String>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "@context")]
    context: String,
    #[serde(rename = "@id")]
    id: String,
    statements: Vec<RawStatement>,
}

#[derive(Deserialize)]
struct RawStatement {
    vulnerability: Value,
    #[serde(default)]
    products: Vec<Value>,
    status: String,
    justification: Option<String>,
}

/// The document's `@id` and its statements, one per (statement, product).
pub fn parse(bytes: &[u8]) -> Result<(String, Vec<Statement>), String> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("not an OpenVEX document: {e}"))?;
    if !raw.context.starts_with("https://openvex.dev/ns") {
        return Err(format!("@context: `{}` is not an OpenVEX context (https://openvex.dev/ns/...)", raw.context));
    }
    let mut out = Vec::new();
    for (i, s) in raw.statements.iter().enumerate() {
        let at = format!("statements[{i}]");
        if !STATUSES.contains(&s.status.as_str()) {
            return Err(format!("{at}.status: `{}` is not one of {}", s.status, STATUSES.join(", ")));
        }
        let (vulnerability, aliases) = match &s.vulnerability {
            Value::String(v) => (v.clone(), vec![]),
            Value::Object(o) => {
                let name =
                    o.get("name").and_then(Value::as_str).ok_or(format!("{at}.vulnerability.name is missing"))?;
                let aliases = o
                    .get("aliases")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default();
                (name.to_string(), aliases)
            }
            _ => return Err(format!("{at}.vulnerability: expected a name or an object with `name`")),
        };
        if s.products.is_empty() {
            return Err(format!("{at}.products: a statement must name at least one product"));
        }
        for (j, p) in s.products.iter().enumerate() {
            let id = match p {
                Value::String(v) => v.as_str(),
                Value::Object(o) => o.get("@id").and_then(Value::as_str).unwrap_or_default(),
                _ => "",
            };
            let product = Purl::parse(id).map_err(|e| format!("{at}.products[{j}]: {e}"))?;
            out.push(Statement {
                index: i,
                vulnerability: vulnerability.clone(),
                aliases: aliases.clone(),
                product: product.full(),
                status: s.status.clone(),
                justification: s.justification.clone(),
            });
        }
    }
    Ok((raw.id, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_per_product_and_errors_that_name_the_field() {
        let doc = r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://example/vex/1","author":"a","timestamp":"2026-01-01T00:00:00Z","version":1,
          "statements":[{"vulnerability":{"name":"CVE-2021-44228"},"products":[{"@id":"pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"},"pkg:cargo/time"],
          "status":"not_affected","justification":"vulnerable_code_not_in_execute_path"}]}"#;
        let (id, s) = parse(doc.as_bytes()).unwrap();
        assert_eq!(id, "https://example/vex/1");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].product, "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1");
        assert_eq!(s[1].product, "pkg:cargo/time");
        let bad = doc.replace("not_affected", "safe");
        assert!(parse(bad.as_bytes()).unwrap_err().starts_with("statements[0].status: `safe`"));
    }
}
