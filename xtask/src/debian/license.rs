//! Licenses of Debian packages from their machine-readable `copyright` files (DEP-5): the
//! `License:` of every `Files:` paragraph, translated from Debian's short names to SPDX
//! identifiers and joined with `AND`. A name with no SPDX equivalent (`Custom-regex`,
//! `OpenLDAP-2.8`, `GPL-3+ with Bison exception`) becomes `LicenseRef-<package>-<name>`, with
//! the text of the file's own `License:` paragraph as its extracted text, as SPDX requires. A
//! file that is not DEP-5 gives `None`: the SBOM says NOASSERTION rather than guess.

use std::collections::BTreeSet;

/// Debian short name (lower case) to SPDX identifier.
const NAMES: &[(&str, &str)] = &[
    ("apache-2.0", "Apache-2.0"),
    ("apache-2", "Apache-2.0"),
    ("gpl", "GPL-1.0-or-later"),
    ("lgpl", "LGPL-2.0-or-later"),
    ("mit/x11", "X11"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("beerware", "Beerware"),
    ("sleepycat", "Sleepycat"),
    ("ms-pl", "MS-PL"),
    ("latex2e", "Latex2e"),
    ("unicode", "Unicode-DFS-2016"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-2.0", "Artistic-2.0"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("bsl-1.0", "BSL-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("expat", "MIT"),
    ("mit", "MIT"),
    ("isc", "ISC"),
    ("zlib", "Zlib"),
    ("postgresql", "PostgreSQL"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("openssl", "OpenSSL"),
    ("ssleay", "SSLeay-standalone"),
    ("unicode-dfs-2016", "Unicode-DFS-2016"),
    ("x11", "X11"),
    ("curl", "curl"),
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
];

fn spdx_name(debian: &str) -> Option<&'static str> {
    let key = debian.trim().to_ascii_lowercase();
    NAMES.iter().find(|(d, _)| *d == key).map(|(_, s)| *s)
}

/// A package's declared license: the SPDX expression and the `LicenseRef-` texts it uses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Declared {
    pub expression: String,
    /// `(LicenseRef-…, text)` for every name without an SPDX identifier.
    pub extracted: Vec<(String, String)>,
}

/// The declared license of package `package` from its `copyright` text.
pub fn declared(package: &str, copyright: &str) -> Option<Declared> {
    let paragraphs: Vec<&str> = copyright.split("\n\n").filter(|p| !p.trim().is_empty()).collect();
    let header = paragraphs.first()?;
    if !header.lines().any(|l| l.starts_with("Format:") && l.contains("copyright-format")) {
        return None;
    }
    // Stand-alone `License:` paragraphs hold the texts of the names the others use.
    let mut texts = std::collections::BTreeMap::new();
    for p in &paragraphs {
        let mut lines = p.lines();
        if let Some(name) = lines.next().and_then(|l| l.strip_prefix("License:")) {
            let body: Vec<&str> =
                lines.map(|l| l.strip_prefix(' ').unwrap_or(l)).map(|l| if l == "." { "" } else { l }).collect();
            texts.insert(name.trim().to_string(), body.join("\n"));
        }
    }
    let mut terms = BTreeSet::new();
    let mut extracted = std::collections::BTreeMap::new();
    for paragraph in &paragraphs {
        let lines: Vec<&str> = paragraph.lines().collect();
        if !lines.iter().any(|l| l.starts_with("Files:")) {
            continue;
        }
        let license = lines.iter().find_map(|l| l.strip_prefix("License:"))?.trim();
        if license.is_empty() {
            return None;
        }
        terms.insert(expression(package, license, &texts, &mut extracted)?);
    }
    if terms.is_empty() {
        return None;
    }
    let expression = if terms.len() == 1 {
        terms.into_iter().next()?
    } else {
        terms
            .iter()
            .map(|t| if t.contains(' ') { format!("({t})") } else { t.clone() })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    spdx::Expression::parse(&expression).ok()?;
    Some(Declared { expression, extracted: extracted.into_iter().collect() })
}

/// One `License:` value (`GPL-2+ or Artistic`, `BSD-3-clause and Expat`) in SPDX syntax. `or`
/// and `and` are operators; any other run of words is one license name.
fn expression(
    package: &str,
    value: &str,
    texts: &std::collections::BTreeMap<String, String>,
    extracted: &mut std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let value = value.replace(',', " ");
    let mut out = Vec::new();
    let mut name: Vec<&str> = Vec::new();
    let mut flush = |name: &mut Vec<&str>, out: &mut Vec<String>| -> Option<()> {
        if name.is_empty() {
            return None;
        }
        let text = name.join(" ");
        name.clear();
        match spdx_name(&text) {
            Some(id) => out.push(id.to_string()),
            None => {
                let clean: String = format!("{package}-{text}")
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
                    .collect();
                let id = format!("LicenseRef-{clean}");
                let body = texts.get(&text).filter(|t| !t.trim().is_empty()).cloned().unwrap_or_else(|| {
                    format!(
                        "The Debian copyright file of {package} names this license \"{text}\" without giving its text."
                    )
                });
                extracted.insert(id.clone(), body);
                out.push(id);
            }
        }
        Some(())
    };
    for word in value.split_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "or" | "and" => {
                flush(&mut name, &mut out)?;
                out.push(word.to_ascii_uppercase());
            }
            _ => name.push(word),
        }
    }
    flush(&mut name, &mut out)?;
    Some(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
        Upstream-Name: x\n\nFiles: *\nCopyright: someone\nLicense: BSD-3-clause\n\n\
        Files: debian/*\nCopyright: other\nLicense: GPL-2+ or Artistic\n\n\
        License: BSD-3-clause\n Redistribution and use...\n";

    #[test]
    fn dep5_files_licenses_are_joined() {
        let d = declared("x", DEP5).unwrap();
        assert_eq!(d.expression, "BSD-3-Clause AND (GPL-2.0-or-later OR Artistic-1.0-Perl)");
        assert!(d.extracted.is_empty());
    }

    #[test]
    fn free_form_files_are_not_guessed() {
        assert_eq!(declared("x", "This package was debianized by someone.\n\nIt is GPL."), None);
    }

    #[test]
    fn names_without_an_spdx_id_become_license_refs_with_their_text() {
        let text = DEP5.replace("License: BSD-3-clause\n\nFiles", "License: Custom-regex\n\nFiles")
            + "\nLicense: Custom-regex\n Permission is granted.\n .\n No warranty.\n";
        let d = declared("pg", &text).unwrap();
        assert_eq!(d.expression, "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND LicenseRef-pg-Custom-regex");
        assert_eq!(
            d.extracted,
            vec![("LicenseRef-pg-Custom-regex".to_string(), "Permission is granted.\n\nNo warranty.".to_string())]
        );
        let d = declared("b", &DEP5.replace("GPL-2+ or Artistic", "GPL-3+ with Bison exception")).unwrap();
        assert_eq!(d.expression, "BSD-3-Clause AND LicenseRef-b-GPL-3--with-Bison-exception");
        assert!(d.extracted[0].1.contains("without giving its text"));
    }
}
