//! Volumes whose data is not in `_data` (issue 8): compose's bind-type
//! named volumes (`driver_opts: {type: none, o: bind, device: DIR}`),
//! network and tmpfs volumes, on tempdir data-roots. The same against a
//! real dockerd is in `e2e_daemon.rs` (`s8_*`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::{json_run, volume_mount, FakeDataRoot};
use serde_json::Value;

/// A source data-root with container `web` using the bind-type volume
/// `app` whose data is in `<tmp>/srv/app` (two files, one owned 999).
struct BindSource {
    root: FakeDataRoot,
    /// Holds the device directory.
    host: tempfile::TempDir,
}

impl BindSource {
    fn new() -> BindSource {
        let host = tempfile::tempdir().unwrap();
        let device = host.path().join("srv/app");
        fs::create_dir_all(device.join("sub")).unwrap();
        fs::write(device.join("index.html"), "hello from the host dir\n").unwrap();
        fs::write(device.join("sub/db.bin"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::chown(device.join("sub/db.bin"), Some(999), Some(999)).unwrap();
        fs::set_permissions(&device, fs::Permissions::from_mode(0o750)).unwrap();
        let mut root = FakeDataRoot::new();
        let path = root.path();
        root.volume("app", &[("com.docker.compose.volume", "app")])
            .opts_json("app", &opts(&device))
            .container(
                &"c1".repeat(32),
                "web",
                &[volume_mount("app", "/srv", &path)],
            )
            .write_db();
        BindSource { root, host }
    }

    fn device(&self) -> PathBuf {
        self.host.path().join("srv/app")
    }

    fn export(&self, extra: &[&str]) -> (PathBuf, Value) {
        let bundle = self.host.path().join("web.vmb");
        let mut cmd = self.root.volmig();
        cmd.args(["export", "web", "-o"]).arg(&bundle).args(extra);
        let (code, doc) = json_run(&mut cmd);
        assert_eq!(code, 0, "{doc}");
        (bundle, doc)
    }
}

fn opts(device: &Path) -> String {
    format!(
        r#"{{"MountType":"none","MountOpts":"bind","MountDevice":"{}","Quota":{{"Size":0}}}}"#,
        device.display()
    )
}

/// The containers of `src` copied into `target` (what moves with the
/// container's filesystem, before its volumes are imported).
fn carry_containers(src: &FakeDataRoot, target: &FakeDataRoot) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(src.path().join("containers/."))
        .arg(target.path().join("containers"))
        .status()
        .unwrap();
    assert!(status.success());
}

fn import(target: &FakeDataRoot, bundle: &Path, extra: &[&str]) -> (i32, Value) {
    let mut cmd = target.volmig();
    cmd.arg("import").arg(bundle).args(extra);
    json_run(&mut cmd)
}

fn tree(dir: &Path) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        let content = if m.is_file() {
            fs::read(e.path()).unwrap()
        } else {
            Vec::new()
        };
        out.push((rel, m.mode(), m.uid(), m.gid(), content));
    }
    out
}

#[test]
fn scan_says_where_a_bind_volumes_data_lives() {
    let src = BindSource::new();
    let mut cmd = src.root.volmig();
    cmd.arg("scan");
    let (_, doc) = json_run(&mut cmd);
    let loc = &doc["volumes"]["app"]["data_location"];
    assert_eq!(loc["kind"], "bind", "{doc}");
    assert_eq!(loc["device"], src.device().display().to_string());
    let out = src.root.volmig().arg("scan").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "data: a bind mount of the host path `{}`",
            src.device().display()
        )),
        "{text}"
    );
}

/// Issue 8: export of a bind-type volume exited 0 with only the empty
/// `_data` mountpoint in the bundle; the data at the device path stayed
/// behind without a word.
#[test]
fn export_of_a_bind_volume_carried_only_the_empty_mountpoint() {
    let src = BindSource::new();
    let (bundle, doc) = src.export(&[]);
    // The two files of the device and opts.json.
    assert_eq!(doc["volumes"]["app"]["files"], 3, "{doc}");
    let opts_len = fs::metadata(src.root.path().join("volumes/app/opts.json"))
        .unwrap()
        .len();
    assert_eq!(doc["volumes"]["app"]["bytes"], 300_024 + opts_len, "{doc}");
    let mut cmd = crate::common::volmig();
    cmd.args(["inspect"]).arg(&bundle);
    let (code, doc) = json_run(&mut cmd);
    assert_eq!(code, 0, "{doc}");
    let v = &doc["header"]["volumes"][0];
    assert_eq!(v["device"]["location"], "bind", "{doc}");
    assert_eq!(v["device"]["data_carried"], true);
    assert_eq!(
        v["data"]["mode"], "0750",
        "_data carries the device dir's attributes"
    );
}

