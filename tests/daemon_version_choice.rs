//! Which dockerd a prediction is for: `--daemon-version` (a series means
//! its newest release), else the answering daemon, else the installed
//! `dockerd --version`, else current; and a stale Source's fix names a
//! command that works in the state the daemon is in.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::{container_findings, json_run, volume_mount, FakeDataRoot};
use serde_json::json;

/// No daemon listens here: the tests never probe the host's daemon.
const NO_DAEMON: &str = "unix:///nonexistent/volmig-test.sock";
const REAL_DOCKERD: &str = "/usr/sbin/dockerd";

fn id(n: u8) -> String {
    format!("{:0>64}", format!("{n:x}"))
}

/// A data-root moved from /var/lib/docker-old: `web` has a z-mode volume
/// whose stored Source names the old root, which no longer exists.
fn moved_root() -> FakeDataRoot {
    let mut root = FakeDataRoot::new();
    let m = volume_mount("data1", "/data", Path::new("/var/lib/docker-old"));
    assert_eq!(m["Relabel"], "z");
    root.volume("data1", &[])
        .container(&id(1), "web", &[m])
        .write_db();
    root
}

/// An executable `dockerd` in `dir` running `body`.
fn fake_dockerd(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("dockerd");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn verify(root: &FakeDataRoot, dockerd: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = root.volmig();
    cmd.env("VOLMIG_DOCKERD", dockerd)
        .args(["-H", NO_DAEMON, "verify", "web"])
        .args(extra);
    cmd
}

fn stdout(cmd: &mut assert_cmd::Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn without_a_daemon_verify_predicts_the_installed_dockerd_and_names_it() {
    let root = moved_root();
    let bin = tempfile::tempdir().unwrap();
    let dockerd = fake_dockerd(
        bin.path(),
        "echo 'Docker version 20.10.24+dfsg1, build 297e128'",
    );
    let (code, doc) = json_run(&mut verify(&root, &dockerd, &[]));
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["daemon_version"], "20.10.24");
    assert_eq!(doc["daemon_version_source"], "installed");
    let p = &doc["prediction"];
    assert_eq!(p["installed_dockerd"]["path"], json!(dockerd));
    assert_eq!(p["installed_dockerd"]["release"], "20.10.24+dfsg1");
    assert_eq!(p["daemon_running"], false);
    // 20.10.24 evaluates the stale Source of the z mount: current would not.
    let kinds: Vec<String> = container_findings(&doc, "web")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        kinds.contains(&"stale-source-relabel".to_string()),
        "{kinds:?}"
    );

    let (code, text) = stdout(&mut verify(&root, &dockerd, &[]));
    assert_eq!(code, 1);
    let first = text.lines().next().unwrap();
    assert!(
        first.contains(&format!(
            "dockerd 20.10.24, the installed `{}`",
            dockerd.display()
        )) && first.contains("Docker version 20.10.24+dfsg1, build 297e128")
            && first.contains(&format!(
                "no daemon answers at {NO_DAEMON} (dockerd is not running)"
            )),
        "{text}"
    );
}

#[test]
fn the_installed_dockerd_is_found_on_path() {
    let root = moved_root();
    let bin = tempfile::tempdir().unwrap();
    fake_dockerd(bin.path(), "echo 'Docker version 24.0.7, build afdd53b'");
    let (code, doc) = json_run(
        root.volmig()
            .env_remove("VOLMIG_DOCKERD")
            .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
            .args(["-H", NO_DAEMON, "verify", "web"]),
    );
    assert_eq!(code, 1, "24.0 still evaluates the stored Source: {doc:#}");
    assert_eq!(doc["daemon_version"], "24.0.7");
    assert_eq!(
        doc["prediction"]["installed_dockerd"]["path"],
        json!(bin.path().join("dockerd"))
    );
}

#[test]
fn the_flag_wins_and_the_installed_binary_is_not_even_run() {
    let root = moved_root();
    let bin = tempfile::tempdir().unwrap();
    let marker = bin.path().join("ran");
    let dockerd = fake_dockerd(
        bin.path(),
        &format!(
            "touch '{}'; echo 'Docker version 20.10.24'",
            marker.display()
        ),
    );
    let (code, doc) = json_run(&mut verify(
        &root,
        &dockerd,
        &["--daemon-version", "20.10.2"],
    ));
    assert_eq!(code, 0, "20.10.2 recomputes the path: {doc:#}");
    assert_eq!(doc["daemon_version_source"], "flag");
    assert!(
        !marker.exists(),
        "dockerd --version ran although the flag decides"
    );
}

