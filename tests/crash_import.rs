//! Issue 7: an import killed (SIGKILL) or failed (EIO, ENOSPC) at every
//! rename, fsync, metadata.db write and config rewrite, for a fresh target,
//! `--on-conflict replace` and `--on-conflict skip-identical`.
//!
//! Faults come from strace's `-e inject=` on the real binary (Debian's
//! strace, installed by scripts/test). After each one:
//! 1. no volume is missing or mixed: each is the target's old one, the
//!    bundle's new one, or (fresh target) absent;
//! 2. `volmig recover` completes: the target is then either unchanged or
//!    completely migrated (volumes, labels, configs), with no staging left;
//! 3. a re-run of the import leaves the target equal to the source on
//!    every attribute, labels included.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bundle_support::{
    bin, export_to, small_source, strace, tree, write_at, Node, APP_ID, DB_ID,
};
use crate::common::FakeDataRoot;
use volmig::dataroot::metadata::{read_store, write_records, VolumeRecord};

const VOLUMES: [&str; 3] = ["appdata", "pgdata", "shared"];

/// The system calls a fault is injected into: every kind of step of an
/// import that writes (renames and exchanges of volumes, metadata.db and
/// configs; fsyncs of the journal, staging and directories; the writes of
/// staged files, the journal, bbolt's pages and the configs; bbolt growing
/// its file).
const STEPS: [&str; 7] = [
    "renameat2",
    "rename",
    "fsync",
    "fdatasync",
    "syncfs",
    "write",
    "ftruncate",
];

/// A volume directory's every attribute, for "old or new, never mixed".
type VolumeTree = BTreeMap<Vec<u8>, Node>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Old,
    New,
    Absent,
    Mixed,
}

struct Case {
    name: &'static str,
    policy: &'static str,
    target: FakeDataRoot,
    /// Each volume as the target had it (None: absent) and its record.
    old: BTreeMap<&'static str, (Option<VolumeTree>, Option<VolumeRecord>)>,
    new: BTreeMap<&'static str, (VolumeTree, VolumeRecord)>,
    old_configs: BTreeMap<String, Vec<u8>>,
}

fn volume_tree(root: &Path, name: &str) -> Option<VolumeTree> {
    let dir = root.join("volumes").join(name);
    dir.symlink_metadata().ok().map(|_| tree(&dir).nodes)
}

fn records(root: &Path) -> BTreeMap<String, VolumeRecord> {
    read_store(&root.join("volumes/metadata.db"))
        .unwrap()
        .map(|s| s.records)
        .unwrap_or_default()
}

fn configs(root: &Path) -> BTreeMap<String, Vec<u8>> {
    [APP_ID, DB_ID]
        .iter()
        .filter_map(|id| {
            let p = root.join("containers").join(id).join("config.v2.json");
            fs::read(p).ok().map(|b| (id.to_string(), b))
        })
        .collect()
}