#[test]
fn a_bind_volume_lands_at_its_device_path_or_where_map_path_says() {
    let src = BindSource::new();
    let (bundle, _) = src.export(&[]);
    let target = FakeDataRoot::new();
    carry_containers(&src.root, &target);
    let elsewhere = tempfile::tempdir().unwrap();
    let new_device = elsewhere.path().join("data/app/current");
    let map = format!(
        "--map-path={}={}",
        src.device().display(),
        new_device.display()
    );
    let (code, doc) = import(&target, &bundle, &[&map]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        tree(&new_device),
        tree(&src.device()),
        "every byte and attribute"
    );
    let vol = target.path().join("volumes/app");
    let data = fs::metadata(vol.join("_data")).unwrap();
    assert!(data.is_dir() && data.mode() & 0o7777 == 0o755);
    assert_eq!(
        fs::read_dir(vol.join("_data")).unwrap().count(),
        0,
        "only the mountpoint"
    );
    let opts = fs::read_to_string(vol.join("opts.json")).unwrap();
    assert!(
        opts.contains(&format!("\"MountDevice\":\"{}\"", new_device.display())),
        "{opts}"
    );
    // Nothing staged is left beside the target.
    let left: Vec<_> = fs::read_dir(new_device.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".volmig"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The target predicts a start: the device is there.
    let mut cmd = target.volmig();
    cmd.args(["verify", "web", "--daemon-version", "20.10.24"]);
    let (code, doc) = json_run(&mut cmd);
    assert_eq!(code, 0, "{doc}");
}

#[test]
fn a_device_path_holding_other_data_is_a_conflict_and_nothing_changes() {
    let src = BindSource::new();
    let (bundle, _) = src.export(&[]);
    fs::write(src.device().join("index.html"), "changed on the target\n").unwrap();
    let before = tree(&src.device());
    let target = FakeDataRoot::new();
    let (code, doc) = import(&target, &bundle, &[]);
    assert_eq!(code, 2, "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("`{}`", src.device().display())) && error.contains("--map-path"),
        "{error}"
    );
    assert_eq!(tree(&src.device()), before);
    assert!(!target.path().join("volumes/app").exists());
    // With replace, the bundle's data goes in.
    let (code, doc) = import(&target, &bundle, &["--on-conflict", "replace"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        fs::read_to_string(src.device().join("index.html")).unwrap(),
        "hello from the host dir\n"
    );
}

#[test]
fn an_empty_directory_at_the_device_path_is_filled() {
    let src = BindSource::new();
    let (bundle, _) = src.export(&[]);
    let saved = tree(&src.device());
    fs::remove_dir_all(src.device()).unwrap();
    fs::create_dir(src.device()).unwrap();
    let target = FakeDataRoot::new();
    let (code, doc) = import(&target, &bundle, &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(tree(&src.device()), saved);
}

/// Issue 8: with the data left behind, verify said the container starts
/// while dockerd 20.10 fails to mount the missing device.
#[test]
fn bind_data_skip_says_what_it_left_and_verify_predicts_the_mount_failure() {
    let src = BindSource::new();
    let (bundle, doc) = src.export(&["--bind-data", "skip"]);
    let left = doc["data_not_carried"][0].as_str().unwrap();
    assert!(
        left.contains("stayed behind") && left.contains("app"),
        "{left}"
    );
    assert_eq!(doc["volumes"]["app"]["files"], 1, "opts.json only: {doc}");
    let out = src
        .root
        .volmig()
        .args(["export", "web", "--bind-data", "skip", "-o"])
        .arg(src.host.path().join("again.vmb"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("data not carried") && text.contains("stayed behind"),
        "{text}"
    );

    let target = FakeDataRoot::new();
    carry_containers(&src.root, &target);
    let (code, doc) = import(&target, &bundle, &[]);
    // The source's device is still there (same host): verify is happy.
    assert_eq!(code, 0, "{doc}");
    fs::remove_dir_all(src.device()).unwrap();
    let mut cmd = target.volmig();
    cmd.args(["verify", "web", "--daemon-version", "20.10.24"]);
    let (code, doc) = json_run(&mut cmd);
    assert_eq!(code, 1, "{doc}");
    // The stored Source (import pointed it at this data-root) first.
    let data = target.path().join("volumes/app/_data");
    let expected = format!(
        "error while mounting volume '{}': failed to mount local volume: mount {}:{}, flags: 0x1000: no such file or directory",
        data.display(),
        src.device().display(),
        data.display()
    );
    let messages = crate::common::failure_messages(&doc, "web");
    assert!(
        messages.contains(&expected),
        "{messages:?}\nexpected {expected}"
    );
}

#[test]
fn a_network_volume_carries_its_options_and_says_its_data_is_not_in_the_bundle() {
    let mut root = FakeDataRoot::new();
    let path = root.path();
    root.volume("share", &[])
        .opts_json(
            "share",
            r#"{"MountType":"nfs","MountOpts":"addr=10.0.0.9,rw","MountDevice":":/export/share"}"#,
        )
        .container(
            &"c2".repeat(32),
            "nas",
            &[volume_mount("share", "/mnt", &path)],
        )
        .write_db();
    let out_dir = tempfile::tempdir().unwrap();
    let bundle = out_dir.path().join("nas.vmb");
    let mut cmd = root.volmig();
    cmd.args(["export", "nas", "-o"]).arg(&bundle);
    let (code, doc) = json_run(&mut cmd);
    assert_eq!(code, 0, "{doc}");
    let left = doc["data_not_carried"][0].as_str().unwrap();
    assert!(
        left.contains(":/export/share") && left.contains("network"),
        "{left}"
    );
    let target = FakeDataRoot::new();
    carry_containers(&root, &target);
    let (code, doc) = import(&target, &bundle, &[]);
    assert_eq!(code, 0, "{doc}");
    assert!(target.path().join("volumes/share/opts.json").is_file());
    let mut cmd = target.volmig();
    cmd.args(["verify", "nas"]);
    let (code, doc) = json_run(&mut cmd);
    assert_eq!(code, 0, "a warning, not a failure: {doc}");
    let text = doc.to_string();
    assert!(text.contains("cannot be decided offline"), "{text}");
}

#[test]
fn map_path_must_be_two_absolute_paths() {
    let target = FakeDataRoot::new();
    for bad in ["relative=/x", "/x", "/a/../b=/c", "/a=b"] {
        let out = target
            .volmig()
            .args(["import", "/nonexistent.vmb", "--map-path", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--map-path") || err.contains(bad), "{err}");
    }
}

/// A bundle names where a bind volume's data goes: never into the system.
#[test]
fn bind_data_is_never_laid_down_in_a_system_directory() {
    let src = BindSource::new();
    let (bundle, _) = src.export(&[]);
    let target = FakeDataRoot::new();
    let map = format!(
        "--map-path={}=/etc/volmig-never/app",
        src.device().display()
    );
    let (code, doc) = import(&target, &bundle, &[&map, "--on-conflict", "replace"]);
    assert_eq!(code, 2, "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("/etc") && error.contains("--map-path"),
        "{error}"
    );
    assert!(!Path::new("/etc/volmig-never").exists());
    assert!(!target.path().join("volumes/app").exists());
}

#[test]
fn a_dry_run_names_where_bind_data_would_go() {
    let src = BindSource::new();
    let (bundle, _) = src.export(&[]);
    let target = FakeDataRoot::new();
    let new = tempfile::tempdir().unwrap();
    let map = format!(
        "--map-path={}={}/app",
        src.device().display(),
        new.path().display()
    );
    let (code, doc) = import(&target, &bundle, &[&map, "--dry-run"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        doc["bind_data"][0],
        format!("{}/app", new.path().display()),
        "{doc}"
    );
    assert!(!new.path().join("app").exists(), "a dry run writes nothing");
}

/// Found in review: after an import with `--map-path`, a dry run of
/// `skip-identical` with the same mapping said the volume differed (it
/// compared the bundle's digest, whose opts.json names OLD, with the
/// target's, which names NEW) while the real run kept it as identical.
#[test]
fn a_dry_run_of_skip_identical_with_map_path_disagreed_with_the_real_run() {
    let src = BindSource::new();
    let (bundle, _) = src.export(&[]);
    let target = FakeDataRoot::new();
    let new = tempfile::tempdir().unwrap();
    let map = format!(
        "--map-path={}={}/app",
        src.device().display(),
        new.path().display()
    );
    let (code, doc) = import(&target, &bundle, &[&map]);
    assert_eq!(code, 0, "{doc}");
    let again = [map.as_str(), "--on-conflict", "skip-identical"];
    let (code, dry) = import(
        &target,
        &bundle,
        &[again[0], again[1], again[2], "--dry-run"],
    );
    assert_eq!(code, 0, "{dry}");
    let identical: Vec<&Value> = dry["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["identical"])
        .collect();
    assert!(
        !identical.is_empty() && identical.iter().all(|i| **i == true),
        "{dry}"
    );
    let (code, real) = import(&target, &bundle, &again);
    assert_eq!(code, 0, "{real}");
    assert_eq!(real["skipped_identical"][0], "app", "{real}");
    // A change on the target is still seen, in both.
    fs::write(new.path().join("app/index.html"), "changed\n").unwrap();
    let (code, dry) = import(
        &target,
        &bundle,
        &[again[0], again[1], again[2], "--dry-run"],
    );
    assert_eq!(code, 2, "{dry}");
    let (code, real) = import(&target, &bundle, &again);
    assert_eq!(code, 2, "{real}");
}
