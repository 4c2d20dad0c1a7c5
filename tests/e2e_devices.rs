//! End-to-end against a real, private dockerd 20.10 (issue 8): volumes
//! whose data is not in `_data`. A bind-type volume (compose's
//! `driver_opts: {type: none, o: bind, device: DIR}`) is carried to a host
//! where DIR does not exist, and the container starts with its data; with
//! `--bind-data skip`, export says what it left and `verify` predicts the
//! daemon's exact failure; an nfs volume: export and verify say what they
//! can and cannot know. The harness is `e2e/mod.rs` (one private daemon,
//! its own data-root under /var/tmp/volmig-e2e).

use std::fs;
use std::path::Path;

use crate::common::failure_messages;
use crate::e2e::{daemon_error, tree, volmig_json, volmig_run, PrivateDaemon};

/// The data-root as a host that never had the volume: its directory gone
/// (its metadata.db record stays, as after a copy of the containers).
fn drop_volume(root: &Path, name: &str) {
    crate::e2e::remove_tree(&root.join("volumes").join(name));
}

#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s8_bind_volume_moves_to_a_host_without_its_device() {
    let _e2e = crate::e2e::serial();
    let mut d = PrivateDaemon::start("s8");
    d.load_busybox_image("s8img", None);
    let host = d.dir.join("host");
    let device = host.join("srv/app");
    fs::create_dir_all(&device).unwrap();
    let device_opt = format!("device={}", device.display());
    d.dk(&[
        "volume",
        "create",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        &device_opt,
        "appdata",
    ]);
    d.dk(&[
        "run", "--rm", "-v", "appdata:/srv", "s8img", "sh", "-c",
        "echo hello from the host dir > /srv/index.html && mkdir /srv/db && echo rows > /srv/db/t && chown -R 999:999 /srv/db && chmod 0700 /srv/db",
    ]);
    d.dk(&[
        "create",
        "--name",
        "web",
        "-v",
        "appdata:/srv",
        "s8img",
        "sh",
        "-c",
        "cat /srv/index.html && stat -c %u:%g:%a /srv/db && echo more >> /srv/db/t",
    ]);
    d.stop();
    let expected = tree::snapshot(&device);
    let bundle = d.dir.join("s8.bundle");
    let out_arg = bundle.display().to_string();

    // Carried: the device's tree is the volume's data.
    let (code, doc) = volmig_json(&d.root, &["export", "web", "-o", &out_arg]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        doc["data_not_carried"].as_array().map(Vec::len),
        Some(0),
        "{doc}"
    );
    assert_eq!(
        doc["volumes"]["appdata"]["files"], 3,
        "two files and opts.json: {doc}"
    );
    // The target host: neither the volume nor its device path.
    crate::e2e::remove_tree(&host);
    drop_volume(&d.root, "appdata");
    let (code, out, err) = volmig_run(&d.root, &["import", &out_arg]);
    println!("import: {out}{err}");
    assert_eq!(code, 0, "{out}{err}");
    let diff = tree::diff(&expected, &tree::snapshot(&device));
    assert!(
        diff.is_empty(),
        "the device path differs from the source's:\n{diff}"
    );
    d.start_again();
    let out = d.dk_output(&["start", "-a", "web"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docker start web: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello from the host dir"), "{stdout}");
    assert!(stdout.contains("999:999:700"), "{stdout}");
    d.stop();

    // Skipped: export says so, verify predicts the daemon's own failure.
    let (code, doc) = volmig_json(
        &d.root,
        &["export", "web", "--bind-data", "skip", "-o", &out_arg],
    );
    assert_eq!(code, 0, "{doc}");
    let left = doc["data_not_carried"][0].as_str().unwrap_or_default();
    assert!(
        left.contains("appdata") && left.contains("stayed behind"),
        "{doc}"
    );
    crate::e2e::remove_tree(&host);
    drop_volume(&d.root, "appdata");
    // The import commits, then its own verify finds the container broken.
    let (code, out, err) = volmig_run(&d.root, &["import", &out_arg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("container web FAILS to start"), "{out}{err}");
    assert!(!device.exists(), "skipped data must not appear");
    let (code, doc) = volmig_json(&d.root, &["verify", "web", "--daemon-version", "20.10.24"]);
    assert_eq!(code, 1, "verify must predict the failure: {doc}");
    let predicted = failure_messages(&doc, "web");
    d.start_again();
    let out = d.dk_output(&["start", "web"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "web started without its data: {stderr}"
    );
    let actual = daemon_error(&stderr).unwrap_or_default();
    println!("dockerd: {actual}\npredicted: {predicted:?}");
    assert!(
        predicted.iter().any(|p| actual.contains(p.as_str())),
        "dockerd said {actual:?}, volmig predicted {predicted:?}"
    );
    d.stop();
    fs::remove_file(&bundle).unwrap();
}

#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s8_nfs_volume_export_and_verify_say_what_they_cannot_know() {
    let _e2e = crate::e2e::serial();
    let mut d = PrivateDaemon::start("s8nfs");
    d.load_busybox_image("s8img", None);
    d.dk(&[
        "volume",
        "create",
        "--opt",
        "type=nfs",
        "--opt",
        "o=addr=127.0.0.1,rw",
        "--opt",
        "device=:/export/share",
        "share",
    ]);
    d.dk(&[
        "create",
        "--name",
        "nas",
        "-v",
        "share:/mnt",
        "s8img",
        "true",
    ]);
    d.stop();
    let bundle = d.dir.join("s8nfs.bundle");
    let out_arg = bundle.display().to_string();
    let (code, doc) = volmig_json(&d.root, &["export", "nas", "-o", &out_arg]);
    assert_eq!(code, 0, "{doc}");
    let left = doc["data_not_carried"][0].as_str().unwrap_or_default();
    assert!(
        left.contains(":/export/share") && left.contains("network"),
        "{doc}"
    );
    let (code, doc) = volmig_json(&d.root, &["verify", "nas", "--daemon-version", "20.10.24"]);
    assert_eq!(code, 0, "{doc}");
    assert!(
        doc.to_string().contains("cannot be decided offline"),
        "verify must say it cannot know: {doc}"
    );
    let (_, doc) = volmig_json(&d.root, &["scan"]);
    assert_eq!(
        doc["volumes"]["share"]["data_location"]["kind"], "network",
        "{doc}"
    );
    fs::remove_file(&bundle).unwrap();
}

/// A live import (the daemon runs and registers the volume through the
/// Engine API) of a bind volume whose device path is absent on the target:
/// the container starts with its data, and `_data` stays the mountpoint.
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s8_live_import_of_a_bind_volume_registers_it_and_lays_its_data_down() {
    let _e2e = crate::e2e::serial();
    let mut d = PrivateDaemon::start("s8live");
    d.load_busybox_image("s8img", None);
    let host = d.dir.join("host");
    let device = host.join("srv/app");
    fs::create_dir_all(&device).unwrap();
    let device_opt = format!("device={}", device.display());
    d.dk(&[
        "volume",
        "create",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        &device_opt,
        "--label",
        "com.docker.compose.volume=app",
        "appdata",
    ]);
    d.dk(&[
        "run",
        "--rm",
        "-v",
        "appdata:/srv",
        "s8img",
        "sh",
        "-c",
        "echo live data > /srv/index.html",
    ]);
    d.dk(&[
        "create",
        "--name",
        "web",
        "-v",
        "appdata:/srv",
        "s8img",
        "cat",
        "/srv/index.html",
    ]);
    d.stop();
    let expected = tree::snapshot(&device);
    let bundle = d.dir.join("s8live.bundle");
    let out_arg = bundle.display().to_string();
    let (code, doc) = volmig_json(&d.root, &["export", "web", "-o", &out_arg]);
    assert_eq!(code, 0, "{doc}");
    crate::e2e::remove_tree(&host);
    drop_volume(&d.root, "appdata");
    // The daemon starts without the volume (and drops its record).
    d.start_again();
    let host_arg = d.host();
    let (code, out, err) = volmig_run(&d.root, &["-H", &host_arg, "import", &out_arg]);
    println!("live import: {out}{err}");
    assert_eq!(code, 0, "{out}{err}");
    let diff = tree::diff(&expected, &tree::snapshot(&device));
    assert!(
        diff.is_empty(),
        "the device path differs from the source's:\n{diff}"
    );
    let labels = d.dk(&[
        "volume",
        "inspect",
        "-f",
        "{{json .Labels}} {{json .Options}}",
        "appdata",
    ]);
    assert!(labels.contains("com.docker.compose.volume"), "{labels}");
    assert!(labels.contains(&device.display().to_string()), "{labels}");
    let out = d.dk_output(&["start", "-a", "web"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("live data"),
        "docker start web: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop();
    fs::remove_file(&bundle).unwrap();
}
