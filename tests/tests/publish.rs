//! `cargo xtask publish` against a real registry (Debian's `docker-registry` on loopback): every
//! image and tag arrives with the digests of the build, skopeo reads them back unchanged, Docker
//! pulls by digest, the signatures fetched from the registry verify with openssl, SBOMs are
//! found through the referrers tag, and a second push uploads nothing.

use std::path::{Path, PathBuf};

use stella_e2e::registry::{LocalRegistry, assert_holds};
use xtask::assemble::Built;

fn layout() -> PathBuf {
    xtask::images::default_out()
}

#[test]
fn publish_pushes_every_image_with_its_digests_signatures_and_sboms() {
    let built = Built::read(&layout()).expect("the images are built");
    let registry = LocalRegistry::new();
    let to_prefix = "stella";
    let pushed = xtask::registry::push_layout(&layout(), &registry.host, to_prefix, Default::default(), &|_| {})
        .expect("publish");
    assert!(pushed.blobs_uploaded > 0 && pushed.manifests >= built.images.len() * 3, "{pushed:?}");

    // Signed builds (`cargo xtask test` signs): the signatures are checked too.
    let key = std::env::var_os(xtask::sign::KEY_ENV).map(|k| Path::new(&k).with_file_name("cosign.pub"));
    assert_holds(&built, &registry.host, to_prefix, key.as_deref());

    // Pushing again uploads nothing and names the same digests.
    let again =
        xtask::registry::push_layout(&layout(), &registry.host, to_prefix, Default::default(), &|_| {}).unwrap();
    assert_eq!(again.blobs_uploaded, 0, "{again:?}");
    // ...and puts no manifest or tag: each is found by a HEAD with the same digest.
    assert_eq!(again.manifests, 0, "{again:?}");
    assert_eq!(again.manifests_present, pushed.manifests + pushed.tags.len(), "{again:?}");
    assert_eq!(again.tags, pushed.tags);

    // Something the site attached since (here: one more entry in a referrers index) survives a
    // later push of the same images: attachments are merged, never dropped.
    let image = &built.images[0];
    let (platform, p) = image.platforms.iter().next().unwrap();
    let tag = p.manifest.replace(':', "-");
    let url = format!("http://{}/v2/{to_prefix}/{}/manifests/{tag}", registry.host, image.name);
    let fetch = || {
        stella_e2e::run(
            std::process::Command::new("curl")
                .args(["-sf", "-H", "accept: application/vnd.oci.image.index.v1+json"])
                .arg(&url),
        )
    };
    let mut index: serde_json::Value = serde_json::from_str(&fetch()).unwrap();
    let site_entry = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image.platforms.values().last().unwrap().manifest,
        "size": 1,
        "artifactType": "application/vnd.example.site-approval"
    });
    index["manifests"].as_array_mut().unwrap().push(site_entry);
    let put = std::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H", "content-type: application/vnd.oci.image.index.v1+json", "--data-binary"])
        .arg(serde_json::to_string(&index).unwrap())
        .arg(&url)
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    xtask::registry::push_layout(&layout(), &registry.host, to_prefix, Default::default(), &|_| {}).unwrap();
    let after = fetch();
    assert!(
        after.contains("application/vnd.example.site-approval"),
        "{} {platform}: the site's entry was dropped",
        image.name
    );
    assert!(after.contains(xtask::sbom::MEDIA_TYPE), "ours is still there");
}

#[test]
fn publish_authenticates_to_a_registry_that_asks_for_credentials() {
    let built = Built::read(&layout()).expect("the images are built");
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    stella_e2e::run(std::process::Command::new("htpasswd").args(["-Bbc"]).arg(&htpasswd).args(["ci", "s3cret"]));
    let registry = LocalRegistry::with(None, Some(&htpasswd));
    let options = |password: Option<&str>| xtask::registry::Options {
        credentials: password
            .map(|p| stella_distribution::auth::Credentials { username: "ci".into(), password: p.into() }),
        ..Default::default()
    };
    let refused =
        xtask::registry::push_layout(&layout(), &registry.host, "stella", options(None), &|_| {}).unwrap_err();
    assert!(refused.to_string().contains("STELLA_REGISTRY_USERNAME"), "{refused}");
    let wrong =
        xtask::registry::push_layout(&layout(), &registry.host, "stella", options(Some("wrong")), &|_| {}).unwrap_err();
    assert!(wrong.to_string().contains("401"), "{wrong}");
    let pushed =
        xtask::registry::push_layout(&layout(), &registry.host, "stella", options(Some("s3cret")), &|_| {}).unwrap();
    assert!(pushed.blobs_uploaded > 0, "{pushed:?}");
    let api = built.images.iter().find(|i| i.name == "stella-api").unwrap();
    let inspect = stella_e2e::registry::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "ci:s3cret",
        &format!("docker://{}/stella/stella-api:{}", registry.host, built.tags[0]),
    ]);
    assert!(inspect.contains(&api.digest), "{inspect}");
}

