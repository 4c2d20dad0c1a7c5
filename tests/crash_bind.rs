//! Issue 8 with issue 7's guarantee: the import of a bind-type volume,
//! whose data goes to its device path outside the data-root (staged
//! beside it, parents created at the commit), killed (SIGKILL) or failed
//! (EIO, ENOSPC) by strace at every step that writes. After each fault:
//! the device path is absent or holds the whole tree, never part of it;
//! after `volmig recover` the target is unchanged (no volume, no device
//! path) or completely migrated (both), with nothing staged left beside
//! the device; a re-run completes the migration.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bundle_support::{bin, snapshot, strace, Node};
use crate::common::{volume_mount, FakeDataRoot};

const STEPS: [&str; 8] = [
    "renameat2",
    "rename",
    "mkdir",
    "fsync",
    "fdatasync",
    "syncfs",
    "write",
    "ftruncate",
];

struct World {
    _tmp: tempfile::TempDir,
    bundle: PathBuf,
    /// The device's tree as exported.
    expected: BTreeMap<Vec<u8>, Node>,
    /// The device path of the target (two levels below what exists).
    device: PathBuf,
}

/// A source with a bind volume, its bundle, and the device path the
/// target gets (`--map-path`): below directories that do not exist yet.
fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let src_device = tmp.path().join("src-host/app");
    fs::create_dir_all(src_device.join("db")).unwrap();
    fs::write(src_device.join("index.html"), "bind data\n").unwrap();
    fs::write(src_device.join("db/rows"), vec![3u8; 200_000]).unwrap();
    let mut src = FakeDataRoot::new();
    let path = src.path();
    let opts = format!(
        r#"{{"MountType":"none","MountOpts":"bind","MountDevice":"{}"}}"#,
        src_device.display()
    );
    src.volume("app", &[("l", "1")])
        .opts_json("app", &opts)
        .container(
            &"a1".repeat(32),
            "web",
            &[volume_mount("app", "/srv", &path)],
        )
        .write_db();
    let bundle = tmp.path().join("b.vmb");
    let out = src
        .volmig()
        .args(["export", "web", "-o"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device = tmp.path().join("dst-host/srv/deep/app");
    fs::create_dir_all(tmp.path().join("dst-host")).unwrap();
    World {
        expected: snapshot(&src_device),
        _tmp: tmp,
        bundle,
        device,
    }
}

impl World {
    fn map(&self, src: &Path) -> String {
        format!("--map-path={}={}", src.display(), self.device.display())
    }

    fn src_device(&self) -> PathBuf {
        self._tmp.path().join("src-host/app")
    }

    fn import(&self, target: &FakeDataRoot, inject: Option<&str>) -> (Option<i32>, String) {
        let mut cmd = match inject {
            Some(i) => {
                let mut c = Command::new(strace());
                c.args(["-f", "-qq", "-o", "/dev/null"])
                    .arg(format!("-einject={i}"))
                    .arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let out = cmd
            .arg("--data-root")
            .arg(target.path())
            .args(["import", "--on-conflict", "skip-identical"])
            .arg(self.map(&self.src_device()))
            .arg(&self.bundle)
            .env("VOLMIG_DOCKERD", "")
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// None: absent; Some(true): whole; Some(false): partial or other.
    fn device_state(&self) -> Option<bool> {
        self.device
            .symlink_metadata()
            .ok()
            .map(|_| snapshot(&self.device) == self.expected)
    }

    fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = self.device.parent();
        while let Some(dir) = at {
            if let Ok(entries) = fs::read_dir(dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with(".volmig") {
                        out.push(e.path().display().to_string());
                    }
                }
            }
            if dir == self._tmp.path() {
                break;
            }
            at = dir.parent();
        }
        out
    }
}

/// How often each step's call runs in one good import (any one thread).
fn step_counts(w: &World) -> BTreeMap<&'static str, usize> {
    let target = FakeDataRoot::new();
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(strace())
        .args(["-f", "-qq", "-o"])
        .arg(log.path())
        .arg(format!("-etrace={}", STEPS.join(",")))
        .arg(bin())
        .arg("--data-root")
        .arg(target.path())
        .arg("import")
        .arg(w.map(&w.src_device()))
        .arg(&w.bundle)
        .env("VOLMIG_DOCKERD", "")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        w.device_state(),
        Some(true),
        "the good import laid the data down"
    );
    let mut per: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for line in fs::read_to_string(log.path()).unwrap().lines() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("", line));
        for step in STEPS {
            if rest.trim_start().starts_with(&format!("{step}(")) {
                *per.entry((step, pid.to_string())).or_default() += 1;
            }
        }
    }
    let mut counts = BTreeMap::new();
    for ((step, _), n) in per {
        let e = counts.entry(step).or_insert(0);
        *e = (*e).max(n);
    }
    fs::remove_dir_all(w.device.parent().unwrap().parent().unwrap()).unwrap();
    counts
}

fn check_fault(w: &World, inject: &str) {
    let target = FakeDataRoot::new();
    let (code, text) = w.import(&target, Some(inject));
    let what = format!("import with {inject} (exit {code:?}: {text})");
    assert_ne!(
        w.device_state(),
        Some(false),
        "{what}: the device path holds part of the data"
    );
    if code == Some(2) {
        assert_eq!(
            w.device_state(),
            None,
            "{what}: exit 2 but the device path changed"
        );
        assert!(
            !target.path().join("volumes/app").exists(),
            "{what}: exit 2 but a volume"
        );
    }
    let out = target.volmig().arg("recover").output().unwrap();
    assert!(
        out.status.success(),
        "{what}: recover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let volume = target.path().join("volumes/app").exists();
    let device = w.device_state();
    assert!(
        (volume && device == Some(true)) || (!volume && device.is_none()),
        "{what}: after recover: volume {volume}, device {device:?}"
    );
    assert!(
        w.leftovers().is_empty(),
        "{what}: left beside the device: {:?}",
        w.leftovers()
    );
    let (code, text) = w.import(&target, None);
    assert_eq!(code, Some(0), "{what}: re-run: {text}");
    assert_eq!(w.device_state(), Some(true), "{what}: after the re-run");
    fs::remove_dir_all(w.device.parent().unwrap().parent().unwrap()).unwrap();
}

#[test]
fn a_bind_volume_import_survives_a_kill_or_an_error_at_every_step() {
    let w = world();
    let counts = step_counts(&w);
    assert!(
        counts.get("renameat2").copied().unwrap_or(0) >= 2,
        "{counts:?}"
    );
    let mut runs = 0;
    for (step, n) in &counts {
        for k in 1..=*n {
            check_fault(&w, &format!("{step}:signal=SIGKILL:when={k}"));
            let error = match *step {
                "write" | "ftruncate" => "ENOSPC",
                _ => "EIO",
            };
            check_fault(&w, &format!("{step}:error={error}:when={k}"));
            runs += 2;
        }
    }
    eprintln!("bind: {runs} faults injected over {counts:?}");
}
