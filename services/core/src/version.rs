//! Version comparison and OSV range evaluation.
//!
//! `SEMVER` ranges compare with the `semver` crate. `ECOSYSTEM` ranges and versions that are not
//! semver (Maven's `2.0-beta9`, Debian's `3.0.11-1~deb12u2`) compare with a generic ordering:
//! runs of digits numerically, other runs as text, `~` before anything (Debian's rule) and a
//! pre-release tag (`-beta9`) before the release. It is exact for the ecosystems the seed data
//! uses; ecosystems with stranger rules (Debian epochs, PEP 440 post-releases) are approximated.

use std::cmp::Ordering;

/// How a range's versions compare: OSV's `SEMVER` ranges by semver precedence, `ECOSYSTEM`
/// ranges by the generic order (a Debian `1.0.0-1` is newer than `1.0.0`, which semver would say
/// is a pre-release and older).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scheme {
    Semver,
    Ecosystem,
}

/// Compares two versions under `scheme`. A `SEMVER` version that does not parse as semver falls
/// back to the generic order for that pair.
pub fn compare(scheme: Scheme, a: &str, b: &str) -> Ordering {
    if scheme == Scheme::Semver
        && let (Ok(x), Ok(y)) = (semver::Version::parse(a), semver::Version::parse(b))
    {
        return x.cmp(&y);
    }
    generic(a, b)
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Piece<'a> {
    // Order matters: a tilde sorts before the end of the string, which sorts before a
    // pre-release word, which sorts before a number... except that a word *after* a separator
    // at the end (1.0-beta) is a pre-release, so it is handled in `generic`.
    Tilde,
    End,
    Word(&'a str),
    Number(u64),
}

fn pieces(v: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let bytes = v.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'~' {
            out.push(Piece::Tilde);
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Piece::Number(v[start..i].parse().unwrap_or(u64::MAX)));
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            out.push(Piece::Word(&v[start..i]));
        } else {
            i += 1; // separators only delimit
        }
    }
    out
}

/// The generic order: element-wise; a word where the other side has a number or ends is a
/// pre-release and sorts lower (`2.0-beta9` < `2.0` < `2.0.1`).
fn generic(a: &str, b: &str) -> Ordering {
    let (x, y) = (pieces(a), pieces(b));
    for i in 0..x.len().max(y.len()) {
        let p = x.get(i).unwrap_or(&Piece::End);
        let q = y.get(i).unwrap_or(&Piece::End);
        let ord = match (p, q) {
            (Piece::Word(_), Piece::End | Piece::Number(_)) => Ordering::Less,
            (Piece::End | Piece::Number(_), Piece::Word(_)) => Ordering::Greater,
            (Piece::Word(s), Piece::Word(t)) => s.to_ascii_lowercase().cmp(&t.to_ascii_lowercase()),
            _ => p.cmp(q),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// One OSV range event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
}

/// One OSV range: its scheme and its events.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Range {
    pub scheme: Scheme,
    pub events: Vec<Event>,
}

/// Whether `version` is inside `range`: some `introduced` at or below it with no `fixed` in
/// between (introduced <= fixed <= version) and no `last_affected` in between
/// (introduced <= last_affected < version). This is OSV's sorted walk expressed pairwise: no
/// sort, so no comparator has to be a total order over every version string a feed may send,
/// and a malformed range cannot make the evaluation panic.
pub fn in_range(version: &str, range: &Range) -> bool {
    let cmp = |a: &str, b: &str| if a == "0" { Ordering::Less } else { compare(range.scheme, a, b) };
    range.events.iter().any(|e| {
        let Event::Introduced(intro) = e else { return false };
        if intro != "0" && compare(range.scheme, intro, version) == Ordering::Greater {
            return false;
        }
        !range.events.iter().any(|limit| match limit {
            Event::Fixed(f) => {
                cmp(intro, f) != Ordering::Greater && compare(range.scheme, f, version) != Ordering::Greater
            }
            Event::LastAffected(l) => {
                cmp(intro, l) != Ordering::Greater && compare(range.scheme, l, version) == Ordering::Less
            }
            Event::Introduced(_) => false,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Scheme::{Ecosystem, Semver};

    #[test]
    fn generic_order_handles_prereleases_tildes_and_numbers() {
        assert_eq!(compare(Ecosystem, "2.0-beta9", "2.0"), Ordering::Less);
        assert_eq!(compare(Ecosystem, "2.14.1", "2.15.0"), Ordering::Less);
        assert_eq!(compare(Ecosystem, "2.10", "2.9"), Ordering::Greater);
        assert_eq!(compare(Ecosystem, "3.0.11-1~deb12u2", "3.0.11-1"), Ordering::Less);
        assert_eq!(compare(Ecosystem, "1.2", "1.2.0"), Ordering::Less);
        // The scheme decides: a Debian revision is newer, a semver pre-release older.
        assert_eq!(compare(Ecosystem, "1.0.0-1", "1.0.0"), Ordering::Greater);
        assert_eq!(compare(Semver, "1.0.0-rc.1", "1.0.0"), Ordering::Less);
    }

    fn range(scheme: Scheme, events: &[(&str, &str)]) -> Range {
        let events = events
            .iter()
            .map(|(k, v)| match *k {
                "introduced" => Event::Introduced(v.to_string()),
                "fixed" => Event::Fixed(v.to_string()),
                _ => Event::LastAffected(v.to_string()),
            })
            .collect();
        Range { scheme, events }
    }

    #[test]
    fn ranges_follow_the_osv_algorithm() {
        let r = range(Ecosystem, &[("introduced", "2.0-beta9"), ("fixed", "2.15.0")]);
        assert!(in_range("2.14.1", &r));
        assert!(in_range("2.0-beta9", &r));
        assert!(!in_range("2.15.0", &r));
        assert!(!in_range("1.2.17", &r));
        let two = range(
            Semver,
            &[("introduced", "0"), ("fixed", "0.2.23"), ("introduced", "0.3.0"), ("last_affected", "0.3.1")],
        );
        assert!(in_range("0.1.45", &two));
        assert!(!in_range("0.2.23", &two));
        assert!(in_range("0.3.1", &two));
        assert!(!in_range("0.3.2", &two));
        // Events in any order give the same answer.
        let shuffled = range(
            Semver,
            &[("last_affected", "0.3.1"), ("introduced", "0.3.0"), ("fixed", "0.2.23"), ("introduced", "0")],
        );
        for v in ["0.1.45", "0.2.23", "0.3.1", "0.3.2"] {
            assert_eq!(in_range(v, &two), in_range(v, &shuffled), "{v}");
        }
    }

    #[test]
    fn malformed_ranges_do_not_panic() {
        let many: Vec<(&str, &str)> =
            ["0", "0", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-alpha.01", "x", "", "~", "1..2"]
                .iter()
                .flat_map(|v| [("introduced", *v), ("fixed", *v), ("last_affected", *v)])
                .collect();
        for scheme in [Semver, Ecosystem] {
            let r = range(scheme, &many);
            for v in ["0", "1.0.0", "1.0.0-alpha.01", "", "~x"] {
                let _ = in_range(v, &r);
            }
        }
    }
}
