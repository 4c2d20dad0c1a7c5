//! Each case of the spec's checklist that a real fixture cannot hold, on a
//! data-root built in a tempdir. Names follow the checklist.

use std::fs;

use crate::common::{bind_mount, container_findings, json_run, volume_mount, FakeDataRoot};
use predicates::prelude::*;
use serde_json::json;

fn id(n: u8) -> String {
    format!("{:0>64}", format!("{n:x}"))
}

fn kinds(findings: &[(String, String)]) -> Vec<&str> {
    findings.iter().map(|(k, _)| k.as_str()).collect()
}

fn message<'a>(findings: &'a [(String, String)], kind: &str) -> &'a str {
    &findings
        .iter()
        .find(|(k, _)| k == kind)
        .unwrap_or_else(|| panic!("no {kind} in {findings:?}"))
        .1
}

#[test]
fn every_missing_volume_is_listed_not_just_the_first() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    let anon = "a".repeat(64);
    root.volume("kept", &[])
        .container(
            &id(1),
            "web",
            &[
                volume_mount("gone1", "/a", &r),
                volume_mount("gone2", "/b", &r),
                volume_mount(&anon, "/c", &r),
                volume_mount("kept", "/d", &r),
            ],
        )
        .write_db();
    let (code, doc) = json_run(root.volmig().args(["verify", "web"]));
    assert_eq!(code, 1);
    assert_eq!(doc["ok"], false);
    let f = container_findings(&doc, "web");
    let missing: Vec<&str> = f
        .iter()
        .filter(|(k, _)| k == "volume-missing")
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(
        missing,
        vec![
            "get gone1: no such volume".to_string(),
            "get gone2: no such volume".to_string(),
            format!("get {anon}: no such volume"),
        ]
    );
    assert_eq!(doc["summary"]["failing_mounts"], 3);
}

#[test]
fn daemon_1706_says_volume_not_found() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    root.container(&id(1), "web", &[volume_mount("gone", "/a", &r)]);
    let (code, doc) =
        json_run(
            root.volmig()
                .args(["verify", "--all", "--daemon-version", "17.06.0-ce"]),
        );
    assert_eq!(code, 1);
    assert_eq!(
        message(&container_findings(&doc, "web"), "volume-missing"),
        "get gone: volume not found"
    );
}

#[test]
fn plugin_driver_missing() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    let mut m = volume_mount("ebs1", "/e", &r);
    m["Driver"] = json!("rexray/ebs");
    root.container(&id(1), "web", &[m]);
    let (code, doc) = json_run(root.volmig().args(["verify", "web"]));
    assert_eq!(code, 1);
    assert_eq!(
        message(&container_findings(&doc, "web"), "volume-plugin-missing"),
        "get ebs1: error while checking if volume \"ebs1\" exists in driver \"rexray/ebs\": error looking up volume plugin rexray/ebs: plugin \"rexray/ebs\" not found"
    );
}

#[test]
fn db_driver_mismatch() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    fs::create_dir_all(r.join("volumes/shared/_data")).unwrap();
    root.record("shared", "nfsplugin", &[])
        .container(&id(1), "web", &[volume_mount("shared", "/s", &r)])
        .write_db();
    let (code, doc) = json_run(root.volmig().args(["verify", "web"]));
    assert_eq!(code, 1);
    assert_eq!(
        message(&container_findings(&doc, "web"), "volume-driver-mismatch"),
        "get shared: provided volume driver does not match stored driver"
    );
}

