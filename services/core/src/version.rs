//! Version comparison and OSV range evaluation.
//!
//! `SEMVER` ranges compare with the `semver` crate. `ECOSYSTEM` ranges and versions that are not
//! semver (Maven's `2.0-beta9`, Debian's `3.0.11-1~deb12u2`) compare with a generic ordering:
//! runs of digits numerically, other runs as text, `~` before anything (Debian's rule) and a
//! pre-release tag (`-beta9`) before the release. It is exact for the ecosystems the seed data
//! uses; ecosystems with stranger rules (Debian epochs, PEP 440 post-releases) are approximated.

use std::cmp::Ordering;

/// Compares two versions: semver when both parse as semver, the generic order otherwise.
pub fn compare(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (semver::Version::parse(a), semver::Version::parse(b)) {
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

/// Whether `version` is inside the range `events` describes (OSV's algorithm: walk the events
/// in version order; `introduced` opens, `fixed` closes before, `last_affected` closes after).
pub fn in_range(version: &str, events: &[Event]) -> bool {
    let key = |e: &Event| match e {
        Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) => v.clone(),
    };
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by(|a, b| {
        let (x, y) = (key(a), key(b));
        if x == "0" {
            return Ordering::Less;
        }
        if y == "0" {
            return Ordering::Greater;
        }
        compare(&x, &y)
    });
    let mut affected = false;
    for e in sorted {
        match e {
            Event::Introduced(v) if v == "0" || compare(version, v) != Ordering::Less => affected = true,
            Event::Fixed(v) if compare(version, v) != Ordering::Less => affected = false,
            Event::LastAffected(v) if compare(version, v) == Ordering::Greater => affected = false,
            _ => {}
        }
    }
    affected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_order_handles_prereleases_tildes_and_numbers() {
        assert_eq!(compare("2.0-beta9", "2.0"), Ordering::Less);
        assert_eq!(compare("2.14.1", "2.15.0"), Ordering::Less);
        assert_eq!(compare("2.10", "2.9"), Ordering::Greater);
        assert_eq!(compare("3.0.11-1~deb12u2", "3.0.11-1"), Ordering::Less);
        assert_eq!(compare("1.0.0-rc.1", "1.0.0"), Ordering::Less);
        assert_eq!(compare("1.2", "1.2.0"), Ordering::Less);
    }

    #[test]
    fn ranges_follow_the_osv_algorithm() {
        use Event::*;
        let r = [Introduced("2.0-beta9".into()), Fixed("2.15.0".into())];
        assert!(in_range("2.14.1", &r));
        assert!(in_range("2.0-beta9", &r));
        assert!(!in_range("2.15.0", &r));
        assert!(!in_range("1.2.17", &r));
        let two =
            [Introduced("0".into()), Fixed("0.2.23".into()), Introduced("0.3.0".into()), LastAffected("0.3.1".into())];
        assert!(in_range("0.1.45", &two));
        assert!(!in_range("0.2.23", &two));
        assert!(in_range("0.3.1", &two));
        assert!(!in_range("0.3.2", &two));
    }
}