#[test]
fn publish_gets_bearer_tokens_from_the_registrys_token_service() {
    let built = Built::read(&layout()).expect("the images are built");
    let dir = tempfile::tempdir().unwrap();
    let sh =
        |script: &str| stella_e2e::run(std::process::Command::new("sh").arg("-c").arg(script).current_dir(dir.path()));
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=stella-token-issuer \
        -keyout token.key -out token.pem 2>/dev/null");
    let port = stella_e2e::free_port();
    let mut server = std::process::Command::new("python3")
        .arg(stella_e2e::root().join("tests/fixtures/token_server.py"))
        .arg(port.to_string())
        .arg(dir.path().join("token.key"))
        .arg(dir.path().join("token.pem"))
        .args(["stella-test-issuer", "ci:t0ken"])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed().as_secs() < 20, "the token service did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let realm = format!("http://127.0.0.1:{port}/token");
    let registry = LocalRegistry::with_token_auth(
        &realm,
        "stella-test-registry",
        "stella-test-issuer",
        &dir.path().join("token.pem"),
    );
    let options = |password: &str| xtask::registry::Options {
        credentials: Some(stella_distribution::auth::Credentials { username: "ci".into(), password: password.into() }),
        ..Default::default()
    };
    let refused = xtask::registry::push_layout(&layout(), &registry.host, "stella", options("wrong"), &|_| {});
    let pushed = xtask::registry::push_layout(&layout(), &registry.host, "stella", options("t0ken"), &|_| {});
    let _ = server.kill();
    let _ = server.wait();
    let refused = refused.unwrap_err().to_string();
    assert!(refused.contains("credentials") || refused.contains("401"), "{refused}");
    let pushed = pushed.unwrap();
    assert!(pushed.blobs_uploaded > 0 && pushed.tags.len() >= built.images.len(), "{pushed:?}");
    // Shared layers went into the second repository by cross-repository mount, which needs a
    // token for both repositories.
    assert!(pushed.blobs_mounted > 0, "{pushed:?}");
}

/// The Helm chart as an OCI artifact (`cargo xtask chart`): pushed with the images' code, pulled
/// by Helm itself (its Go SDK through helm-python-sdk) as `helm pull oci://...` does, byte for byte
/// the archive we packaged, with the metadata Helm reads from it equal to the artifact's config;
/// packaged twice, the same bytes; signed, the cosign signature pulled back verifies with openssl
/// and cosign v3's bundle is among its referrers.
#[test]
fn the_chart_is_an_oci_artifact_that_helm_pulls_and_that_is_signed() {
    let root = stella_e2e::root();
    let work = tempfile::tempdir().unwrap();
    let key_file = std::env::var_os(xtask::sign::KEY_ENV).map(PathBuf::from);
    let key = key_file.as_deref().map(|k| xtask::sign::read_key(k).unwrap());
    let chart_dir = xtask::chart::default_dir(&root);
    let out = work.path().join("chart");
    let written = xtask::chart::write(&chart_dir, &layout(), &out, key.as_ref()).unwrap();
    // A copy elsewhere (other path, file times, umask) packages to the same bytes.
    let copy = work.path().join("elsewhere/stella");
    stella_e2e::copy_dir(&chart_dir, &copy);
    let again = xtask::chart::write(&copy, &layout(), &work.path().join("again"), key.as_ref()).unwrap();
    assert_eq!(again.digest, written.digest, "packaging the same chart twice gave two artifacts");
    let index = |d: &Path| std::fs::read(d.join("index.json")).unwrap();
    assert_eq!(index(&out), index(&work.path().join("again")));
    // GNU tar lists what Helm will unpack: the chart, without what .helmignore names.
    let archive = out.join("blobs/sha256").join(&written.archive.digest[7..]);
    let listed = stella_e2e::run(std::process::Command::new("tar").arg("-tzf").arg(&archive));
    for wanted in
        ["stella/Chart.yaml", "stella/values.yaml", "stella/values.schema.json", "stella/templates/deployment.yaml"]
    {
        assert!(listed.lines().any(|l| l == wanted), "{wanted} is not in the chart archive:\n{listed}");
    }
    assert!(!listed.lines().any(|l| l.starts_with("stella/ci/")), "ci/ is in .helmignore:\n{listed}");

    let registry = LocalRegistry::new();
    xtask::registry::push_layout(&out, &registry.host, "stella", Default::default(), &|_| {}).unwrap();
    let pulled = work.path().join("pulled");
    std::fs::create_dir(&pulled).unwrap();
    let reference = format!("oci://{}/stella/charts/stella", registry.host);
    let text = stella_e2e::run(
        std::process::Command::new("python3")
            .arg(root.join("tests/fixtures/helm_chart.py"))
            .args(["pull", &reference, &written.tag])
            .arg(&pulled),
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let archive = PathBuf::from(report["archive"].as_str().unwrap());
    assert_eq!(stella_e2e::registry::sha256_file(&archive), written.archive.digest, "Helm pulled other bytes");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("blobs/sha256").join(&written.digest[7..])).unwrap()).unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("blobs/sha256").join(&manifest["config"]["digest"].as_str().unwrap()[7..])).unwrap(),
    )
    .unwrap();
    for (field, value) in config.as_object().unwrap() {
        assert_eq!(&report["metadata"][field], value, "Chart.yaml and the artifact's config disagree on {field}");
    }
    assert_eq!(report["metadata"]["version"], written.tag.as_str());
    // Helm reads the same chart from the archive as from the committed directory.
    let committed = stella_e2e::run(
        std::process::Command::new("python3")
            .arg(root.join("tests/fixtures/helm_chart.py"))
            .arg("metadata")
            .arg(&chart_dir),
    );
    assert_eq!(serde_json::from_str::<serde_json::Value>(&committed).unwrap(), report["metadata"]);

    let Some(key_file) = key_file else { return };
    let repository = format!("{}/stella/charts/stella", registry.host);
    stella_e2e::registry::assert_signed(&repository, &written.digest, &key_file.with_file_name("cosign.pub"));
    let referrers: serde_json::Value = serde_json::from_str(&stella_e2e::registry::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{repository}:{}", written.digest.replace(':', "-")),
    ]))
    .unwrap();
    let types: Vec<&str> =
        referrers["manifests"].as_array().unwrap().iter().filter_map(|m| m["artifactType"].as_str()).collect();
    assert!(types.contains(&xtask::sigstore::BUNDLE), "the chart's referrers: {types:?}");
}
