//! End-to-end against a real, private dockerd 20.10 (issue 4): the daemon
//! is the judge of a migration and of volmig's predictions.
//!
//! Every test starts and stops its own daemon(s) (see `e2e/mod.rs`), one at
//! a time (`e2e::serial`: with every other daemon test), on data-roots under /var/tmp/volmig-e2e. Without a
//! daemon (not root, no dockerd, no answer) each test fails with the
//! reason; `VOLMIG_SKIP_E2E=1` skips them instead. `VOLMIG_E2E_KEEP=1`
//! leaves the directories of the run in place; `VOLMIG_E2E_DOCKERD=PATH`
//! tests another dockerd binary.
//!
//! Scenario 1 (the source data-root) is `e2e/source.rs`, built once per
//! run and reset before each scenario. Its data-root path is also the
//! target's (a migration to another host with the same `--data-root`),
//! except in scenario 5.
//!
//! | test | issue 4 scenario |
//! |---|---|
//! | `s2_lost_volumes_verify_predicts_docker_start` | 2: verify vs `docker start` on lost volumes |
//! | `s3_offline_migration_*` | 3: export, import offline, compare everything |
//! | `s4_live_migration_registers_volumes_without_restart` | 4: import into a running daemon |
//! | `engine_export_quiesces_running_containers_and_puts_them_back` | export `--stop`/`--pause` |
//! | `s5_moved_data_root` | 5: another data-root path |
//! | `s6_malformed_opts_json_*` | 6: opts.json that stops the daemon |
//! | `tree_compare_sees_every_attribute` | the tree compare itself (no daemon) |

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::failure_messages;
use crate::e2e::source::{drop_volumes, source, start_and_wait, Source, CONTAINERS};
use crate::e2e::{daemon_error, tree, volmig_json, volmig_run, PrivateDaemon};

/// The fatal messages of a scan document (dockerd would not start).
fn fatal_messages(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut take = |f: &Value| {
        if f["severity"] == "fatal" {
            out.push(f["message"].as_str().unwrap().to_string());
        }
    };
    doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .for_each(&mut take);
    for v in doc["volumes"].as_object().into_iter().flatten() {
        v.1["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .for_each(&mut take);
    }
    out
}

// ------------------------------------------------------------ scenario 2 --

/// `volmig --daemon-version <the daemon's> ARGS`, daemon stopped.
fn offline_json(src: &Source, root: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--daemon-version", &src.daemon_version];
    all.extend_from_slice(args);
    volmig_json(root, &all)
}

/// Runs `docker start` on every container and compares each outcome with
/// volmig's prediction (`verify --all` document): a predicted start must
/// start; a predicted failure must fail with one of the predicted texts,
/// exactly that text when one was predicted. dockerd reports the first
/// failing mount of a Go map walk, so a container with several predicted
/// failures is started up to 12 times to see more than one.
fn compare_starts(d: &PrivateDaemon, doc: &Value, problems: &mut Vec<String>) {
    for name in CONTAINERS {
        let pred = failure_messages(doc, name);
        let tries = if pred.len() > 1 { 12 } else { 1 };
        let mut seen = BTreeSet::new();
        let mut started = false;
        for _ in 0..tries {
            let out = d.dk_output(&["start", name]);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                started = true;
                d.dk(&["wait", name]);
                break;
            }
            match daemon_error(&stderr) {
                Some(e) => {
                    seen.insert(e);
                }
                None => problems.push(format!(
                    "docker start {name}: no daemon error in {stderr:?}"
                )),
            }
            if seen == pred {
                break;
            }
        }
        println!(
            "{name}: docker start {} {seen:?}; volmig predicted {pred:?}",
            if started { "STARTED" } else { "failed:" }
        );
        if pred.is_empty() {
            if !started {
                problems.push(format!(
                    "{name}: volmig predicted a start, dockerd said {seen:?}"
                ));
            }
            continue;
        }
        if started {
            problems.push(format!(
                "{name}: dockerd started it, volmig predicted {pred:?}"
            ));
        }
        for s in &seen {
            if !pred.contains(s) {
                problems.push(format!(
                    "{name}: dockerd said {s:?}, not among volmig's predictions {pred:?}"
                ));
            }
        }
        if pred.len() == 1 && !started && seen != pred {
            problems.push(format!("{name}: dockerd said {seen:?}, volmig {pred:?}"));
        }
    }
}

