//! SBOM import: the components of an SPDX 2.3 JSON or CycloneDX 1.4–1.6 JSON document.
//!
//! Only what matching needs is read: each package's purl (SPDX `externalRefs` of type `purl`,
//! CycloneDX `purl`, nested components included). Packages without a purl are counted, not
//! matched: nothing identifies them in an advisory.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::purl::Purl;

#[derive(Debug, PartialEq)]
pub struct Sbom {
    /// `spdx-2.3` or `cyclonedx-1.N`.
    pub format: String,
    pub name: String,
    /// By full purl, so a package listed twice is one component.
    pub components: BTreeMap<String, Purl>,
    /// Packages without a purl.
    pub unidentified: usize,
}

/// Reads an SBOM; the error names the format expected and the field that is wrong.
pub fn parse(bytes: &[u8]) -> Result<Sbom, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(v) = doc.get("spdxVersion") {
        if v.as_str() != Some("SPDX-2.3") && v.as_str() != Some("SPDX-2.2") {
            return Err(format!("spdxVersion: {v} is not SPDX-2.3 (or 2.2)"));
        }
        return spdx(&doc);
    }
    if doc.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") {
        return cyclonedx(&doc);
    }
    Err("neither SPDX 2.3 JSON (no `spdxVersion`) nor CycloneDX JSON (no `bomFormat: CycloneDX`)".into())
}

fn spdx(doc: &Value) -> Result<Sbom, String> {
    let name = doc.get("name").and_then(Value::as_str).ok_or("name: an SPDX document must have a name")?;
    let packages = doc.get("packages").and_then(Value::as_array).ok_or("packages: missing or not a list")?;
    let mut sbom = Sbom { format: "spdx-2.3".into(), name: name.into(), components: BTreeMap::new(), unidentified: 0 };
    for (i, p) in packages.iter().enumerate() {
        let at = format!("packages[{i}]");
        if !p.is_object() {
            return Err(format!("{at}: a package must be an object, not {}", kind(p)));
        }
        let refs = match p.get("externalRefs") {
            None => &[][..],
            Some(Value::Array(refs)) => refs.as_slice(),
            Some(other) => return Err(format!("{at}.externalRefs: must be a list, not {}", kind(other))),
        };
        let purl = refs.iter().find(|r| r.get("referenceType").and_then(Value::as_str) == Some("purl"));
        let purl = match purl.map(|r| r.get("referenceLocator")) {
            None => None,
            Some(Some(Value::String(s))) => Some(s.as_str()),
            Some(other) => {
                let shown = other.map_or("nothing", kind);
                return Err(format!("{at}.externalRefs: the purl's referenceLocator must be a string, not {shown}"));
            }
        };
        add(&mut sbom, purl, &format!("{at}.externalRefs"))?;
    }
    Ok(sbom)
}

fn cyclonedx(doc: &Value) -> Result<Sbom, String> {
    let spec = doc.get("specVersion").and_then(Value::as_str).ok_or("specVersion: missing")?;
    if !["1.4", "1.5", "1.6"].contains(&spec) {
        return Err(format!("specVersion: {spec} is not 1.4, 1.5 or 1.6"));
    }
    let name = doc.pointer("/metadata/component/name").and_then(Value::as_str).unwrap_or("CycloneDX SBOM");
    let mut sbom =
        Sbom { format: format!("cyclonedx-{spec}"), name: name.into(), components: BTreeMap::new(), unidentified: 0 };
    // A field of the wrong type is an error, never "no components": a document that only looks
    // empty would otherwise pass policy.
    fn walk(sbom: &mut Sbom, list: &Value, at: &str) -> Result<(), String> {
        let Some(list) = list.as_array() else { return Err(format!("{at}: must be a list, not {}", kind(list))) };
        for (i, c) in list.iter().enumerate() {
            let here = format!("{at}[{i}]");
            if !c.is_object() {
                return Err(format!("{here}: a component must be an object, not {}", kind(c)));
            }
            let purl = match c.get("purl") {
                None => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(other) => return Err(format!("{here}.purl: must be a string, not {}", kind(other))),
            };
            add(sbom, purl, &format!("{here}.purl"))?;
            if let Some(nested) = c.get("components") {
                walk(sbom, nested, &format!("{here}.components"))?;
            }
        }
        Ok(())
    }
    if let Some(components) = doc.get("components") {
        walk(&mut sbom, components, "components")?;
    }
    Ok(sbom)
}