#[test]
fn local_opts_type_without_device_network_and_quota() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    root.volume("nodev", &[])
        .opts_json(
            "nodev",
            r#"{"MountType":"ext4","MountOpts":"","MountDevice":""}"#,
        )
        .volume("nfsvol", &[])
        .opts_json(
            "nfsvol",
            r#"{"MountType":"nfs","MountOpts":"addr=192.0.2.1,rw","MountDevice":":/export"}"#,
        )
        .volume("quota", &[])
        .opts_json(
            "quota",
            r#"{"MountType":"","MountOpts":"","MountDevice":"","Quota":{"Size":1048576}}"#,
        )
        .container(
            &id(1),
            "web",
            &[
                volume_mount("nodev", "/a", &r),
                volume_mount("nfsvol", "/b", &r),
                volume_mount("quota", "/c", &r),
            ],
        )
        .write_db();
    let (code, doc) = json_run(root.volmig().args(["verify", "web"]));
    assert_eq!(code, 1);
    let f = container_findings(&doc, "web");
    assert_eq!(
        message(&f, "volume-opts-incomplete"),
        format!(
            "error while mounting volume '{}': missing device in volume options",
            r.join("volumes/nodev/_data").display()
        )
    );
    assert!(kinds(&f).contains(&"volume-needs-network"), "{f:?}");
    assert!(kinds(&f).contains(&"volume-needs-quota"), "{f:?}");
}

#[test]
fn data_dir_missing_fails_the_mount_and_warns_in_scan() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    fs::create_dir_all(r.join("volumes/hollow")).unwrap();
    root.record("hollow", "local", &[])
        .container(&id(1), "web", &[volume_mount("hollow", "/h", &r)])
        .write_db();
    let (code, doc) =
        json_run(
            root.volmig()
                .args(["verify", "web", "--daemon-version", "20.10.24"]),
        );
    assert_eq!(code, 1);
    assert!(kinds(&container_findings(&doc, "web")).contains(&"volume-data-missing"));
    let (code, doc) = json_run(root.volmig().args(["scan", "--daemon-version", "20.10.24"]));
    assert_eq!(code, 0, "a volume without _data does not stop the daemon");
    assert_eq!(
        doc["volumes"]["hollow"]["findings"][0]["kind"],
        "data-dir-missing"
    );
    // v29.4+ skips a directory with neither _data nor opts.json: no such volume.
    let (code, doc) = json_run(root.volmig().args(["verify", "web"]));
    assert_eq!(code, 1);
    assert_eq!(
        message(&container_findings(&doc, "web"), "volume-missing"),
        "get hollow: no such volume"
    );
}

#[test]
fn moved_data_root_with_z_mode_fails_on_2010_but_not_on_current() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    let mut m = volume_mount(
        "data1",
        "/data",
        std::path::Path::new("/var/lib/docker-old"),
    );
    m["Relabel"] = json!("z");
    root.volume("data1", &[])
        .container(&id(1), "web", &[m])
        .write_db();
    let (code, doc) =
        json_run(
            root.volmig()
                .args(["verify", "web", "--daemon-version", "20.10.24"]),
        );
    assert_eq!(code, 1);
    assert_eq!(
        message(&container_findings(&doc, "web"), "stale-source-relabel"),
        "error evaluating symlinks from mount source \"/var/lib/docker-old/volumes/data1/_data\": lstat /var/lib/docker-old: no such file or directory"
    );
    let (code, _) = json_run(
        root.volmig()
            .args(["verify", "web", "--daemon-version", "20.10.2"]),
    );
    assert_eq!(code, 0, "20.10.2 recomputes the path");
    let (code, _) = json_run(root.volmig().args(["verify", "web"]));
    assert_eq!(code, 0, "current dockerd recomputes the path");
    let _ = r;
}