/// Copies a tree with every attribute (GNU cp).
fn cp_a(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// The target of a case: the source's containers (so that their stale
/// volume Sources get rewritten), plus what `volumes` puts there.
fn target(src: &FakeDataRoot, policy: &str) -> FakeDataRoot {
    let mut t = FakeDataRoot::new();
    for id in [APP_ID, DB_ID] {
        cp_a(
            &src.path().join("containers").join(id),
            &t.path().join("containers"),
        );
    }
    match policy {
        // Every volume exists with other content and other labels.
        "replace" => {
            for v in VOLUMES {
                t.volume(v, &[("owner", "target")]);
                write_at(
                    &t.path().join("volumes").join(v).join("_data/old.txt"),
                    format!("the target's own {v}\n").as_bytes(),
                    (1_500_000_000, 7),
                );
            }
            t.write_db();
        }
        // One volume already identical (carried earlier), the rest absent.
        "skip-identical" => {
            cp_a(
                &src.path().join("volumes/pgdata"),
                &t.path().join("volumes"),
            );
            let rec = records(&src.path())["pgdata"].clone();
            write_records(&t.path().join("volumes/metadata.db"), &[rec]).unwrap();
        }
        _ => {}
    }
    t
}

fn case(name: &'static str, policy: &'static str, src: &FakeDataRoot) -> Case {
    let t = target(src, policy);
    let old_records = records(&t.path());
    let new_records = records(&src.path());
    let old = VOLUMES
        .iter()
        .map(|v| {
            (
                *v,
                (volume_tree(&t.path(), v), old_records.get(*v).cloned()),
            )
        })
        .collect();
    let new = VOLUMES
        .iter()
        .map(|v| {
            (
                *v,
                (
                    volume_tree(&src.path(), v).unwrap(),
                    new_records[*v].clone(),
                ),
            )
        })
        .collect();
    let old_configs = configs(&t.path());
    Case {
        name,
        policy,
        target: t,
        old,
        new,
        old_configs,
    }
}

impl Case {
    fn seen(&self, v: &str) -> Seen {
        let now = volume_tree(&self.target.path(), v);
        let (old, _) = &self.old[v];
        let (new, _) = &self.new[v];
        match now {
            None if old.is_none() => Seen::Absent,
            None => Seen::Mixed, // a volume that existed is missing
            Some(t) if &t == new => Seen::New,
            Some(t) if old.as_ref() == Some(&t) => Seen::Old,
            Some(_) => Seen::Mixed,
        }
    }

    /// 1: every volume whole (old, new, or absent where it was absent).
    fn assert_whole(&self, what: &str) {
        for v in VOLUMES {
            let seen = self.seen(v);
            assert_ne!(
                seen,
                Seen::Mixed,
                "{}: after {what}: volume `{v}` is missing or mixed",
                self.name
            );
        }
    }

    /// 2: the whole target is as it was, or completely migrated.
    fn assert_unchanged_or_migrated(&self, what: &str) {
        let root = self.target.path();
        assert!(
            !root.join("volmig-staging").exists(),
            "{}: after {what}: staging left in {}",
            self.name,
            root.display()
        );
        let seen: Vec<Seen> = VOLUMES.iter().map(|v| self.seen(v)).collect();
        let recs = records(&root);
        let migrated = VOLUMES.iter().all(|v| self.seen(v) == Seen::New)
            && VOLUMES.iter().all(|v| recs.get(*v) == Some(&self.new[v].1));
        let unchanged = VOLUMES.iter().all(|v| {
            let (tree, rec) = &self.old[v];
            volume_tree(&root, v) == *tree && recs.get(*v) == rec.as_ref()
        }) && configs(&root) == self.old_configs;
        assert!(
            migrated || unchanged,
            "{}: after {what}: neither unchanged nor migrated: volumes {seen:?}, records {recs:#?}",
            self.name
        );
        if migrated {
            for (id, bytes) in configs(&root) {
                let config: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                for m in config["MountPoints"].as_object().unwrap().values() {
                    let source = m["Source"].as_str().unwrap_or("");
                    assert!(
                        !source.starts_with(&self_src_marker()),
                        "{}: after {what}: config of {id} still points at the source: {source}",
                        self.name
                    );
                }
            }
        }
    }

    fn volmig(&self) -> Command {
        let mut c = Command::new(bin());
        // No installed dockerd is run: its system calls would shift the counts.
        c.env("VOLMIG_DOCKERD", "")
            .arg("--data-root")
            .arg(self.target.path());
        c
    }
}

/// Every source data-root is a tempdir: its path marks a stale Source.
fn self_src_marker() -> String {
    SRC_MARK.with(|m| m.borrow().clone())
}

thread_local! {
    static SRC_MARK: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// How many times each step's system call runs in one successful import
/// (the most in any one thread), from strace's trace.
fn step_counts(c: &Case, bundle: &Path) -> BTreeMap<&'static str, usize> {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(strace());
    cmd.env("VOLMIG_DOCKERD", "")
        .args(["-f", "-qq", "-o"])
        .arg(log.path())
        .arg(format!("-etrace={}", STEPS.join(",")))
        .arg(bin())
        .arg("--data-root")
        .arg(c.target.path())
        .args(["import", "--on-conflict", c.policy])
        .arg(bundle);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: the import without faults failed: {}",
        c.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(log.path()).unwrap();
    let mut per: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for line in text.lines() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("", line));
        let rest = rest.trim_start();
        for step in STEPS {
            if rest.starts_with(&format!("{step}(")) {
                *per.entry((step, pid.to_string())).or_default() += 1;
            }
        }
    }
    let mut counts = BTreeMap::new();
    for ((step, _), n) in per {
        let e = counts.entry(step).or_insert(0);
        *e = (*e).max(n);
    }
    counts
}

