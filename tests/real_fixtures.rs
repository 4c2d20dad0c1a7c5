//! `scan` and `verify` against data-roots made by a real dockerd 20.10.24
//! (`fixtures/`, made by `scripts/make-fixtures`), compared with what that
//! daemon printed (`fixtures/*/docker-outputs/`).

use std::collections::BTreeSet;
use std::fs;

use crate::common::{
    daemon_errors, failure_messages, fixture, fixture_dir, json_run, recorded, volmig,
};
use predicates::prelude::*;

const CONTAINERS: [&str; 12] = [
    "anon", "bindm", "bindv", "named", "named2", "plain", "propag", "readonly", "tmpfs", "vfrom",
    "withopts", "zmode",
];

/// Host paths the fixture's binds use; the comparison below holds only
/// while they are absent, as on the machine that recorded the outputs.
fn host_paths_absent() {
    for p in [
        "/var/tmp/volmig-fixture/gone-m",
        "/var/tmp/volmig-fixture/source/root",
    ] {
        assert!(
            !std::path::Path::new(p).exists(),
            "{p} exists on this host: remove it, the fixtures assume it does not"
        );
    }
}

#[test]
fn lost_volumes_every_failure_matches_what_dockerd_printed() {
    host_paths_absent();
    let root = fixture("lost-volumes");
    let (code, doc) = json_run(
        volmig()
            .arg("--data-root")
            .arg(root.path())
            .args(["verify", "--all"]),
    );
    assert_eq!(code, 1);
    assert_eq!(doc["ok"], false);
    for name in CONTAINERS {
        let seen = daemon_errors(&recorded("lost-volumes", &format!("start-{name}.txt")));
        let predicted = failure_messages(&doc, name);
        if name == "propag" {
            // Its bind source existed when the daemon ran; here it does not.
            assert!(seen.is_empty());
            continue;
        }
        // dockerd printed one failure per start, in Go map order, over 64
        // starts: the set it printed is every failure, which we list at once.
        assert_eq!(predicted, seen, "container {name}");
    }
}

#[test]
fn lost_volumes_text_names_each_missing_volume() {
    let root = fixture("lost-volumes");
    volmig()
        .arg("--data-root")
        .arg(root.path())
        .args(["verify", "--all"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("FAIL /data <- volume data1"))
        .stdout(predicate::str::contains("error: get data1: no such volume"))
        .stdout(predicate::str::contains("error: get rovol: no such volume"))
        .stdout(predicate::str::contains(
            "container plain 183061e4dbdd starts",
        ));
    // The shipped fixture itself, as the README's quick start runs it.
    volmig()
        .arg("--data-root")
        .arg(fixture_dir("lost-volumes"))
        .args(["verify", "--all", "-q"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "named: /data: get data1: no such volume",
        ));
}

#[test]
fn lost_volumes_scan_reports_orphan_records() {
    let root = fixture("lost-volumes");
    let (code, doc) = json_run(volmig().arg("--data-root").arg(root.path()).arg("scan"));
    assert_eq!(code, 0, "a data-root without volumes still starts");
    let orphans: BTreeSet<String> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "metadata-record-orphan")
        .map(|f| {
            f["message"]
                .as_str()
                .unwrap()
                .split('`')
                .nth(1)
                .unwrap()
                .to_string()
        })
        .collect();
    // metadata.db still holds 7 records; the daemon deleted them all at start
    // (docker-outputs/metadata-db.after.tsv is empty of volumes).
    assert_eq!(orphans.len(), 7, "{orphans:?}");
    assert!(orphans.contains("data1"));
}

#[test]
fn source_verifies_except_the_binds_whose_sources_are_gone() {
    host_paths_absent();
    let root = fixture("source");
    let (code, doc) = json_run(
        volmig()
            .arg("--data-root")
            .arg(root.path())
            .args(["verify", "--all"]),
    );
    assert_eq!(code, 1);
    let failing: Vec<&str> = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failing, vec!["bindm", "propag"]);
    assert_eq!(
        failure_messages(&doc, "bindm"),
        daemon_errors(&recorded("lost-volumes", "start-bindm.txt"))
    );
    let bindv = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bindv")
        .unwrap();
    let gone = bindv["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/gone")
        .unwrap();
    assert_eq!(
        gone["status"], "warning",
        "-v bind sources are silently re-created"
    );
    assert_eq!(gone["findings"][0]["kind"], "bind-source-created-empty");
    let tmpfs = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tmpfs")
        .unwrap();
    assert_eq!(tmpfs["mounts"][0]["status"], "skipped");
}