#[test]
fn subpath_missing_and_escaping() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    let mut missing = volume_mount("data1", "/a", &r);
    missing["Spec"] = json!({"Type": "volume", "Source": "data1", "Target": "/a", "VolumeOptions": {"Subpath": "sub/dir"}});
    let mut escaping = volume_mount("data1", "/b", &r);
    escaping["Spec"] = json!({"Type": "volume", "Source": "data1", "Target": "/b", "VolumeOptions": {"Subpath": "../../etc"}});
    let mut present = volume_mount("data1", "/c", &r);
    present["Spec"] = json!({"Type": "volume", "Source": "data1", "Target": "/c", "VolumeOptions": {"Subpath": "here"}});
    root.volume("data1", &[])
        .container(&id(1), "web", &[missing, escaping, present])
        .write_db();
    fs::create_dir_all(r.join("volumes/data1/_data/here")).unwrap();
    let (code, doc) = json_run(root.volmig().args(["verify", "web"]));
    assert_eq!(code, 1);
    let f = container_findings(&doc, "web");
    assert!(message(&f, "subpath-missing").contains("sub/dir"));
    assert_eq!(
        message(&f, "subpath-escapes"),
        "subpath must be a relative path within the volume: ../../etc"
    );
    let mounts = doc["containers"][0]["mounts"].as_array().unwrap();
    assert_eq!(
        mounts.iter().find(|m| m["destination"] == "/c").unwrap()["status"],
        "ok"
    );
}

#[test]
fn neither_source_nor_volume() {
    let mut root = FakeDataRoot::new();
    let m = json!({"Source": "", "Destination": "/x", "RW": true, "Name": "", "Driver": "", "Type": "volume", "Spec": {}});
    root.container(&id(1), "web", &[m]);
    let (code, doc) = json_run(root.volmig().args(["verify", "web"]));
    assert_eq!(code, 1);
    assert_eq!(
        message(&container_findings(&doc, "web"), "mount-undefined"),
        "Unable to setup mount point, neither source nor volume defined"
    );
}

#[test]
fn binds_into_the_old_data_root_are_flagged() {
    let mut root = FakeDataRoot::new();
    let old = tempfile::tempdir().unwrap();
    let old_root = fs::canonicalize(old.path()).unwrap();
    let id1 = id(1);
    fs::create_dir_all(old_root.join("containers").join(&id1)).unwrap();
    fs::create_dir_all(old_root.join("shared-conf")).unwrap();
    root.container(
        &id1,
        "web",
        &[bind_mount(
            old_root.join("shared-conf").to_str().unwrap(),
            "/conf",
        )],
    );
    // The container was created under the old root: rewrite its stored paths.
    let cfg_path = root
        .path()
        .join("containers")
        .join(&id1)
        .join("config.v2.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    cfg["HostnamePath"] = json!(old_root.join("containers").join(&id1).join("hostname"));
    fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let (code, doc) = json_run(root.volmig().args(["verify", "web"]));
    assert_eq!(code, 0, "it starts, from the old root's copy");
    assert!(kinds(&container_findings(&doc, "web")).contains(&"bind-into-old-root"));
}

#[test]
fn volumes_from_a_source_with_tmpfs_warns_about_re_creation() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    let tmpfs = json!({"Source": "", "Destination": "/t", "RW": true, "Type": "tmpfs", "Spec": {"Type": "tmpfs", "Target": "/t"}});
    root.volume("data1", &[])
        .container(&id(1), "src", &[volume_mount("data1", "/data", &r), tmpfs])
        .container_with(
            &id(2),
            "user",
            &[volume_mount("data1", "/data", &r)],
            json!({"VolumesFrom": ["src"]}),
        )
        .write_db();
    let (code, doc) = json_run(root.volmig().args(["verify", "--all"]));
    assert_eq!(code, 0);
    assert!(kinds(&container_findings(&doc, "user")).contains(&"volumes-from-tmpfs"));
    let src = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "src")
        .unwrap()
        .clone();
    let t = src["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/t")
        .unwrap()
        .clone();
    assert_eq!(t["status"], "skipped", "tmpfs is never resolved");
}