/// Runs the import under strace with `inject` (e.g.
/// `renameat2:signal=SIGKILL:when=3`); returns the exit code (None: killed).
fn faulty_import(c: &Case, bundle: &Path, inject: &str) -> (Option<i32>, String) {
    let out = Command::new(strace())
        .env("VOLMIG_DOCKERD", "")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .arg(format!("-einject={inject}"))
        .arg(bin())
        .arg("--data-root")
        .arg(c.target.path())
        .args(["import", "--on-conflict", c.policy])
        .arg(bundle)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{what} failed: {text}");
    text
}

/// One fault: the import, then recover, then a re-run.
fn check_fault(
    name: &'static str,
    policy: &'static str,
    src: &FakeDataRoot,
    bundle: &Path,
    inject: &str,
) {
    let c = case(name, policy, src);
    let (code, stderr) = faulty_import(&c, bundle, inject);
    let what = format!("import with {inject} (exit {code:?}: {stderr})");
    assert!(
        matches!(code, None | Some(0) | Some(1) | Some(2) | Some(137)),
        "{name}: {what}: unexpected exit"
    );
    if code == Some(2) {
        // Exit 2 promises that nothing changed.
        for v in VOLUMES {
            assert!(
                volume_tree(&c.target.path(), v) == c.old[v].0,
                "{name}: {what}: exit 2 but volume `{v}` changed"
            );
        }
    }
    c.assert_whole(&what);
    run_ok(
        c.volmig().arg("recover"),
        &format!("{name}: recover after {what}"),
    );
    c.assert_unchanged_or_migrated(&format!("recover after {what}"));
    // A re-run completes the migration (skip-identical keeps what is
    // already there and equal).
    let rerun = if policy == "replace" {
        "replace"
    } else {
        "skip-identical"
    };
    run_ok(
        c.volmig()
            .args(["import", "--on-conflict", rerun])
            .arg(bundle),
        &format!("{name}: re-run after {what}"),
    );
    for v in VOLUMES {
        assert_eq!(c.seen(v), Seen::New, "{name}: re-run after {what}: `{v}`");
    }
    let recs = records(&c.target.path());
    for v in VOLUMES {
        assert_eq!(
            recs.get(v),
            Some(&c.new[v].1),
            "{name}: labels of `{v}` after {what}"
        );
    }
    assert!(!c.target.path().join("volmig-staging").exists());
}

fn source_and_bundle(work: &Path) -> (FakeDataRoot, PathBuf) {
    let src = small_source();
    SRC_MARK.with(|m| *m.borrow_mut() = src.path().display().to_string());
    let bundle = work.join("b.tar");
    export_to(&src, &["app", "db"], &[], &bundle);
    (src, bundle)
}

/// Every step of every kind, killed and failed.
fn every_fault(name: &'static str, policy: &'static str) {
    let work = tempfile::tempdir().unwrap();
    let (src, bundle) = source_and_bundle(work.path());
    let counts = step_counts(&case(name, policy, &src), &bundle);
    assert!(
        counts.get("renameat2").copied().unwrap_or(0) >= 2,
        "{name}: the commit's renames were not seen: {counts:?}"
    );
    let mut runs = 0;
    for (step, n) in &counts {
        for k in 1..=*n {
            check_fault(
                name,
                policy,
                &src,
                &bundle,
                &format!("{step}:signal=SIGKILL:when={k}"),
            );
            let error = match *step {
                "write" | "ftruncate" => "ENOSPC",
                _ => "EIO",
            };
            check_fault(
                name,
                policy,
                &src,
                &bundle,
                &format!("{step}:error={error}:when={k}"),
            );
            runs += 2;
        }
    }
    eprintln!("{name}: {runs} faults injected over {counts:?}");
}

#[test]
fn a_fresh_import_survives_a_kill_or_an_error_at_every_step() {
    every_fault("fresh", "fail");
}

#[test]
fn a_replacing_import_survives_a_kill_or_an_error_at_every_step() {
    every_fault("replace", "replace");
}

#[test]
fn a_skip_identical_import_survives_a_kill_or_an_error_at_every_step() {
    every_fault("skip-identical", "skip-identical");
}
