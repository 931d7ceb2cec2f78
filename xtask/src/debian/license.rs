//! Licenses of Debian packages from their machine-readable `copyright` files (DEP-5): the
//! `License:` of every `Files:` paragraph, translated from Debian's short names to SPDX
//! identifiers and joined with `AND`. A file that is not DEP-5, or a name with no SPDX
//! equivalent, gives `None` (the SBOM says NOASSERTION rather than guess).

use std::collections::BTreeSet;

/// Debian short name (lower case) to SPDX identifier.
const NAMES: &[(&str, &str)] = &[
    ("apache-2.0", "Apache-2.0"),
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

/// The declared license of a package from its `copyright` text, as an SPDX expression.
pub fn declared(copyright: &str) -> Option<String> {
    let mut paragraphs = copyright.split("\n\n").filter(|p| !p.trim().is_empty());
    let header = paragraphs.next()?;
    if !header.lines().any(|l| l.starts_with("Format:") && l.contains("copyright-format")) {
        return None;
    }
    let mut terms = BTreeSet::new();
    for paragraph in copyright.split("\n\n") {
        let lines: Vec<&str> = paragraph.lines().collect();
        if !lines.iter().any(|l| l.starts_with("Files:")) {
            continue;
        }
        let license = lines.iter().find_map(|l| l.strip_prefix("License:"))?.trim();
        if license.is_empty() {
            return None;
        }
        terms.insert(expression(license)?);
    }
    if terms.is_empty() {
        return None;
    }
    let joined = if terms.len() == 1 {
        terms.into_iter().next()?
    } else {
        terms
            .iter()
            .map(|t| if t.contains(' ') { format!("({t})") } else { t.clone() })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    spdx::Expression::parse(&joined).ok().map(|_| joined)
}

/// One `License:` value (`GPL-2+ or Artistic`, `BSD-3-clause and Expat`) in SPDX syntax.
fn expression(value: &str) -> Option<String> {
    let value = value.replace(',', " ");
    let mut out = Vec::new();
    for word in value.split_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "or" => out.push("OR".to_string()),
            "and" => out.push("AND".to_string()),
            name => out.push(spdx_name(name)?.to_string()),
        }
    }
    let text = out.join(" ");
    spdx::Expression::parse(&text).ok().map(|_| text)
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
        assert_eq!(declared(DEP5).as_deref(), Some("(GPL-2.0-or-later OR Artistic-1.0-Perl) AND BSD-3-Clause"));
    }

    #[test]
    fn free_form_or_unknown_names_are_not_guessed() {
        assert_eq!(declared("This package was debianized by someone.\n\nIt is GPL."), None);
        assert_eq!(declared(&DEP5.replace("BSD-3-clause\n\n", "Custom-License\n\n")), None);
    }
}
