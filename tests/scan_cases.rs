//! `volmig scan` on data-roots built in a tempdir: the daemon-fatal cases,
//! the warnings, and bad input.

use std::fs;

use crate::common::{json_run, volmig, FakeDataRoot};
use predicates::prelude::*;

fn findings(doc: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut push = |f: &serde_json::Value| {
        out.push((
            f["severity"].as_str().unwrap().to_string(),
            f["kind"].as_str().unwrap().to_string(),
            f["message"].as_str().unwrap().to_string(),
        ))
    };
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(&mut push);
    for v in doc["volumes"].as_object().unwrap().values() {
        v["findings"].as_array().unwrap().iter().for_each(&mut push);
    }
    out
}

#[test]
fn malformed_opts_json_stops_the_daemon_with_its_own_text() {
    for (content, go_error) in [
        ("", "unexpected end of JSON input"),
        (r#"{"MountType":"tmpfs""#, "unexpected end of JSON input"),
        (r#"{"Quota":5}"#, "json: cannot unmarshal number into Go struct field optsConfig.Quota of type quota.Quota"),
    ] {
        let mut root = FakeDataRoot::new();
        root.volume("broken", &[]).opts_json("broken", content).write_db();
        let (code, doc) = json_run(root.volmig().arg("scan"));
        assert_eq!(code, 1, "{content}");
        assert_eq!(doc["ok"], false);
        let fatal: Vec<_> = findings(&doc).into_iter().filter(|f| f.0 == "fatal").collect();
        assert_eq!(fatal.len(), 1, "{fatal:?}");
        assert_eq!(
            fatal[0].2,
            format!("failed to start daemon: error setting up default driver: error while unmarshaling volume options for volume: broken: {go_error}")
        );
        let (_, doc) = json_run(root.volmig().args(["scan", "--daemon-version", "17.06"]));
        assert!(findings(&doc).iter().any(|f| f.2
            == format!("Error starting daemon: error while unmarshaling volume options for volume: broken: {go_error}")));
    }
}

#[test]
fn every_fatal_opts_json_is_listed() {
    let mut root = FakeDataRoot::new();
    root.volume("b1", &[])
        .opts_json("b1", "")
        .volume("b2", &[])
        .opts_json("b2", "[")
        .write_db();
    let (code, doc) = json_run(root.volmig().arg("scan"));
    assert_eq!(code, 1);
    assert_eq!(findings(&doc).iter().filter(|f| f.0 == "fatal").count(), 2);
}

#[test]
fn volumes_dir_that_is_a_file_is_fatal() {
    let root = FakeDataRoot::new();
    fs::remove_dir_all(root.path().join("volumes")).unwrap();
    fs::write(root.path().join("volumes"), b"oops").unwrap();
    let (code, doc) = json_run(root.volmig().arg("scan"));
    assert_eq!(code, 1);
    let f = findings(&doc);
    assert_eq!(f[0].1, "volumes-dir-unusable");
    assert!(
        f[0].2
            .starts_with("failed to start daemon: error setting up default driver: mkdir "),
        "{f:?}"
    );
}

#[test]
fn corrupt_metadata_db_is_fatal() {
    let mut root = FakeDataRoot::new();
    root.volume("v1", &[]);
    fs::write(root.path().join("volumes/metadata.db"), vec![0x5a; 40000]).unwrap();
    let (code, doc) = json_run(root.volmig().arg("scan"));
    assert_eq!(code, 1);
    let f = findings(&doc);
    let fatal = f.iter().find(|f| f.1 == "metadata-db-unopenable").unwrap();
    assert!(
        fatal.2.starts_with(&format!(
            "failed to start daemon: error while opening volume store metadata database ({}): ",
            root.path().join("volumes/metadata.db").display()
        )),
        "{fatal:?}"
    );
}

#[test]
fn a_running_daemon_is_reported_not_waited_for() {
    let mut root = FakeDataRoot::new();
    root.volume("v1", &[("k", "v")]).write_db();
    let db = fs::File::options()
        .read(true)
        .write(true)
        .open(root.path().join("volumes/metadata.db"))
        .unwrap();
    let _lock = nix::fcntl::Flock::lock(db, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let (code, doc) = json_run(
        root.volmig()
            .arg("scan")
            .timeout(std::time::Duration::from_secs(20)),
    );
    assert_eq!(code, 0);
    assert!(findings(&doc)
        .iter()
        .any(|f| f.1 == "daemon-running" && f.0 == "warning"));
}

#[test]
fn warnings_orphan_record_invalid_name_symlink_unreadable_opts() {
    let mut root = FakeDataRoot::new();
    root.volume("ok1", &[])
        .record("orphan", "local", &[("com.docker.compose.project", "shop")]);
    fs::create_dir_all(root.path().join("volumes/x/_data")).unwrap(); // one-letter name
    std::os::unix::fs::symlink("ok1", root.path().join("volumes/alias")).unwrap();
    fs::create_dir_all(root.path().join("volumes/odd/_data")).unwrap();
    fs::create_dir_all(root.path().join("volumes/odd/opts.json")).unwrap(); // unreadable as a file
    root.write_db();
    let (code, doc) = json_run(root.volmig().arg("scan"));
    assert_eq!(code, 0, "none of these stops the daemon");
    let kinds: Vec<String> = findings(&doc).into_iter().map(|f| f.1).collect();
    for expected in [
        "metadata-record-orphan",
        "volume-name-invalid",
        "volume-symlink-ignored",
        "opts-unreadable",
        "metadata-record-missing",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} not in {kinds:?}"
        );
    }
    assert!(
        doc["volumes"].get("alias").is_none(),
        "symlinks are not volumes"
    );
    assert_eq!(doc["volumes"]["ok1"]["data"]["mode"], "0755");
}

#[test]
fn text_output_lists_volumes_labels_and_verdict() {
    let mut root = FakeDataRoot::new();
    root.volume("data1", &[("com.docker.compose.project", "shop")])
        .volume("cache", &[])
        .opts_json(
            "cache",
            r#"{"MountType":"tmpfs","MountOpts":"size=1m","MountDevice":"tmpfs"}"#,
        )
        .write_db();
    root.volmig()
        .arg("scan")
        .assert()
        .success()
        .stdout(predicate::str::contains("2 volumes dockerd would load"))
        .stdout(predicate::str::contains(
            "labels: com.docker.compose.project=shop",
        ))
        .stdout(predicate::str::contains(
            "opts: type=tmpfs device=tmpfs o=size=1m",
        ))
        .stdout(predicate::str::contains("dockerd will start"));
    root.volmig()
        .args(["scan", "-q"])
        .assert()
        .success()
        .stdout("");
}

#[test]
fn userns_remap_subtrees_are_detected_and_selected() {
    let mut root = FakeDataRoot::new();
    let sub = root.path().join("100000.100000/volumes/v1/_data");
    fs::create_dir_all(&sub).unwrap();
    std::os::unix::fs::chown(&sub, Some(0), Some(0)).unwrap();
    root.write_db();
    let (_, doc) = json_run(root.volmig().arg("scan"));
    assert!(findings(&doc)
        .iter()
        .any(|f| f.1 == "userns-remap-subtree" && f.2.contains("100000.100000")));
    let (code, doc) = json_run(
        root.volmig()
            .args(["scan", "--userns-remap", "100000:100000"]),
    );
    assert_eq!(code, 0);
    assert!(doc["volumes"]["v1"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["kind"] == "userns-owner-mismatch"));
    root.volmig()
        .args(["scan", "--userns-remap", "200000:200000"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no userns-remap subtree `200000.200000`",
        ))
        .stderr(predicate::str::contains("100000:100000"));
}

#[test]
fn bad_input_exits_2_and_names_the_path() {
    volmig()
        .args(["--data-root", "/nonexistent/volmig-root", "scan"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "`/nonexistent/volmig-root` does not exist",
        ));
    let file = tempfile::NamedTempFile::new().unwrap();
    volmig()
        .arg("--data-root")
        .arg(file.path())
        .arg("verify")
        .arg("--all")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a directory"));
    volmig()
        .args(["scan", "--daemon-version", "banana"])
        .assert()
        .code(2);
    volmig().args(["verify"]).assert().code(2);
    volmig()
        .args(["--data-root", "/tmp", "verify", "--all", "x"])
        .assert()
        .code(2);
}

#[test]
fn env_var_sets_the_data_root() {
    let mut root = FakeDataRoot::new();
    root.volume("fromenv", &[]).write_db();
    let out = volmig()
        .env("VOLMIG_DATA_ROOT", root.path())
        .args(["scan", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["volumes"].get("fromenv").is_some());
}

#[test]
fn closed_stdout_is_not_an_error() {
    let mut root = FakeDataRoot::new();
    for i in 0..300 {
        root.volume(&format!("vol{i:03}"), &[]);
    }
    root.write_db();
    let bin = assert_cmd::cargo::cargo_bin("volmig");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --data-root '{}' scan | head -c 10 >/dev/null; exit ${{PIPESTATUS:-0}}",
            bin.display(),
            root.path().display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' --data-root '{}' scan | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}",
            bin.display(),
            root.path().display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
