//! Issue 10: a broken docker CLI configuration must not stop offline work.
//! The docker CLI warns about a malformed config.json and goes on with the
//! default daemon; with `--data-root` the daemon is optional (only asked
//! whether it serves that data-root), so volmig warns too when the context
//! config.json picks cannot be resolved. A context or host named
//! explicitly (`--context`, `DOCKER_CONTEXT`, `-H`, `DOCKER_HOST`) that
//! cannot be used stays an error, exit 2, naming it.

use std::fs;
use std::path::Path;

use crate::common::{volume_mount, FakeDataRoot};
use assert_cmd::Command;
use serde_json::Value;

const APP_ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// A data-root where all is well: `app` mounting volume `appdata`.
fn healthy() -> FakeDataRoot {
    let mut root = FakeDataRoot::new();
    let path = root.path();
    root.volume("appdata", &[])
        .container(APP_ID, "app", &[volume_mount("appdata", "/data", &path)])
        .write_db();
    root
}

/// `volmig --data-root ROOT` with HOME at `home` and nothing else of the
/// docker CLI's environment.
fn volmig(home: &Path, root: &FakeDataRoot) -> Command {
    let mut cmd = root.volmig();
    cmd.env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_CONFIG")
        .env("HOME", home);
    cmd
}

/// A HOME whose `.docker/config.json` holds `text`.
fn home_with_config(text: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    fs::create_dir(home.path().join(".docker")).unwrap();
    fs::write(home.path().join(".docker/config.json"), text).unwrap();
    home
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `scan`, `verify --all` and their `--json` run with a warning on stderr
/// that names `file` and the daemon used instead.
fn assert_offline_work_goes_on(home: &Path, root: &FakeDataRoot, file: &str) {
    for args in [&["scan"][..], &["verify", "--all"][..]] {
        let out = volmig(home, root).args(args).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.contains("warning:"), "{args:?}: no warning: {err}");
        assert!(err.contains(file), "{args:?}: `{file}` not named: {err}");
        assert!(
            err.contains("unix:///var/run/docker.sock"),
            "{args:?}: the daemon used instead is not named: {err}"
        );
        let out = volmig(home, root)
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?} --json");
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} --json: not one document ({e}): {}",
                text(&out.stdout)
            )
        });
        assert_eq!(doc["ok"], true, "{args:?} --json: {doc}");
        assert!(text(&out.stderr).contains("warning:"), "{args:?} --json");
    }
}

#[test]
fn malformed_docker_config_json_stopped_offline_scan_and_verify() {
    let home = home_with_config("{ not json");
    let file = home.path().join(".docker/config.json");
    assert_offline_work_goes_on(home.path(), &healthy(), file.to_str().unwrap());
}

#[test]
fn unreadable_docker_config_json_stopped_offline_scan_and_verify() {
    let home = tempfile::tempdir().unwrap();
    // A directory where the file should be: unreadable even to root.
    let file = home.path().join(".docker/config.json");
    fs::create_dir_all(&file).unwrap();
    assert_offline_work_goes_on(home.path(), &healthy(), file.to_str().unwrap());
}

/// `docker context use gone`, then the context removed by hand, or its
/// meta.json broken: with --data-root, a warning.
#[test]
fn a_current_context_that_is_gone_or_broken_stopped_offline_scan_and_verify() {
    let home = home_with_config(r#"{"currentContext":"gone"}"#);
    assert_offline_work_goes_on(home.path(), &healthy(), "gone");

    let home = home_with_config(r#"{"currentContext":"web"}"#);
    // The docker CLI keeps a context under the SHA-256 of its name.
    let id = sha256_hex(b"web");
    let meta = home.path().join(".docker/contexts/meta").join(id);
    fs::create_dir_all(&meta).unwrap();
    fs::write(meta.join("meta.json"), "[1, 2").unwrap();
    assert_offline_work_goes_on(home.path(), &healthy(), "meta.json");
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(data))
}

/// A context named explicitly is the user's choice: going on with another
/// daemon would be a surprise, so it stays an error naming it.
#[test]
fn an_explicit_context_or_host_that_cannot_be_used_stays_an_error() {
    let home = home_with_config("{ not json");
    let root = healthy();
    let out = volmig(home.path(), &root)
        .env("DOCKER_CONTEXT", "nowhere")
        .arg("scan")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`nowhere`") && err.contains("does not exist"),
        "{err}"
    );

    for (how, host) in [("-H", "bogus"), ("DOCKER_HOST", "ssh://u@h")] {
        let mut cmd = volmig(home.path(), &root);
        match how {
            "-H" => cmd.args(["-H", host]),
            _ => cmd.env("DOCKER_HOST", host),
        };
        let out = cmd.arg("scan").output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{how} {host}: {err}");
        assert!(
            err.contains(how) && err.contains(&format!("`{host}`")),
            "{how} {host}: {err}"
        );
    }
}

/// Without --data-root the data-root is the daemon's: a current context
/// that does not exist is an error (as in the docker CLI), not a guess
/// through another daemon.
#[test]
fn without_data_root_a_missing_current_context_stays_an_error() {
    let home = home_with_config(r#"{"currentContext":"gone"}"#);
    let out = crate::common::volmig()
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_CONFIG")
        .env("HOME", home.path())
        .arg("scan")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`gone`") && err.contains("config.json"),
        "{err}"
    );
}
