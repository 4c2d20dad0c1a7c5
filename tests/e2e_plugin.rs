//! Issue 10 end to end: `docker volmig` through the real docker CLIs (the
//! 20.10 client `/usr/bin/docker`, always, and `/usr/local/bin/docker`,
//! 28.x, when it is installed) against a private dockerd 20.10: the plugin
//! is installed by `volmig install-plugin` into a `DOCKER_CONFIG` of the
//! test's own (never the real home), found by the CLI, and takes its
//! daemon and data-root from the CLI's context, `DOCKER_HOST` or docker's
//! `--context`/`-H`. `verify --all` and `export -o - | import -` run
//! through it. `VOLMIG_SKIP_E2E=1` (at build time) ignores its tests;
//! without root or dockerd they fail with the reason.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::e2e::PrivateDaemon;

const VOLMIG: &str = env!("CARGO_BIN_EXE_volmig");
/// The current docker CLI, tested too when present.
const CURRENT_DOCKER: &str = "/usr/local/bin/docker";

/// The docker CLIs to drive the plugin with: 20.10 always, 28.x if here.
fn clients() -> Vec<&'static str> {
    let mut out = vec![crate::e2e::DOCKER];
    if Path::new(CURRENT_DOCKER).is_file() {
        out.push(CURRENT_DOCKER);
    }
    out
}

/// `CLI ARGS` with only `cfg` as its configuration: no daemon from the
/// environment, so the context decides.
fn docker(cli: &str, cfg: &Path) -> Command {
    let mut cmd = Command::new(cli);
    cmd.env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("VOLMIG_DATA_ROOT")
        .env("DOCKER_CONFIG", cfg);
    cmd
}

/// Runs a command; panics unless it exits 0; returns stdout.
fn ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} exited {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `verify --all --json` document through the plugin must see the
/// private daemon and its data-root, and the container `web` starting.
fn check_verify(doc_text: &str, d: &PrivateDaemon, what: &str) {
    let doc: Value = serde_json::from_str(doc_text)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{doc_text}"));
    assert_eq!(doc["ok"], true, "{what}: {doc:#}");
    assert_eq!(doc["data_root"], d.root.display().to_string(), "{what}");
    assert_eq!(doc["prediction"]["host"], d.host(), "{what}");
    assert_eq!(doc["prediction"]["daemon_running"], true, "{what}");
    assert_eq!(doc["daemon_version_source"], "daemon", "{what}");
    let names: Vec<&str> = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["web"], "{what}");
}