#[test]
fn with_nothing_installed_verify_says_current_and_why() {
    let root = moved_root();
    let bin = tempfile::tempdir().unwrap();
    let garbage = fake_dockerd(bin.path(), "echo 'not docker at all'");
    let (code, doc) = json_run(&mut verify(&root, &garbage, &[]));
    assert_eq!(code, 0, "current recomputes the path: {doc:#}");
    assert_eq!(doc["daemon_version_source"], "default");
    let note = doc["prediction"]["note"].as_str().unwrap();
    assert!(note.contains("names no release"), "{note}");
    let (_, text) = stdout(&mut verify(&root, Path::new(""), &[]));
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("(current, the newest behaviour modelled: no daemon answers")
            && text.contains("lookup disabled (VOLMIG_DOCKERD is empty)"),
        "{text}"
    );
}

#[test]
fn the_real_installed_dockerd_names_its_version() {
    if !Path::new(REAL_DOCKERD).exists() {
        if std::env::var("VOLMIG_SKIP_E2E").is_ok_and(|v| v == "1") {
            println!("skipped: VOLMIG_SKIP_E2E=1 and {REAL_DOCKERD} is not installed");
            return;
        }
        panic!("{REAL_DOCKERD} is missing: install docker.io (scripts/test does), or set VOLMIG_SKIP_E2E=1 to skip");
    }
    let own = std::process::Command::new(REAL_DOCKERD)
        .arg("--version")
        .output()
        .unwrap();
    let own = String::from_utf8_lossy(&own.stdout);
    let release = own
        .trim()
        .strip_prefix("Docker version ")
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("unexpected `dockerd --version`: {own}"));
    let root = moved_root();
    let (_, doc) = json_run(&mut verify(&root, Path::new(REAL_DOCKERD), &[]));
    assert_eq!(doc["daemon_version_source"], "installed", "{doc:#}");
    assert_eq!(doc["prediction"]["installed_dockerd"]["release"], release);
    assert!(
        release.starts_with(doc["daemon_version"].as_str().unwrap()),
        "{doc:#}"
    );
}

#[test]
fn a_series_predicts_its_newest_release_and_says_where_the_verdict_changes() {
    let root = moved_root();
    let none = Path::new("");
    let (code, doc) = json_run(&mut verify(&root, none, &["--daemon-version", "20.10"]));
    assert_eq!(
        code, 1,
        "20.10 is 20.10.24, which fails on the stale Source: {doc:#}"
    );
    assert_eq!(doc["daemon_version"], "20.10.24");
    assert_eq!(
        doc["prediction"]["meaning"],
        "20.10 means 20.10.24, the newest 20.10 release"
    );
    let web = &doc["containers"][0];
    assert_eq!(
        web["within_series"]["text"],
        "20.10.0-20.10.2 would start it; 20.10.3+ fail"
    );
    let (_, text) = stdout(&mut verify(&root, none, &["--daemon-version", "20.10"]));
    assert!(
        text.contains("20.10 means 20.10.24, the newest 20.10 release"),
        "{text}"
    );
    assert!(
        text.contains("20.10.0-20.10.2 would start it; 20.10.3+ fail"),
        "{text}"
    );
    assert!(text.contains("error evaluating symlinks from mount source \"/var/lib/docker-old/volumes/data1/_data\""), "{text}");

    let (code, doc) = json_run(&mut verify(&root, none, &["--daemon-version", "20.10.2"]));
    assert_eq!(code, 0, "20.10.2 recomputes the path: {doc:#}");
    assert!(doc["containers"][0].get("within_series").is_none());
    assert!(doc["prediction"].get("meaning").is_none());
}

#[test]
fn scan_says_which_dockerd_it_predicts_for() {
    let root = moved_root();
    let bin = tempfile::tempdir().unwrap();
    let dockerd = fake_dockerd(
        bin.path(),
        "echo 'Docker version 20.10.24+dfsg1, build 5d6db84'",
    );
    let (code, doc) = json_run(
        root.volmig()
            .env("VOLMIG_DOCKERD", &dockerd)
            .args(["-H", NO_DAEMON, "scan"]),
    );
    assert_eq!(code, 0);
    assert_eq!(doc["daemon_version"], "20.10.24");
    assert_eq!(doc["prediction"]["source"], "installed");
}

/// The command between the backticks of a fix, as argv without `volmig`.
fn command_in(fix: &str) -> Vec<String> {
    let cmd = fix
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {fix}"));
    let words: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], "volmig", "{fix}");
    words[1..].to_vec()
}