/// The failure volmig exists for: the target is the source data-root
/// without its volume directories (metadata.db kept), on a host where the
/// bind sources are gone too. `verify --all` (daemon stopped) names every
/// failing mount; then each `docker start` prints what volmig predicted.
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s2_lost_volumes_verify_predicts_docker_start() {
    let _e2e = crate::e2e::serial();
    let src = source();
    drop_volumes(&src.root);
    fs::remove_dir_all(src.binds.join("m")).unwrap();
    fs::remove_dir_all(src.binds.join("v")).unwrap();

    let (code, doc) = offline_json(src, &src.root, &["verify", "--all"]);
    assert_eq!(code, 1, "verify --all on lost volumes: {doc:#}");
    assert_eq!(doc["ok"], false);

    // What must be named, from the source's own `docker inspect`.
    let mut problems = Vec::new();
    for name in CONTAINERS {
        let c = &src.containers[name];
        let mut expected: BTreeSet<String> = c
            .volume_names()
            .iter()
            .map(|v| format!("get {v}: no such volume"))
            .collect();
        if name == "bindm" {
            expected.insert(format!(
                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                src.binds.join("m").display()
            ));
        }
        let got = failure_messages(&doc, name);
        if got != expected {
            problems.push(format!(
                "verify {name}: predicted {got:?}, expected every failing mount {expected:?}"
            ));
        }
    }

    let mut d = PrivateDaemon::start_on("s2", &src.root);
    compare_starts(&d, &doc, &mut problems);
    // dockerd re-created the `-v` bind source, as volmig warned.
    let bindv = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bindv")
        .unwrap();
    let warned = bindv["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["destination"] == "/v" && m["status"] == "warning");
    if !warned {
        problems.push(format!(
            "bindv: no warning for the missing -v source: {bindv:#}"
        ));
    }
    if !src.binds.join("v").is_dir() {
        problems.push("dockerd did not re-create the -v bind source".into());
    }
    d.stop();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------ scenario 3 --

/// Compares `target/volumes/*` with the pristine source, volume by volume.
/// Strict for live imports too: dockerd rewrites `opts.json` and resets
/// `_data` when it registers a volume, and volmig puts both back.
fn compare_volumes(src: &Source, target: &Path, what: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let names = |r: &Path| -> BTreeSet<String> {
        fs::read_dir(r.join("volumes"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let (want, got) = (names(&src.pristine), names(target));
    if want != got {
        problems.push(format!(
            "{what}: volume directories differ: source {want:?}, target {got:?}"
        ));
    }
    for v in &want {
        let a = tree::snapshot(&src.pristine.join("volumes").join(v));
        let b = tree::snapshot(&target.join("volumes").join(v));
        let diff = tree::diff(&a, &b);
        if !diff.is_empty() {
            problems.push(format!("{what}: volume {v}:\n{diff}"));
        }
    }
    problems
}

/// `volmig export <every container> [EXTRA] -o <dir>/<test>.bundle` from
/// the source data-root, daemon stopped.
fn export_all(src: &Source, test: &str, extra: &[&str]) -> PathBuf {
    let bundle = src.dir.join(format!("{test}.bundle"));
    let out_arg = bundle.display().to_string();
    let mut args = vec!["export"];
    args.extend(CONTAINERS);
    args.extend_from_slice(extra);
    args.extend(["-o", &out_arg]);
    let (code, out, err) = volmig_run(&src.root, &args);
    assert_eq!(code, 0, "volmig export: {out}{err}");
    println!("export: {}", err.trim());
    bundle
}

/// `volmig [-H host | --daemon-version V] import BUNDLE` into `target`;
/// the bundle is removed afterwards; the import must exit 0.
fn import(src: &Source, target: &Path, bundle: &Path, host: Option<&str>) {
    let b = bundle.display().to_string();
    let args: Vec<&str> = match host {
        Some(h) => vec!["-H", h, "import", &b],
        None => vec!["--daemon-version", &src.daemon_version, "import", &b],
    };
    let (code, out, err) = volmig_run(target, &args);
    println!("import: {}\n{}", out.trim(), err.trim());
    fs::remove_file(bundle).unwrap();
    assert_eq!(code, 0, "volmig import exited {code}:\n{out}{err}");
}

/// With a daemon running on `target`: every container starts and exits 0,
/// `docker volume ls` lists the source's volumes, and `docker volume
/// inspect` shows the source's labels and options (the mountpoint under
/// `target`).
fn check_target(d: &PrivateDaemon, src: &Source, target: &Path, what: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for name in CONTAINERS {
        let r = std::panic::catch_unwind(|| start_and_wait(d, name));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "panic".into());
            problems.push(format!("{what}: {msg}"));
        }
    }
    let listed: BTreeSet<String> = d
        .dk(&["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = src.volume_names().into_iter().collect();
    if listed != want {
        problems.push(format!(
            "{what}: docker volume ls: source {want:?}, target {listed:?}"
        ));
    }
    for (v, before) in &src.volumes {
        let out = d.dk_output(&["volume", "inspect", v]);
        if !out.status.success() {
            problems.push(format!(
                "{what}: docker volume inspect {v}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let after: Value = serde_json::from_slice(&out.stdout).unwrap();
        let after = &after[0];
        for key in ["Name", "Driver", "Labels", "Options", "Scope"] {
            if before[key] != after[key] {
                problems.push(format!(
                    "{what}: docker volume inspect {v}: {key} was {} on the source, is {}",
                    before[key], after[key]
                ));
            }
        }
        let mountpoint = target.join("volumes").join(v).join("_data");
        if after["Mountpoint"] != mountpoint.display().to_string() {
            problems.push(format!(
                "{what}: docker volume inspect {v}: Mountpoint {}, expected {}",
                after["Mountpoint"],
                mountpoint.display()
            ));
        }
    }
    problems
}

/// Offline migration: export from the source (daemon stopped), import into
/// the target (the source without its volume directories; with or without
/// its metadata.db), start the daemon there: every container starts and
/// exits 0, every volume tree equals the source's on every attribute, and
/// `docker volume inspect` shows the source's labels and options.
fn offline_migration(test: &str, keep_metadata_db: bool, export_args: &[&str]) {
    let src = source();
    let t0 = std::time::Instant::now();
    let lap = |what: &str| println!("{test}: {what} at {:.1}s", t0.elapsed().as_secs_f64());
    let bundle = export_all(src, test, export_args);
    lap("exported");
    drop_volumes(&src.root);
    if !keep_metadata_db {
        fs::remove_file(src.root.join("volumes/metadata.db")).unwrap();
    }
    import(src, &src.root, &bundle, None);
    let (code, doc) = offline_json(src, &src.root, &["verify", "--all"]);
    assert_eq!(code, 0, "verify --all after import: {doc:#}");

    lap("imported");
    let mut problems = compare_volumes(src, &src.root, "after import");
    lap("compared");
    let mut d = PrivateDaemon::start_on(test, &src.root);
    problems.extend(check_target(&d, src, &src.root, "after import"));
    lap("containers ran");
    d.stop();
    drop(d);
    // The starts changed nothing either.
    problems.extend(compare_volumes(
        src,
        &src.root,
        "after the daemon and the containers ran",
    ));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s3_offline_migration_into_target_with_metadata_db() {
    let _e2e = crate::e2e::serial();
    offline_migration("s3", true, &[]);
}

/// The same into a target without metadata.db (a new host), through a
/// zstd-compressed bundle.
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s3_offline_migration_into_target_without_metadata_db() {
    let _e2e = crate::e2e::serial();
    offline_migration("s3b", false, &["--compress", "zstd"]);
}

// ------------------------------------------------------------ scenario 4 --

/// Live migration: the target daemon runs during the import. volmig
/// registers each volume through the Engine API (`-H`), and the daemon
/// serves them without a restart: every container starts, labels and
/// options as on the source, and `_data` exactly as in the source (dockerd
/// 20.10 resets it to root:root 0755 when it registers a directory: pgdata
/// is 999:999 0700). A restart changes nothing.
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s4_live_migration_registers_volumes_without_restart() {
    let _e2e = crate::e2e::serial();
    let src = source();
    drop_volumes(&src.root);
    let mut d = PrivateDaemon::start_on("s4", &src.root);
    // The daemon knows no volume now (it dropped the orphan records).
    let before = d.dk(&["volume", "ls", "-q"]);
    assert_eq!(before.trim(), "", "volumes before the import: {before}");

    // As the README's live example: `volmig export ... -o - | volmig import -`
    // (from the pristine copy of the source: the source's own path is the
    // target's here).
    let mut export = crate::e2e::volmig();
    export
        .arg("--data-root")
        .arg(&src.pristine)
        .arg("export")
        .args(CONTAINERS)
        .args(["-o", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut export = export.spawn().unwrap();
    let import = crate::e2e::volmig()
        .arg("--data-root")
        .arg(&src.root)
        .args(["-H", &d.host(), "import", "-"])
        .stdin(export.stdout.take().unwrap())
        .output()
        .unwrap();
    let export = export.wait_with_output().unwrap();
    println!(
        "export -o - | import -: export {}: {}\nimport {}: {}{}",
        export.status,
        String::from_utf8_lossy(&export.stderr).trim(),
        import.status,
        String::from_utf8_lossy(&import.stdout).trim(),
        String::from_utf8_lossy(&import.stderr).trim()
    );
    assert!(export.status.success(), "export -o - failed");
    assert_eq!(import.status.code(), Some(0), "import - failed");

    let root = &src.root;
    let mut problems = compare_volumes(src, root, "live, right after import");
    problems.extend(check_target(&d, src, root, "live, no restart"));
    d.stop();
    problems.extend(compare_volumes(src, root, "live, after the starts"));
    d.start_again();
    problems.extend(check_target(&d, src, root, "live, after a restart"));
    d.stop();
    problems.extend(compare_volumes(src, root, "live, after a restart"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The Engine API on the source side: a running container is refused by
/// `export` unless `--stop` or `--pause`, which quiesce it and put it back
/// as it was (running; paused stays paused).
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn engine_export_quiesces_running_containers_and_puts_them_back() {
    let _e2e = crate::e2e::serial();
    let src = source();
    let mut d = PrivateDaemon::start_on("eng", &src.root);
    d.dk(&[
        "run",
        "-d",
        "--name",
        "live",
        "--network",
        "none",
        "-v",
        "data1:/data",
        crate::e2e::source::IMG,
        "sleep",
        "1000",
    ]);
    let host = d.host();
    let bundle = src.dir.join("eng.bundle");
    let b = bundle.display().to_string();
    let state = |d: &PrivateDaemon| -> (String, String) {
        let s = d.dk(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.StartedAt}}",
            "live",
        ]);
        let (status, started) = s.trim().split_once(' ').unwrap();
        (status.to_string(), started.to_string())
    };
    let mut problems = Vec::new();

    let (code, out, err) = volmig_run(&src.root, &["-H", &host, "export", "live", "-o", &b]);
    println!("export of a running container: exit {code}: {out}{err}");
    if code != 2 || bundle.exists() {
        problems.push(format!(
            "export of a running container: exit {code}, bundle written: {}",
            bundle.exists()
        ));
    }
    let (status, started) = state(&d);
    if status != "running" {
        problems.push(format!("after the refused export: {status}"));
    }

    for (flag, before) in [
        ("--stop", "running"),
        ("--pause", "running"),
        ("--pause", "paused"),
    ] {
        if before == "paused" {
            d.dk(&["pause", "live"]);
        }
        let (code, out, err) =
            volmig_run(&src.root, &["-H", &host, "export", "live", flag, "-o", &b]);
        println!("export {flag} of a {before} container: exit {code}: {out}{err}");
        let (after, _) = state(&d);
        if code != 0 {
            problems.push(format!(
                "export {flag} of a {before} container: exit {code}: {out}{err}"
            ));
        } else {
            let (c, out, err) = volmig_run(&src.root, &["inspect", &b, "--check"]);
            if c != 0 {
                problems.push(format!(
                    "inspect --check of the {flag} bundle: exit {c}: {out}{err}"
                ));
            }
        }
        if after != before {
            problems.push(format!(
                "export {flag}: the container was {before}, is {after} afterwards"
            ));
        }
        let _ = fs::remove_file(&bundle);
        if before == "paused" {
            d.dk(&["unpause", "live"]);
        }
    }
    let (_, started_after) = state(&d);
    if started_after == started {
        problems.push(
            "export --stop did not stop and start the container (StartedAt unchanged)".into(),
        );
    }
    d.dk(&["rm", "-f", "live"]);
    d.stop();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------ scenario 5 --

/// A directory removed when dropped (a target at another path).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() || std::env::var_os("VOLMIG_E2E_KEEP").is_none() {
            crate::e2e::remove_tree(&self.0);
        }
    }
}

/// Another data-root path. First the whole data-root moved as it is, the
/// old path gone: `verify` (for the daemon's version) predicts what each
/// `docker start` then says (20.10.3-25.x evaluate the stored Source of
/// z/Z-mode mounts). Then the offline migration into a target at the new
/// path: import points the stored Sources at the target, and every
/// container starts with its data, labels and options.
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s5_moved_data_root() {
    let _e2e = crate::e2e::serial();
    let src = source();
    let bundle = export_all(src, "s5", &[]);
    let moved = Scratch(src.dir.join("moved"));
    crate::e2e::source::cp_a(&src.pristine, &moved.0);
    crate::e2e::remove_tree(&src.root); // the old path does not exist on the new host
    let mut problems = Vec::new();

    let (_, doc) = offline_json(src, &moved.0, &["verify", "--all"]);
    let mut d = PrivateDaemon::start_on("s5a", &moved.0);
    compare_starts(&d, &doc, &mut problems);
    d.stop();
    drop(d);

    crate::e2e::remove_tree(&moved.0);
    crate::e2e::source::cp_a(&src.pristine, &moved.0);
    drop_volumes(&moved.0);
    import(src, &moved.0, &bundle, None);
    let (code, doc) = offline_json(src, &moved.0, &["verify", "--all"]);
    if code != 0 {
        problems.push(format!("verify --all after import exited {code}: {doc:#}"));
    }
    problems.extend(compare_volumes(src, &moved.0, "moved, after import"));
    let mut d = PrivateDaemon::start_on("s5b", &moved.0);
    problems.extend(check_target(&d, src, &moved.0, "moved, after import"));
    d.stop();
    drop(d);
    problems.extend(compare_volumes(src, &moved.0, "moved, after the starts"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------ scenario 6 --

/// A malformed opts.json: `volmig export` refuses the volume; a bundle whose
/// opts.json bytes were changed in place (same length) is refused by
/// import with exit 2, and the target is left as it was.
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s6_malformed_opts_json_is_refused_by_export_and_import() {
    let _e2e = crate::e2e::serial();
    let src = source();
    let opts = src.root.join("volumes/tmpfsvol/opts.json");
    let good = fs::read(&opts).unwrap();

    // Export refuses a source volume whose opts.json dockerd cannot parse.
    let bundle = src.dir.join("s6.bundle");
    let out_arg = bundle.display().to_string();
    fs::write(&opts, br#"{"MountType":"tmpfs""#).unwrap();
    let (code, out, err) = volmig_run(&src.root, &["export", "withopts", "-o", &out_arg]);
    println!("export with a malformed opts.json: exit {code}: {out}{err}");
    assert_eq!(code, 2, "export must refuse: {out}{err}");
    assert!(err.contains("tmpfsvol"), "the volume is named: {err}");
    assert!(!bundle.exists(), "no bundle is left behind");
    assert!(!src.dir.join("s6.bundle.partial").exists());
    fs::write(&opts, &good).unwrap();

    // A good bundle, then the same bytes with opts.json garbled in place.
    let (code, out, err) = volmig_run(&src.root, &["export", "withopts", "named", "-o", &out_arg]);
    assert_eq!(code, 0, "{out}{err}");
    let mut bytes = fs::read(&bundle).unwrap();
    let (offset, len) = tar_entry_data(&bytes, "volumes/tmpfsvol/opts.json");
    let data = &mut bytes[offset..offset + len];
    assert_eq!(data, &good[..], "the bundle carries opts.json as it was");
    let from = br#""MountType":"tmpfs""#;
    let to = br#""MountType": tmpfs "#;
    let at = data
        .windows(from.len())
        .position(|w| w == from)
        .expect("MountType in opts.json");
    data[at..at + from.len()].copy_from_slice(to);
    println!(
        "garbled opts.json in the bundle: {}",
        String::from_utf8_lossy(data)
    );
    let bad = src.dir.join("s6-bad.bundle");
    fs::write(&bad, &bytes).unwrap();

    drop_volumes(&src.root);
    let before = target_state(&src.root);
    let (code, out, err) = volmig_run(&src.root, &["import", &bad.display().to_string()]);
    println!("import of the garbled bundle: exit {code}: {out}{err}");
    let after = target_state(&src.root);
    fs::remove_file(&bad).unwrap();
    fs::remove_file(&bundle).unwrap();
    assert_eq!(code, 2, "import must refuse: {out}{err}");
    assert!(
        err.contains("opts.json") || out.contains("opts.json"),
        "the entry is named: {out}{err}"
    );
    let diff = tree::diff(&before, &after);
    assert!(diff.is_empty(), "import changed the target:\n{diff}");
}

/// The whole data-root as far as a refused import could touch it (the
/// data-root's own mtime aside: a staging directory may come and go).
fn target_state(root: &Path) -> tree::Tree {
    let mut t = tree::snapshot(root);
    if let Some(top) = t.get_mut(std::ffi::OsStr::new("")) {
        top.mtime = (0, 0);
    }
    t
}

/// Offset and size of the data of the tar entry `path` in `bytes`.
fn tar_entry_data(bytes: &[u8], path: &str) -> (usize, usize) {
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap() == Path::new(path) {
            return (e.raw_file_position() as usize, e.size() as usize);
        }
    }
    panic!("no entry {path} in the bundle");
}

/// opts.json variants: each must be predicted by `volmig scan` as dockerd
/// then behaves: it refuses to start with exactly volmig's fatal text, or
/// it starts when volmig found nothing fatal.
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s6_malformed_opts_json_scan_predicts_the_daemon() {
    let _e2e = crate::e2e::serial();
    let src = source();
    let opts = src.root.join("volumes/tmpfsvol/opts.json");
    let variants: [&[u8]; 14] = [
        br#"{"MountType":"tmpfs""#,
        b"",
        br#"{"Quota":5}"#,
        br#"{"MountType":5}"#,
        b"[]",
        br#"{"MountType":"tmpfs"}x"#,
        br#"{"MountType":tmpfs}"#,
        br#"{"Quota":{"Size":-1}}"#,
        br#"{"Quota":{"Size":"x"}}"#,
        br#"{"Quota":{"Size":1.5}}"#,
        br#"{"MountType":"tmpfs","MountType":5}"#,
        b"\xef\xbb\xbf{}",
        b"null",
        br#"{"mounttype":"tmpfs","MountDevice":"tmpfs","Other":1,"Quota":null}"#,
    ];
    let mut d = PrivateDaemon::new("s6scan", Some(&src.root));
    let mut problems = Vec::new();
    for v in variants {
        let t0 = std::time::Instant::now();
        fs::write(&opts, v).unwrap();
        let shown = String::from_utf8_lossy(v).into_owned();
        let (code, doc) = offline_json(src, &src.root, &["scan"]);
        let fatal = fatal_messages(&doc);
        match d.try_start() {
            Ok(()) => {
                println!("opts.json {shown:?}: dockerd STARTED; volmig scan exit {code}, fatal {fatal:?}");
                d.stop();
                if code != 0 || !fatal.is_empty() {
                    problems.push(format!(
                        "opts.json {shown:?}: dockerd starts, volmig scan exit {code} {fatal:?}"
                    ));
                }
            }
            Err(f) => {
                let said: Vec<&str> = f
                    .log
                    .lines()
                    .filter(|l| l.contains("error while unmarshaling volume options"))
                    .collect();
                println!(
                    "opts.json {shown:?}: dockerd exit {:?} after {:.1}s: {said:?}; volmig scan exit {code}, fatal {fatal:?}",
                    f.exit_code,
                    t0.elapsed().as_secs_f64()
                );
                if code != 1 {
                    problems.push(format!(
                        "opts.json {shown:?}: dockerd refuses to start, volmig scan exit {code}"
                    ));
                }
                let said: Vec<String> = said.iter().map(|l| msg_of(l)).collect();
                if said.len() != 1 || fatal.len() != 1 || said[0] != fatal[0] {
                    problems.push(format!(
                        "opts.json {shown:?}: dockerd said {said:?}, volmig predicted {fatal:?}\n{}",
                        crate::e2e::tail(&f.log, 5)
                    ));
                }
            }
        }
    }
    drop(d);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The text of a dockerd log line: the bare line it prints on exit, or
/// the `msg="..."` of a logrus line.
fn msg_of(line: &str) -> String {
    if let Some(i) = line.find("msg=\"") {
        let rest = &line[i + 5..];
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                '"' => break,
                c => out.push(c),
            }
        }
        return out;
    }
    line.trim().to_string()
}

// ------------------------------------------------------------ the harness --

/// The tree compare sees a change of each attribute (no daemon needed).
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn tree_compare_sees_every_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    fs::create_dir(&a).unwrap();
    for f in ["mode", "owner", "mtime", "content", "xattr", "h1", "sparse"] {
        fs::write(a.join(f), "same\n").unwrap();
    }
    fs::hard_link(a.join("h1"), a.join("h2")).unwrap();
    symlink("mode", a.join("link")).unwrap();
    fs::File::create(a.join("sparse"))
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let b = dir.path().join("b");
    crate::e2e::source::cp_a(&a, &b);
    assert_eq!(tree::diff(&tree::snapshot(&a), &tree::snapshot(&b)), "");

    fs::set_permissions(b.join("mode"), fs::Permissions::from_mode(0o4600)).unwrap();
    std::os::unix::fs::lchown(b.join("owner"), Some(4242), None).unwrap();
    let m = fs::metadata(b.join("mtime")).unwrap();
    let f = fs::File::options()
        .write(true)
        .open(b.join("mtime"))
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    f.set_modified(
        std::time::UNIX_EPOCH
            + std::time::Duration::new(m.mtime() as u64, m.mtime_nsec() as u32 + 1),
    )
    .unwrap();
    drop(f);
    let t = fs::metadata(b.join("content")).unwrap().modified().unwrap();
    fs::write(b.join("content"), "diff\n").unwrap();
    fs::File::options()
        .write(true)
        .open(b.join("content"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let c = std::ffi::CString::new(b.join("xattr").as_os_str().as_encoded_bytes()).unwrap();
    let rc = unsafe { libc::setxattr(c.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(rc, 0);
    fs::remove_file(b.join("h2")).unwrap();
    crate::e2e::source::cp_a(&b.join("h1"), &b.join("h2"));
    fs::remove_file(b.join("link")).unwrap();
    symlink("owner", b.join("link")).unwrap();
    let sparse = fs::read(b.join("sparse")).unwrap();
    fs::remove_file(b.join("sparse")).unwrap();
    let out = std::process::Command::new("cp")
        .arg("--sparse=never")
        .arg("/dev/stdin")
        .arg(b.join("sparse"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&sparse)?;
            child.wait()
        })
        .unwrap();
    assert!(out.success());

    let diff = tree::diff(&tree::snapshot(&a), &tree::snapshot(&b));
    for (path, field) in [
        ("mode", "mode:"),
        ("owner", "uid:"),
        ("mtime", "mtime:"),
        ("content", "content:"),
        ("xattr", "xattrs:"),
        ("h1", "link_group:"),
        ("h2", "nlink:"),
        ("link", "link:"),
        ("sparse", "sparse:"),
    ] {
        assert!(
            diff.lines()
                .any(|l| l.starts_with(&format!("differs: \"{path}\"")) && l.contains(field)),
            "{path}: {field} not reported in:\n{diff}"
        );
    }
}

/// Issue 7: an import killed (SIGKILL) at its second volume rename, then a
/// real dockerd started right away on the half-committed data-root, as
/// after a power cut and a reboot. The daemon starts, and every volume it
/// finds is whole (each carried volume is all there or not there); then,
/// with the daemon stopped, `volmig recover` finishes the commit and the
/// target equals the source: every volume on every attribute, the labels
/// and options through `docker volume inspect`, every container starts.
#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn s7_dockerd_started_right_after_a_killed_commit() {
    let _e2e = crate::e2e::serial();
    let src = source();
    let bundle = export_all(src, "s7", &[]);
    drop_volumes(&src.root);
    let out = Command::new("/usr/bin/strace")
        // No `dockerd --version` child under strace -f.
        .env("VOLMIG_DOCKERD", "")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-einject=renameat2:signal=SIGKILL:when=2",
        ])
        .arg(crate::e2e::volmig().get_program())
        .arg("--data-root")
        .arg(&src.root)
        .arg("import")
        .arg(&bundle)
        .output()
        .expect("strace is needed: apt-get install strace (scripts/test does)");
    assert_eq!(out.status.code(), None, "the import must have been killed");
    let mut problems = Vec::new();
    {
        let mut d = PrivateDaemon::start_on("s7", &src.root);
        assert!(d.running(), "dockerd did not start after the crash");
        for v in src.volume_names() {
            let dir = src.root.join("volumes").join(&v);
            if !dir.exists() {
                continue;
            }
            let a = tree::snapshot(&src.pristine.join("volumes").join(&v));
            let b = tree::snapshot(&dir);
            let diff = tree::diff(&a, &b);
            if !diff.is_empty() {
                problems.push(format!("volume {v} is present but not whole:\n{diff}"));
            }
        }
        d.stop();
    }
    let (code, out, err) = volmig_run(&src.root, &["recover"]);
    println!("recover: {out}{err}");
    assert_eq!(code, 0, "volmig recover: {out}{err}");
    assert!(out.contains("finished the interrupted import"), "{out}");
    fs::remove_file(&bundle).unwrap();
    problems.extend(compare_volumes(src, &src.root, "after recover"));
    let mut d = PrivateDaemon::start_on("s7-after", &src.root);
    problems.extend(check_target(&d, src, &src.root, "after recover"));
    d.stop();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