/// `docker volmig export web -o - | docker volmig --data-root T import -`,
/// then the volume's bytes and label are in T.
fn export_import_pipe(cli: &str, cfg: &Path, target: &Path) {
    fs::create_dir_all(target).unwrap();
    let mut export = docker(cli, cfg)
        .args(["volmig", "-q", "export", "web", "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = export.stdout.take().unwrap();
    let import = docker(cli, cfg)
        .args(["volmig", "-q", "--data-root"])
        .arg(target)
        .args(["import", "-"])
        .stdin(pipe)
        .output()
        .unwrap();
    let export = export.wait_with_output().unwrap();
    assert!(
        export.status.success(),
        "{cli} volmig export exited {}: {}",
        export.status,
        String::from_utf8_lossy(&export.stderr)
    );
    assert!(
        import.status.success(),
        "{cli} volmig import - exited {}: {}{}",
        import.status,
        String::from_utf8_lossy(&import.stdout),
        String::from_utf8_lossy(&import.stderr)
    );
    let data = target.join("volumes/webdata/_data");
    assert_eq!(
        fs::read_to_string(data.join("greeting")).unwrap(),
        "hello\n"
    );
    assert_eq!(fs::read_to_string(data.join("sub/f")).unwrap(), "x\n");
    let scan = ok(
        docker(cli, cfg)
            .args(["volmig", "--json", "--data-root"])
            .arg(target)
            .arg("scan"),
        "docker volmig scan of the target",
    );
    let scan: Value = serde_json::from_str(&scan).unwrap();
    assert_eq!(
        scan["volumes"]["webdata"]["labels"]["app"], "web",
        "{scan:#}"
    );
}

/// Installs the plugin with `volmig install-plugin` into `cfg/cli-plugins`
/// (its default under DOCKER_CONFIG); returns the plugin's path.
fn install_plugin(cfg: &Path) -> PathBuf {
    let out = ok(
        Command::new(VOLMIG)
            .arg("install-plugin")
            .env("DOCKER_CONFIG", cfg),
        "volmig install-plugin",
    );
    let plugin = cfg.join("cli-plugins/docker-volmig");
    assert!(out.contains(&plugin.display().to_string()), "{out}");
    assert_eq!(
        fs::canonicalize(&plugin).unwrap(),
        fs::canonicalize(VOLMIG).unwrap()
    );
    plugin
}

#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn docker_volmig_verifies_and_moves_volumes_through_the_docker_cli() {
    let _e2e = crate::e2e::serial();
    let d = PrivateDaemon::start("plugin");
    d.load_busybox_image("e2eplug", None);
    d.dk(&["volume", "create", "--label", "app=web", "webdata"]);
    d.dk(&[
        "run",
        "--name",
        "web",
        "-v",
        "webdata:/data",
        "e2eplug",
        "sh",
        "-c",
        "echo hello > /data/greeting && mkdir /data/sub && echo x > /data/sub/f",
    ]);
    let cfg = d.dir.join("client-plugin");
    install_plugin(&cfg);
    // The context as the 20.10 CLI writes it; `docker context use` makes
    // it config.json's currentContext.
    let context_host = format!("host={}", d.host());
    ok(
        docker(crate::e2e::DOCKER, &cfg).args([
            "context",
            "create",
            "e2e",
            "--docker",
            &context_host,
        ]),
        "docker context create",
    );
    ok(
        docker(crate::e2e::DOCKER, &cfg).args(["context", "use", "e2e"]),
        "docker context use",
    );

    let clients = clients();
    println!("docker CLIs: {clients:?}");
    for (i, cli) in clients.iter().enumerate() {
        let version = ok(docker(cli, &cfg).arg("--version"), "docker --version");
        println!("{cli}: {}", version.trim());
        let help = ok(docker(cli, &cfg).arg("--help"), "docker --help");
        assert!(
            help.lines().any(|l| l.trim_start().starts_with("volmig")),
            "{cli} --help does not list the plugin:\n{help}"
        );
        // The daemon from config.json's currentContext.
        let doc = ok(
            docker(cli, &cfg).args(["volmig", "--json", "verify", "--all"]),
            "docker volmig verify --all (current context)",
        );
        check_verify(&doc, &d, &format!("{cli}: current context"));
        // From DOCKER_HOST, which beats the context.
        let doc = ok(
            docker(cli, &cfg)
                .env("DOCKER_HOST", d.host())
                .env("DOCKER_CONTEXT", "default")
                .args(["volmig", "--json", "verify", "--all"]),
            "DOCKER_HOST=... docker volmig verify --all",
        );
        check_verify(&doc, &d, &format!("{cli}: DOCKER_HOST"));
        // docker's own --context before `volmig` beats DOCKER_CONTEXT.
        let doc = ok(
            docker(cli, &cfg).env("DOCKER_CONTEXT", "default").args([
                "--context",
                "e2e",
                "volmig",
                "--json",
                "verify",
                "--all",
            ]),
            "docker --context e2e volmig verify --all",
        );
        check_verify(&doc, &d, &format!("{cli}: --context"));
        export_import_pipe(cli, &cfg, &d.dir.join(format!("target-{i}")));
        println!("{cli}: verify --all and export | import through docker volmig: ok");
    }
}

/// A broken config.json: the docker CLIs warn and run the plugin anyway
/// (20.10: `WARNING: Error loading config file`), and the plugin warns
/// too, naming the file, and goes on with the default socket, here for a
/// data-root given with --data-root. (A broken meta.json of the current
/// context stops the 20.10 CLI itself, exit 1, before the plugin runs;
/// 28.x runs it and volmig names the file.)
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs the docker CLIs")]
fn through_the_docker_cli_a_broken_config_json_is_named_in_a_warning() {
    assert!(
        Path::new(crate::e2e::DOCKER).is_file(),
        "{} is missing (Debian package docker.io)",
        crate::e2e::DOCKER
    );
    let cfg = tempfile::tempdir().unwrap();
    install_plugin(cfg.path());
    let config = cfg.path().join("config.json");
    fs::write(&config, r#"{"currentContext": "web""#).unwrap();
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("containers")).unwrap();
    fs::create_dir(root.path().join("volumes")).unwrap();
    for cli in clients() {
        let out = docker(cli, cfg.path())
            .args(["volmig", "--data-root"])
            .arg(root.path())
            .args(["verify", "--all"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{cli}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "warning: `{}` is not a valid docker CLI file",
                config.display()
            )) && stderr.contains("unix:///var/run/docker.sock"),
            "{cli}: {stderr}"
        );
    }
}
