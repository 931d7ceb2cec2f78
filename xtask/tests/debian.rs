//! Debian layers refuse what the lock does not pin: a tampered `.deb` in the cache, a package
//! that cannot be fetched, a lock that names no packages; and a locked layer extracts the same
//! bytes every time. Uses the `.deb` files the build already cached (`cargo xtask test` builds
//! the images first); no test reaches outside loopback.

use xtask::debian::{Deb, Lock, fetch};

fn lock() -> Lock {
    Lock::read(&xtask::shell::root().join("layers")).expect("layers/debian.lock")
}

/// The smallest locked package for amd64, with its cached bytes.
fn small_cached_deb() -> (Deb, Vec<u8>) {
    let lock = lock();
    let mut debs: Vec<&Deb> = lock.debs.iter().filter(|d| d.architecture == "amd64").collect();
    debs.sort_by_key(|d| d.size);
    let deb = debs[0].clone();
    let path = fetch::cache_dir().join(format!("{}.deb", deb.sha256));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{} is not cached ({e}): build the images first (`cargo xtask images`)", path.display())
    });
    (deb, bytes)
}

#[test]
fn a_tampered_cached_deb_is_refused_naming_the_package_and_the_expected_hash() {
    let (deb, mut bytes) = small_cached_deb();
    let cache = tempfile::tempdir().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(cache.path().join(format!("{}.deb", deb.sha256)), &bytes).unwrap();
    let error = format!("{:#}", fetch::fetch(&deb, cache.path()).unwrap_err());
    assert!(error.contains(&deb.name), "{error}");
    assert!(error.contains(&deb.version), "{error}");
    assert!(error.contains(&format!("expects {}", deb.sha256)), "{error}");
    assert!(error.contains("cached copy"), "{error}");
}

#[test]
fn an_unreachable_deb_is_refused_naming_the_package_and_the_expected_hash() {
    let (mut deb, _) = small_cached_deb();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    deb.url = format!("http://{closed}/debian/pool/{}", deb.file);
    let cache = tempfile::tempdir().unwrap();
    let error = format!("{:#}", fetch::fetch(&deb, cache.path()).unwrap_err());
    assert!(error.contains(&deb.name) && error.contains("cannot download"), "{error}");
    assert!(error.contains(&format!("expected SHA-256 {}", deb.sha256)), "{error}");
    assert!(error.contains("cargo xtask layers lock"), "{error}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "nothing is cached from a failed fetch");
}

#[test]
fn a_served_deb_with_other_bytes_is_refused_and_not_cached() {
    // A real HTTP server on loopback serving the package with one byte changed.
    let (mut deb, mut bytes) = small_cached_deb();
    bytes[0] ^= 0x01;
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    deb.url = format!("http://{}/{}", server.local_addr().unwrap(), deb.file);
    let serve = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = server.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).unwrap();
        let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", bytes.len());
        stream.write_all(header.as_bytes()).unwrap();
        stream.write_all(&bytes).unwrap();
    });
    let cache = tempfile::tempdir().unwrap();
    let error = format!("{:#}", fetch::fetch(&deb, cache.path()).unwrap_err());
    serve.join().unwrap();
    assert!(error.contains(&deb.name) && error.contains(&format!("expects {}", deb.sha256)), "{error}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "a refused download was cached");
}

#[test]
fn a_layer_missing_from_the_lock_names_the_fix() {
    let error = lock().packages("no-such-layer", "amd64").unwrap_err().to_string();
    assert!(error.contains("no-such-layer") && error.contains("cargo xtask layers lock"), "{error}");
}

#[test]
fn every_debian_layer_is_locked_for_both_architectures_and_extracts_deterministically() {
    let dir = xtask::shell::root().join("layers");
    let specs = xtask::layers::debian_specs(&dir).unwrap();
    assert!(specs.len() >= 4, "{specs:?}");
    let lock = lock();
    for name in specs.keys() {
        for arch in ["amd64", "arm64"] {
            let debs = lock.packages(name, arch).unwrap();
            assert!(!debs.is_empty(), "{name} {arch}");
            for d in debs {
                assert!(d.architecture == arch || d.architecture == "all", "{name} {arch}: {}", d.file);
                assert_eq!(d.sha256.len(), 64, "{}", d.file);
                // The URL is Debian's pool, and its last segment is exactly the locked file.
                assert!(
                    ["http://deb.debian.org/debian/pool/", "http://deb.debian.org/debian-security/pool/"]
                        .iter()
                        .any(|pool| d.url.starts_with(pool)),
                    "{}",
                    d.url
                );
                let last = d.url.rsplit('/').next().unwrap();
                let decoded = [("%2b", "+"), ("%2B", "+"), ("%7e", "~"), ("%7E", "~"), ("%3a", ":"), ("%3A", ":")]
                    .iter()
                    .fold(last.to_string(), |s, (from, to)| s.replace(from, to));
                assert_eq!(decoded, d.file, "{}", d.url);
            }
        }
        let a = xtask::layers::load(&dir, name, "amd64").unwrap();
        let b = xtask::layers::load(&dir, name, "amd64").unwrap();
        assert_eq!(a.tar().unwrap(), b.tar().unwrap(), "{name}: two extractions differ");
        assert!(a.entries.iter().all(|e| !e.path.starts_with("usr/share/man/")), "{name}: man pages kept");
        assert!(a.entries.iter().all(|e| e.mode & 0o6000 == 0), "{name}: setuid or setgid kept");
        assert!(!a.packages.is_empty(), "{name}: no packages recorded for the SBOM");
    }
}