fn stale_fix(doc: &serde_json::Value) -> String {
    doc["containers"][0]["mounts"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "stale-source-relabel")
        .unwrap_or_else(|| panic!("no stale-source-relabel in {doc:#}"))["fix"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn with_dockerd_stopped_the_fix_is_a_rewrite_sources_that_works() {
    let root = moved_root();
    let none = Path::new("");
    let (code, doc) = json_run(&mut verify(&root, none, &["--daemon-version", "20.10.24"]));
    assert_eq!(code, 1);
    let fix = stale_fix(&doc);
    assert!(fix.ends_with("before starting dockerd"), "{fix}");
    assert!(!fix.contains("volmig import does"), "{fix}");
    let (code, out) = json_run(
        crate::common::volmig()
            .args(command_in(&fix))
            .args(["-H", NO_DAEMON]),
    );
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["rewritten"][0]["name"], "web");
    let (code, doc) = json_run(&mut verify(&root, none, &["--daemon-version", "20.10.24"]));
    assert_eq!(code, 0, "the fix worked: {doc:#}");
    // Idempotent.
    let (code, out) = json_run(
        crate::common::volmig()
            .args(command_in(&fix))
            .args(["-H", NO_DAEMON]),
    );
    assert_eq!(code, 0);
    assert_eq!(out["unchanged"][0]["name"], "web");
}

/// Holds metadata.db the way a running dockerd's bolt does (an exclusive
/// flock), for as long as the file stays open.
fn hold_like_dockerd(root: &FakeDataRoot) -> fs::File {
    use std::os::fd::AsRawFd;
    let db = fs::File::open(root.path().join("volumes/metadata.db")).unwrap();
    assert_eq!(unsafe { libc::flock(db.as_raw_fd(), libc::LOCK_EX) }, 0);
    db
}

#[test]
fn with_dockerd_running_the_fix_says_stop_rewrite_start_and_rewrite_sources_refuses() {
    let root = moved_root();
    let none = Path::new("");
    let held = hold_like_dockerd(&root);
    let (code, doc) = json_run(&mut verify(&root, none, &["--daemon-version", "20.10.24"]));
    assert_eq!(code, 1);
    let fix = stale_fix(&doc);
    assert!(
        fix.starts_with("dockerd keeps the old Source in memory and writes it back: stop it (systemctl stop docker), run `volmig --data-root ")
            && fix.ends_with("then start it (systemctl start docker)"),
        "{fix}"
    );
    let config = root
        .path()
        .join("containers")
        .join(id(1))
        .join("config.v2.json");
    let before = fs::read(&config).unwrap();
    let out = crate::common::volmig()
        .args(command_in(&fix))
        .args(["-H", NO_DAEMON])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "refused, nothing changed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a dockerd is running on this data-root")
            && err.contains("stop dockerd (systemctl stop docker), run this again"),
        "{err}"
    );
    assert_eq!(fs::read(&config).unwrap(), before);
    // "Stopped": the same command now works.
    drop(held);
    let (code, _) = json_run(
        crate::common::volmig()
            .args(command_in(&fix))
            .args(["-H", NO_DAEMON]),
    );
    assert_eq!(code, 0);
}

#[test]
fn a_live_import_into_a_moved_root_says_to_stop_rewrite_and_start() {
    // The source: web with a z-mode volume, in its own data-root.
    let mut source = FakeDataRoot::new();
    let src = source.path();
    source
        .volume("data1", &[])
        .container(&id(1), "web", &[volume_mount("data1", "/data", &src)])
        .write_db();
    fs::write(src.join("volumes/data1/_data/file"), b"data").unwrap();
    let bundle = tempfile::tempdir().unwrap();
    let file = bundle.path().join("b.tar");
    source
        .volmig()
        .args(["export", "web", "-o"])
        .arg(&file)
        .assert()
        .success();
    // The target: a moved data-root whose dockerd knows web with its old
    // Source, and runs (holds metadata.db) while the volume is imported.
    let mut target = FakeDataRoot::new();
    let m = volume_mount("data1", "/data", Path::new("/var/lib/docker-old"));
    target.container(&id(1), "web", &[m]).write_db();
    let held = hold_like_dockerd(&target);
    let out = target
        .volmig()
        .args(["-H", NO_DAEMON, "--daemon-version", "20.10.24", "import"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let want = format!(
        "fix: systemctl stop docker && volmig --data-root {} rewrite-sources web && systemctl start docker",
        target.path().display()
    );
    assert!(
        text.contains("the running dockerd keeps the old volume Sources of web in memory"),
        "{text}"
    );
    assert!(text.contains(&want), "{text}");
    assert!(!text.contains("volmig import does"), "{text}");
    // Stop, rewrite, start: the container starts.
    drop(held);
    target
        .volmig()
        .args(["-H", NO_DAEMON, "rewrite-sources", "web"])
        .assert()
        .success();
    let (code, doc) = json_run(&mut verify(
        &target,
        Path::new(""),
        &["--daemon-version", "20.10.24"],
    ));
    assert_eq!(code, 0, "{doc:#}");
}