/// What a JSON value is, for errors.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn add(sbom: &mut Sbom, purl: Option<&str>, at: &str) -> Result<(), String> {
    match purl {
        None => sbom.unidentified += 1,
        Some(s) => {
            let p = Purl::parse(s).map_err(|e| format!("{at}: {e}"))?;
            if p.version.is_none() {
                // Without a version nothing can be matched against a range.
                sbom.unidentified += 1;
            } else {
                sbom.components.insert(p.full(), p);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdx_and_cyclonedx_give_the_same_components() {
        let spdx = r#"{"spdxVersion":"SPDX-2.3","name":"demo","packages":[
            {"name":"time","externalRefs":[{"referenceCategory":"PACKAGE-MANAGER","referenceType":"purl","referenceLocator":"pkg:cargo/time@0.1.45"}]},
            {"name":"nopurl"}]}"#;
        let cdx = r#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[{"name":"x","purl":"pkg:npm/x@1.0.0",
            "components":[{"name":"time","purl":"pkg:cargo/time@0.1.45"}]}]}"#;
        let a = parse(spdx.as_bytes()).unwrap();
        let b = parse(cdx.as_bytes()).unwrap();
        assert_eq!(a.format, "spdx-2.3");
        assert_eq!(a.unidentified, 1);
        assert!(a.components.contains_key("pkg:cargo/time@0.1.45"));
        assert_eq!(b.components.len(), 2);
        assert!(b.components.contains_key("pkg:cargo/time@0.1.45"));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(parse(b"[1,").unwrap_err().starts_with("not JSON"));
        assert!(parse(b"{}").unwrap_err().starts_with("neither SPDX"));
        let bad = r#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[{"purl":"cargo/time"}]}"#;
        assert!(
            parse(bad.as_bytes()).unwrap_err().starts_with("components[0].purl: `cargo/time` is not a package URL")
        );
    }

    /// A field of the wrong type is refused, naming it: never read as "no components" or as an
    /// unidentified package, which would pass policy.
    #[test]
    fn fields_of_the_wrong_type_are_refused() {
        let cdx =
            |components: &str| format!(r#"{{"bomFormat":"CycloneDX","specVersion":"1.5","components":{components}}}"#);
        for (doc, error) in [
            (cdx(r#"{"a":1}"#), "components: must be a list, not an object"),
            (cdx(r#"[{"purl":42}]"#), "components[0].purl: must be a string, not a number"),
            (cdx(r#"["pkg:npm/x@1"]"#), "components[0]: a component must be an object, not a string"),
            (cdx(r#"[{"purl":"pkg:npm/x@1","components":"y"}]"#), "components[0].components: must be a list"),
            (
                r#"{"spdxVersion":"SPDX-2.3","name":"d","packages":[{"externalRefs":{"a":1}}]}"#.to_string(),
                "packages[0].externalRefs: must be a list, not an object",
            ),
            (
                r#"{"spdxVersion":"SPDX-2.3","name":"d","packages":[{"externalRefs":[{"referenceType":"purl","referenceLocator":7}]}]}"#
                    .to_string(),
                "packages[0].externalRefs: the purl's referenceLocator must be a string, not a number",
            ),
            (r#"{"spdxVersion":"SPDX-2.3","name":"d","packages":[3]}"#.to_string(), "packages[0]: a package must be an object"),
        ] {
            let e = parse(doc.as_bytes()).unwrap_err();
            assert!(e.starts_with(error), "{doc}: {e}");
        }
        // Absent is not wrong: a CycloneDX BOM without components has none.
        assert_eq!(parse(cdx("[]").as_bytes()).unwrap().components.len(), 0);
        let none = r#"{"bomFormat":"CycloneDX","specVersion":"1.5"}"#;
        assert_eq!(parse(none.as_bytes()).unwrap().unidentified, 0);
    }
}