#[test]
fn moved_source_on_2010_fails_where_dockerd_failed() {
    host_paths_absent();
    let root = fixture("source");
    let (code, doc) = json_run(volmig().arg("--data-root").arg(root.path()).args([
        "verify",
        "--all",
        "--daemon-version",
        "20.10.24",
    ]));
    assert_eq!(code, 1);
    for name in [
        "named", "named2", "withopts", "readonly", "zmode", "anon", "vfrom", "bindv", "tmpfs",
        "plain",
    ] {
        let seen = daemon_errors(&recorded("source", &format!("moved-root/start-{name}.txt")));
        let predicted: BTreeSet<String> = failure_messages(&doc, name);
        // The lstat path is the first missing component on the host that
        // runs the check; compare up to it.
        let cut = |s: &String| s.split(": lstat ").next().unwrap().to_string();
        assert_eq!(
            predicted.iter().map(cut).collect::<BTreeSet<_>>(),
            seen.iter().map(cut).collect::<BTreeSet<_>>(),
            "container {name}"
        );
    }
    let (_, current) = json_run(
        volmig()
            .arg("--data-root")
            .arg(root.path())
            .args(["verify", "named"]),
    );
    assert_eq!(
        current["ok"], true,
        "current dockerd recomputes the volume path"
    );
}

#[test]
fn source_scan_reads_labels_and_options_as_docker_volume_inspect_shows_them() {
    let root = fixture("source");
    let (code, doc) = json_run(volmig().arg("--data-root").arg(root.path()).arg("scan"));
    assert_eq!(code, 0);
    let volumes = doc["volumes"].as_object().unwrap();
    assert_eq!(volumes.len(), 7);
    let mut compared = 0;
    for entry in fs::read_dir(fixture_dir("source").join("docker-outputs")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let Some(name) = file
            .strip_prefix("volume-")
            .and_then(|f| f.strip_suffix(".json"))
        else {
            continue;
        };
        let inspect: serde_json::Value = serde_json::from_str(&recorded("source", &file)).unwrap();
        let inspect = &inspect[0];
        let ours = &volumes[name];
        let empty = serde_json::json!({});
        let or_empty = |v: &serde_json::Value| {
            if v.is_null() {
                empty.clone()
            } else {
                v.clone()
            }
        };
        assert_eq!(
            or_empty(&ours["labels"]),
            or_empty(&inspect["Labels"]),
            "labels of {name}"
        );
        assert_eq!(
            or_empty(&ours["create_options"]),
            or_empty(&inspect["Options"]),
            "options of {name}"
        );
        assert_eq!(ours["driver"], inspect["Driver"]);
        compared += 1;
    }
    assert_eq!(compared, 7);
    assert_eq!(
        volumes["data1"]["labels"]["com.docker.compose.project"],
        "shop"
    );
    assert_eq!(volumes["tmpfsvol"]["options"]["MountType"], "tmpfs");
    assert_eq!(volumes["tmpfsvol"]["options"]["MountDevice"], "tmpfs");
}

#[test]
fn bad_opts_is_predicted_to_stop_the_daemon_with_its_message() {
    for name in ["bad-opts", "bad-opts-empty"] {
        let daemon = recorded(name, "daemon.txt");
        let expected = daemon
            .lines()
            .find(|l| l.contains("error while unmarshaling"))
            .unwrap();
        let root = fixture(name);
        let (code, doc) = json_run(volmig().arg("--data-root").arg(root.path()).arg("scan"));
        assert_eq!(code, 1, "{name}");
        let fatal: Vec<&str> = doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == "fatal")
            .map(|f| f["message"].as_str().unwrap())
            .collect();
        assert_eq!(fatal, vec![expected], "{name}");
        let (code, doc) = json_run(
            volmig()
                .arg("--data-root")
                .arg(root.path())
                .args(["verify", "--all"]),
        );
        assert_eq!(code, 1);
        assert_eq!(doc["daemon"][0]["message"], expected);
        assert_eq!(
            doc["containers"][0]["findings"][0]["kind"],
            "daemon-will-not-start"
        );
    }
}

#[test]
fn userns_subtree_is_named_and_selectable() {
    let root = fixture("userns");
    volmig()
        .arg("--data-root")
        .arg(root.path())
        .args(["verify", "uc"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("No such container: uc"))
        .stderr(predicate::str::contains("--userns-remap 100000:100000"));
    let (code, doc) = json_run(volmig().arg("--data-root").arg(root.path()).args([
        "verify",
        "--all",
        "--userns-remap",
        "100000:100000",
    ]));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["containers"][0]["name"], "uc");
    // The same volume seen by a daemon remapped to another range: _data is
    // owned by the old subuid range.
    let other = root.path().join("200000.200000");
    fs::rename(root.path().join("100000.100000"), &other).unwrap();
    let (_, doc) = json_run(volmig().arg("--data-root").arg(root.path()).args([
        "scan",
        "--userns-remap",
        "200000:200000",
    ]));
    let f = doc["volumes"]["uvol"]["findings"].as_array().unwrap();
    assert!(
        f.iter().any(|f| f["kind"] == "userns-owner-mismatch"),
        "{f:?}"
    );
}
