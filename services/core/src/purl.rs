//! Package URLs: the key that joins SBOM components, advisories' affected packages and VEX
//! products. Parsing is `packageurl`'s; this module adds the versionless base used for matching
//! and the mapping from OSV ecosystems to purl types.

use std::str::FromStr as _;

use packageurl::PackageUrl;

/// A parsed purl, reduced to what matching needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purl {
    /// `pkg:type/namespace/name`: qualifiers, subpath and version removed.
    pub base: String,
    pub name: String,
    pub version: Option<String>,
}

impl Purl {
    pub fn parse(s: &str) -> Result<Purl, String> {
        let p = PackageUrl::from_str(s).map_err(|e| format!("`{s}` is not a package URL ({e})"))?;
        let mut base = PackageUrl::new(p.ty().to_string(), p.name().to_string()).map_err(|e| e.to_string())?;
        if let Some(ns) = p.namespace() {
            base.with_namespace(ns.to_string()).map_err(|e| e.to_string())?;
        }
        Ok(Purl { base: base.to_string(), name: p.name().to_string(), version: p.version().map(str::to_string) })
    }

    /// The purl with its version: what a VEX product names and a finding reports.
    pub fn full(&self) -> String {
        match &self.version {
            Some(v) => format!("{}@{}", self.base, v),
            None => self.base.clone(),
        }
    }
}

/// The purl base of an OSV package (`ecosystem`, `name`), for the ecosystems whose mapping is
/// fixed by the purl spec; `None` for the others (they can still name a purl themselves).
pub fn from_ecosystem(ecosystem: &str, name: &str) -> Option<String> {
    let eco = ecosystem.split(':').next().unwrap_or(ecosystem);
    let (ty, path) = match eco {
        "crates.io" => ("cargo", name.to_string()),
        "npm" => ("npm", name.to_string()),
        "PyPI" => ("pypi", name.to_lowercase().replace('_', "-")),
        "Go" => ("golang", name.to_string()),
        "RubyGems" => ("gem", name.to_string()),
        "NuGet" => ("nuget", name.to_string()),
        "Packagist" => ("composer", name.to_string()),
        "Maven" => ("maven", name.replacen(':', "/", 1)),
        "Debian" => ("deb", format!("debian/{name}")),
        _ => return None,
    };
    Purl::parse(&format!("pkg:{ty}/{path}")).ok().map(|p| p.base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_drops_version_and_qualifiers() {
        let p = Purl::parse("pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1?type=jar").unwrap();
        assert_eq!(p.base, "pkg:maven/org.apache.logging.log4j/log4j-core");
        assert_eq!(p.version.as_deref(), Some("2.14.1"));
        assert_eq!(p.full(), "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1");
        assert!(Purl::parse("log4j").unwrap_err().contains("`log4j` is not a package URL"));
    }

    #[test]
    fn ecosystems_map_to_the_same_base_as_a_purl() {
        assert_eq!(from_ecosystem("crates.io", "time").unwrap(), Purl::parse("pkg:cargo/time@0.1.45").unwrap().base);
        assert_eq!(
            from_ecosystem("Maven", "org.apache.logging.log4j:log4j-core").unwrap(),
            "pkg:maven/org.apache.logging.log4j/log4j-core"
        );
        assert_eq!(from_ecosystem("Debian:12", "openssl").unwrap(), "pkg:deb/debian/openssl");
        assert_eq!(from_ecosystem("Unknown", "x"), None);
    }
}
