//! Issue 7 item 9 and friends: inputs built to hang volmig or exhaust its
//! memory. Each test runs the real binary and asserts it ends in time,
//! with one of its exit codes, under 64 MiB of peak RSS (the child's own,
//! from `wait4`), and with a message that names the culprit.

mod common;
mod measured;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{volume_mount, FakeDataRoot};
use measured::{run, volmig, Measured};
use serde_json::Value;

const ID: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";

/// `/dev/zero` itself (1:5), made in place: we run as root.
fn mknod_zero(path: &Path) {
    let _ = fs::remove_file(path);
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
}

fn mkfifo(path: &Path) {
    let _ = fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A data-root with one container mounting volume `data1`.
fn one_volume() -> FakeDataRoot {
    let mut root = FakeDataRoot::new();
    let path = root.path();
    root.volume("data1", &[("a", "b")])
        .container(ID, "web", &[volume_mount("data1", "/data", &path)])
        .write_db();
    root
}

fn json_of(m: &Measured) -> Value {
    serde_json::from_str(&m.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", m.stdout, m.stderr))
}

fn kinds(findings: &Value) -> Vec<String> {
    findings
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

fn scan(root: &FakeDataRoot) -> Measured {
    let mut cmd = volmig(&root.path());
    cmd.args(["--json", "scan"]);
    let m = run(cmd, Duration::from_secs(20));
    m.assert_sane("scan");
    m
}

fn verify_all(root: &FakeDataRoot) -> Measured {
    let mut cmd = volmig(&root.path());
    cmd.args(["--json", "verify", "--all"]);
    let m = run(cmd, Duration::from_secs(20));
    m.assert_sane("verify --all");
    m
}

#[test]
fn a_fifo_or_dev_zero_as_opts_json_is_fatal_not_a_hang() {
    let root = one_volume();
    let opts = root.path().join("volumes/data1/opts.json");
    for make in [mkfifo as fn(&Path), mknod_zero] {
        make(&opts);
        for m in [scan(&root), verify_all(&root)] {
            assert_eq!(m.code, Some(1), "{}", m.stdout);
            assert!(m.stdout.contains("opts-blocking"), "{}", m.stdout);
            assert!(m.stdout.contains("opts.json"), "{}", m.stdout);
        }
    }
}

#[test]
fn a_fifo_or_dev_zero_as_metadata_db_is_fatal_not_a_hang() {
    let root = one_volume();
    let db = root.path().join("volumes/metadata.db");
    for make in [mkfifo as fn(&Path), mknod_zero] {
        make(&db);
        let m = scan(&root);
        assert_eq!(m.code, Some(1), "{}", m.stdout);
        let doc = json_of(&m);
        assert!(
            kinds(&doc["findings"]).contains(&"metadata-db-unopenable".to_string()),
            "{doc}"
        );
        verify_all(&root);
    }
}

#[test]
fn a_fifo_or_dev_zero_as_config_v2_json_fails_that_container_only() {
    let mut root = one_volume();
    let path = root.path();
    let other = "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0";
    root.container(other, "db", &[volume_mount("data1", "/d", &path)]);
    for file in ["config.v2.json", "hostconfig.json"] {
        for make in [mkfifo as fn(&Path), mknod_zero] {
            let target = path.join("containers").join(ID).join(file);
            make(&target);
            let m = verify_all(&root);
            assert_eq!(m.code, Some(1), "{}", m.stdout);
            assert!(m.stdout.contains("not a regular file"), "{}", m.stdout);
            let doc = json_of(&m);
            let db = doc["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "db")
                .unwrap_or_else(|| panic!("db not verified: {doc}"));
            assert_eq!(db["ok"], true, "{doc}");
            fs::remove_file(&target).unwrap();
            root.container(ID, "web", &[volume_mount("data1", "/data", &path)]);
        }
    }
}

#[test]
fn a_sparse_1_tib_metadata_db_is_refused_before_it_is_mapped() {
    let root = one_volume();
    let db = root.path().join("volumes/metadata.db");
    fs::remove_file(&db).unwrap();
    fs::File::create(&db).unwrap().set_len(1 << 40).unwrap();
    let m = scan(&root);
    assert!(m.stdout.contains("metadata-db-unchecked"), "{}", m.stdout);
}

#[test]
fn a_huge_opts_json_is_unreadable_not_read_whole() {
    let root = one_volume();
    let opts = root.path().join("volumes/data1/opts.json");
    fs::File::create(&opts).unwrap().set_len(1 << 40).unwrap();
    let m = scan(&root);
    assert!(m.stdout.contains("opts-unreadable"), "{}", m.stdout);
}

#[test]
fn a_0_byte_metadata_db_is_not_fatal() {
    // dockerd 20.10.24 starts on it: bbolt initializes the empty file.
    let root = one_volume();
    fs::write(root.path().join("volumes/metadata.db"), b"").unwrap();
    let m = scan(&root);
    assert_eq!(m.code, Some(0), "{}", m.stdout);
    let doc = json_of(&m);
    assert!(
        kinds(&doc["findings"]).contains(&"metadata-db-empty".to_string()),
        "{doc}"
    );
    let m = verify_all(&root);
    assert_eq!(m.code, Some(0), "{}", m.stdout);
}

#[test]
fn verify_all_does_not_panic_on_a_container_directory_named_a_alpha_x() {
    let root = FakeDataRoot::new();
    let dir = root.path().join("containers/aααααααx");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config.v2.json"), r#"{"ID":"aααααααx"}"#).unwrap();
    for quiet in [false, true] {
        let mut cmd = volmig(&root.path());
        cmd.args(["verify", "--all"]);
        if quiet {
            cmd.arg("-q");
        }
        let m = run(cmd, Duration::from_secs(20));
        m.assert_sane("verify --all");
    }
    let m = verify_all(&root);
    assert!(m.stdout.contains("aααααααx"), "{}", m.stdout);
}