#[test]
fn checkpoint_missing_bad_name_and_experimental_off() {
    let mut root = FakeDataRoot::new();
    root.container(&id(1), "web", &[]);
    let (code, doc) = json_run(root.volmig().args(["verify", "web", "--checkpoint", "cp1"]));
    assert_eq!(code, 1);
    let f = container_findings(&doc, "web");
    assert_eq!(
        message(&f, "checkpoint-needs-experimental"),
        "checkpoint is only supported in experimental mode"
    );
    assert!(message(&f, "checkpoint-missing").contains("cp1"));

    let (_, doc) =
        json_run(
            root.volmig()
                .args(["verify", "web", "--checkpoint=-bad", "--experimental"]),
        );
    assert_eq!(
        message(&container_findings(&doc, "web"), "checkpoint-name-invalid"),
        "Invalid checkpoint ID (-bad), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    );
    // dockerd's pattern needs two characters: a one-letter name fails too.
    let (_, doc) =
        json_run(
            root.volmig()
                .args(["verify", "web", "--checkpoint=a", "--experimental"]),
        );
    assert!(kinds(&container_findings(&doc, "web")).contains(&"checkpoint-name-invalid"));

    fs::create_dir_all(
        root.path()
            .join("containers")
            .join(id(1))
            .join("checkpoints/cp1"),
    )
    .unwrap();
    let (code, _) =
        json_run(
            root.volmig()
                .args(["verify", "web", "--checkpoint", "cp1", "--experimental"]),
        );
    assert_eq!(code, 0);
}

#[test]
fn volume_without_db_record_loses_labels_but_starts() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    root.volume("labelled", &[("a", "b")]).write_db();
    fs::create_dir_all(r.join("volumes/bare/_data")).unwrap();
    root.container(&id(1), "web", &[volume_mount("bare", "/b", &r)]);
    let (code, doc) = json_run(root.volmig().args(["verify", "web"]));
    assert_eq!(code, 0);
    assert!(kinds(&container_findings(&doc, "web")).contains(&"volume-labels-lost"));
    let (_, doc) = json_run(root.volmig().arg("scan"));
    assert_eq!(doc["volumes"]["bare"]["labels"], serde_json::Value::Null);
    assert_eq!(doc["volumes"]["labelled"]["labels"]["a"], "b");
}

#[test]
fn unreadable_or_malformed_config_is_reported_and_the_rest_verified() {
    let mut root = FakeDataRoot::new();
    let r = root.path();
    root.container(&id(1), "good", &[volume_mount("gone", "/g", &r)]);
    let broken = r.join("containers").join(id(2));
    fs::create_dir_all(&broken).unwrap();
    fs::write(
        broken.join("config.v2.json"),
        b"{\"ID\": \"x\", \"MountPoints\": {",
    )
    .unwrap();
    let unreadable = r.join("containers").join(id(3));
    fs::create_dir_all(unreadable.join("config.v2.json")).unwrap(); // a directory: read fails
    let (code, doc) = json_run(root.volmig().args(["verify", "--all"]));
    assert_eq!(code, 1);
    let containers = doc["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 3);
    let broken_report = containers.iter().find(|c| c["id"] == id(2)).unwrap();
    let msg = broken_report["findings"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains(&broken.join("config.v2.json").display().to_string()),
        "{msg}"
    );
    assert!(containers
        .iter()
        .any(|c| c["id"] == id(3) && c["ok"] == false));
    assert_eq!(
        message(&container_findings(&doc, "good"), "volume-missing"),
        "get gone: no such volume"
    );
    // text mode, too, names the path and does not panic
    root.volmig()
        .args(["verify", "--all"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("malformed JSON"))
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn lookup_by_prefix_name_and_ambiguity() {
    let mut root = FakeDataRoot::new();
    root.container(&format!("ab1{}", "0".repeat(61)), "one", &[])
        .container(&format!("ab2{}", "0".repeat(61)), "two", &[]);
    root.volmig().args(["verify", "ab1"]).assert().success();
    root.volmig().args(["verify", "/two"]).assert().success();
    root.volmig()
        .args(["verify", "ab"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "multiple IDs found with provided prefix: ab",
        ))
        .stderr(predicate::str::contains("(one)"))
        .stderr(predicate::str::contains("(two)"));
    root.volmig()
        .args(["verify", "nope", "alsonope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("No such container: nope"))
        .stderr(predicate::str::contains("No such container: alsonope"))
        .stderr(predicate::str::contains("containers here: one, two"));
}
