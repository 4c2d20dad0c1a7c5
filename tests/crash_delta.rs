//! Issue 9 with issue 7's guarantee: the import of a delta bundle, which
//! changes its target in place under a rollback journal, killed
//! (SIGKILL) or failed (EIO, ENOSPC) by strace's `-e inject=` at the
//! system calls it writes with. One delta carries every kind of operation
//! at once (a file replaced whole, a new file, a new directory with a file
//! in it, a directory replaced by a file and a file by a directory, a
//! file and a subtree deleted, a hardlink, a large file patched in place,
//! appended to, given a zero chunk and an xattr, another cut short and
//! losing one, a mode-only change of a file and of a directory, two
//! volumes, opts.json unchanged). After each fault:
//! 1. no path under the volumes is one that neither the base nor the
//!    migrated tree has (a delta changes its target in place: the paths
//!    it touches are the base's or the delta's);
//! 2. `volmig recover` (or the next `volmig import` of the delta, which
//!    recovers first) leaves every volume exactly as the base round had
//!    it, or exactly as the delta makes it (trees taken from a reference
//!    run), with nothing staged left;
//! 3. the delta then applies (after a rollback) and so does the next
//!    delta: the recorded base describes what is on the target.
//!
//! The counts of each call come from one traced import; the calls from
//! the rollback journal on are all faulted (up to a cap per call), those
//! of staging and of cleaning up evenly sampled. Faults in the rollback
//! itself come from a second injection, after a first failure; every
//! case starts from a target that received the full round. About 220
//! imports in all: some 50 s of a debug build on two cores.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::bundle_support::{bin, small_source, strace, tree, write_at, Node};
use crate::common::FakeDataRoot;
use volmig::dataroot::metadata::{read_store, write_records, VolumeRecord};

/// `pgdata` is the volume the delta adds (`db`'s, exported from round 1).
const VOLUMES: [&str; 3] = ["appdata", "shared", "pgdata"];

/// The pseudo-volume of the state that holds metadata.db's records.
const RECORDS: &str = "metadata.db";

/// Every call the delta import writes with (`strace -f -c` of one).
const STEPS: [&str; 25] = [
    "mkdir",
    "mkdirat",
    "write",
    "pwrite64",
    "rename",
    "renameat",
    "renameat2",
    "linkat",
    "unlink",
    "unlinkat",
    "rmdir",
    "ftruncate",
    "fallocate",
    "fsync",
    "fdatasync",
    "syncfs",
    "fchmod",
    "fchown",
    "chmod",
    "lchown",
    "utimensat",
    "fsetxattr",
    "fremovexattr",
    "lsetxattr",
    "copy_file_range",
];

/// The calls that change the target's volumes, and the rest (staging,
/// the journal, its fsyncs, the bases, cleaning up).
const CHANGES: [&str; 11] = [
    "renameat",
    "mkdirat",
    "linkat",
    "pwrite64",
    "ftruncate",
    "fallocate",
    "fchown",
    "fchmod",
    "utimensat",
    "fsetxattr",
    "fremovexattr",
];

type Volumes = BTreeMap<String, BTreeMap<Vec<u8>, Node>>;

/// Every volume there is (an absent one has no key), and the records.
fn volumes(root: &Path) -> Volumes {
    let mut out: Volumes = VOLUMES
        .iter()
        .filter(|v| root.join("volumes").join(v).exists())
        .map(|v| (v.to_string(), tree(&root.join("volumes").join(v)).nodes))
        .collect();
    let records = read_store(&root.join("volumes/metadata.db"))
        .unwrap()
        .map(|s| s.records)
        .unwrap_or_default();
    let records = records
        .into_iter()
        .map(|(name, r)| {
            let node = Node {
                kind: 'r',
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: 0,
                mtime_nsec: 0,
                size: 0,
                content: None,
                link: Some(serde_json::to_vec(&r).unwrap()),
                rdev: 0,
                xattrs: Vec::new(),
            };
            (name.into_bytes(), node)
        })
        .collect();
    out.insert(RECORDS.to_string(), records);
    out
}

fn data(root: &Path, volume: &str) -> PathBuf {
    root.join("volumes").join(volume).join("_data")
}

fn big(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn volmig(root: &Path) -> Command {
    let mut c = Command::new(bin());
    // No installed dockerd is run: its system calls would shift the counts.
    c.env_remove("VOLMIG_DATA_ROOT")
        .env("VOLMIG_DOCKERD", "")
        .arg("--data-root")
        .arg(root);
    c
}

fn output(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let (code, text) = output(cmd);
    assert_eq!(code, Some(0), "{what} failed: {text}");
    text
}

const T: i64 = 1_600_000_000;

/// The source, its bundles (`b0` full, `d1` the delta under test, `d2`
/// the next one), and the target's volumes after each, from a reference
/// run without faults.
struct World {
    dir: tempfile::TempDir,
    _src: FakeDataRoot,
    base: Volumes,
    migrated: Volumes,
    next: Volumes,
    /// Per call: how often one import of `d1` makes it, and how many of
    /// those come before its journal is written, and before it is removed.
    counts: BTreeMap<&'static str, Count>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Count {
    total: usize,
    before_journal: usize,
    before_done: usize,
}

fn export(src: &FakeDataRoot, containers: &[&str], extra: &[&str], out: &Path) {
    run_ok(
        volmig(&src.path())
            .arg("export")
            .args(containers)
            .args(extra)
            .arg("-o")
            .arg(out),
        "export",
    );
}

fn build() -> World {
    let dir = tempfile::tempdir().unwrap();
    let m = |n: usize| dir.path().join(format!("m{n}"));
    let src = small_source();
    let d = data(&src.path(), "appdata");
    write_at(&d.join("big.bin"), &big((3 << 20) + (1 << 19), 0), (T, 20));
    write_at(&d.join("trunc.bin"), &big((5 << 19) + 7, 1), (T, 21));
    volmig::fileattrs::set_xattr(&d.join("trunc.bin"), b"user.old", b"1").unwrap();
    fs::create_dir(d.join("d2f")).unwrap();
    write_at(&d.join("d2f/x"), b"in a dir that becomes a file", (T, 22));
    write_at(&d.join("f2d"), b"a file that becomes a dir", (T, 23));
    fs::create_dir_all(d.join("tree/deep")).unwrap();
    write_at(&d.join("tree/deep/x"), b"x", (T, 24));
    write_at(&d.join("tree/y"), b"y", (T, 25));
    export(
        &src,
        &["app"],
        &["--manifest-out", m(0).to_str().unwrap()],
        &dir.path().join("b0"),
    );

    // d1: every kind of operation at once.
    fs::write(d.join("a.txt"), b"ALPHA, replaced whole\n").unwrap();
    fs::write(d.join("new.txt"), b"a new path").unwrap();
    fs::hard_link(d.join("new.txt"), d.join("a-link")).unwrap();
    fs::create_dir(d.join("newdir")).unwrap();
    fs::write(d.join("newdir/inner.txt"), b"in a new dir").unwrap();
    fs::remove_dir_all(d.join("d2f")).unwrap();
    fs::write(d.join("d2f"), b"was a directory").unwrap();
    fs::remove_file(d.join("f2d")).unwrap();
    fs::create_dir(d.join("f2d")).unwrap();
    fs::write(d.join("f2d/y"), b"in what was a file").unwrap();
    fs::remove_file(d.join("b.txt")).unwrap();
    fs::remove_dir_all(d.join("tree")).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(d.join("big.bin"))
        .unwrap();
    f.write_all_at(b"chunk zero changed", 100).unwrap();
    // A chunk that becomes a hole: carried as zeros, punched.
    nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        1 << 20,
        1 << 20,
    )
    .unwrap();
    f.write_all_at(b"chunk two changed", (2 << 20) + 5).unwrap();
    f.write_all_at(&big(600_000, 9), (3 << 20) + (1 << 19))
        .unwrap();
    drop(f);
    volmig::fileattrs::set_xattr(&d.join("big.bin"), b"user.round", b"1").unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(d.join("trunc.bin"))
        .unwrap();
    f.set_len((1 << 20) + 300_000).unwrap();
    drop(f);
    xattr::remove(d.join("trunc.bin"), "user.old").unwrap();
    fs::set_permissions(d.join("sub/c.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(d.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(data(&src.path(), "shared").join("s.txt"), b"SHARED\n").unwrap();
    // A label changed, and a volume added whole, with its record.
    let record = |name: &str, labels: &[(&str, &str)]| VolumeRecord {
        name: name.into(),
        driver: "local".into(),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        options: None,
    };
    write_records(
        &src.path().join("volumes/metadata.db"),
        &[
            record("appdata", &[("tier", "gold")]),
            record("pgdata", &[("tier", "db")]),
        ],
    )
    .unwrap();
    let pg = data(&src.path(), "pgdata");
    fs::create_dir_all(pg.join("base/1")).unwrap();
    write_at(&pg.join("PG_VERSION"), b"15\n", (T, 26));
    write_at(&pg.join("base/1/rel"), &big(1 << 19, 3), (T, 27));
    export(
        &src,
        &["app", "db"],
        &[
            "--since",
            m(0).to_str().unwrap(),
            "--manifest-out",
            m(1).to_str().unwrap(),
        ],
        &dir.path().join("d1"),
    );

    // d2: one more round, which applies only onto d1's recorded base.
    fs::write(d.join("newdir/round2"), b"2").unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(d.join("big.bin"))
        .unwrap();
    f.write_all_at(b"round two", 3 << 20).unwrap();
    drop(f);
    fs::write(pg.join("PG_VERSION"), b"16\n").unwrap();
    export(
        &src,
        &["app", "db"],
        &[
            "--since",
            m(1).to_str().unwrap(),
            "--manifest-out",
            m(2).to_str().unwrap(),
        ],
        &dir.path().join("d2"),
    );

    let mut w = World {
        dir,
        _src: src,
        base: Volumes::new(),
        migrated: Volumes::new(),
        next: Volumes::new(),
        counts: BTreeMap::new(),
    };
    let t = w.fresh();
    w.base = volumes(&t.path());
    w.counts = w.trace(&t);
    w.migrated = volumes(&t.path());
    let text = run_ok(volmig(&t.path()).arg("import").arg(w.bundle("d2")), "d2");
    assert!(text.contains("a delta onto round"), "{text}");
    w.next = volumes(&t.path());
    assert_ne!(w.base, w.migrated);
    assert_ne!(w.migrated, w.next);
    w
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(build)
}

/// Whether a call's line of strace's log starts `name(`.
fn call_of<'a>(line: &'a str, steps: &[&'static str]) -> Option<(&'a str, &'static str)> {
    let (pid, rest) = line.split_once(' ')?;
    let rest = rest.trim_start();
    steps
        .iter()
        .find(|s| rest.starts_with(&format!("{s}(")))
        .map(|s| (pid, *s))
}

impl World {
    fn bundle(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A target that received the full round `b0` (its base recorded).
    fn fresh(&self) -> FakeDataRoot {
        let t = FakeDataRoot::new();
        run_ok(volmig(&t.path()).arg("import").arg(self.bundle("b0")), "b0");
        t
    }

    /// Imports `d1` into `t` under strace, counting each call in the
    /// import's main thread (every write of the delta import is made
    /// there: strace counts `when=` per thread).
    fn trace(&self, t: &FakeDataRoot) -> BTreeMap<&'static str, Count> {
        let log = tempfile::NamedTempFile::new().unwrap();
        let text = run_ok(
            Command::new(strace())
                .args(["-f", "-qq", "-o"])
                .arg(log.path())
                .arg(format!("-etrace={}", STEPS.join(",")))
                .arg(bin())
                .env("VOLMIG_DOCKERD", "")
                .arg("--data-root")
                .arg(t.path())
                .arg("import")
                .arg(self.bundle("d1")),
            "the import of d1 without faults",
        );
        assert!(text.contains("2 files patched, 2 deleted"), "{text}");
        assert!(
            text.contains("pgdata added whole, 2 records in metadata.db"),
            "{text}"
        );
        let log = fs::read_to_string(log.path()).unwrap();
        let main = log.split_once(' ').unwrap().0.to_string();
        let mut counts: BTreeMap<&'static str, Count> = BTreeMap::new();
        let (mut journal, mut done) = (false, false);
        for line in log.lines() {
            if line.contains("delta-journal.json") {
                journal = true;
            }
            if let Some((pid, step)) = call_of(line, &STEPS) {
                let c = counts.entry(step).or_default();
                assert_eq!(pid, main, "{step} in another thread: {line}");
                c.total += 1;
                c.before_journal += usize::from(!journal);
                c.before_done += usize::from(!done);
            }
            // Its journal removed, the import is complete: what follows
            // is the rest of its staging and the report.
            if line.contains("\"delta-journal.json\", 0)") {
                done = true;
            }
        }
        assert!(journal && done, "no journal seen in the trace");
        counts
    }

    /// The target now: the base round, the migrated one, or neither
    /// (with what differs).
    fn state(&self, t: &FakeDataRoot) -> Result<State, String> {
        let now = volumes(&t.path());
        if now == self.base {
            return Ok(State::Base);
        }
        if now == self.migrated {
            return Ok(State::Migrated);
        }
        let mut diffs = Vec::new();
        for (v, nodes) in &now {
            for (p, n) in nodes {
                let base = self.base.get(v).and_then(|b| b.get(p));
                let migrated = self.migrated.get(v).and_then(|m| m.get(p));
                if base != Some(n) && migrated != Some(n) {
                    diffs.push(format!(
                        "{v}/{}: now {n:?}\n    base {base:?}\n    migrated {migrated:?}",
                        String::from_utf8_lossy(p)
                    ));
                }
            }
        }
        Err(format!(
            "neither the base nor the migrated tree; paths unlike both:\n{}",
            diffs.join("\n")
        ))
    }

    /// 1: every path under the volumes is the base's or the delta's.
    fn assert_known_paths(&self, t: &FakeDataRoot, what: &str) {
        let now = volumes(&t.path());
        for (v, nodes) in &now {
            // A volume the delta adds is in `volumes/` whole or not at
            // all: dockerd takes every directory there for a volume.
            if !self.base.contains_key(v) {
                assert!(
                    self.migrated.get(v) == Some(nodes),
                    "{what}: volume `{v}` is in volumes/ but not whole"
                );
                continue;
            }
            let known = |p: &Vec<u8>| {
                self.base[v].contains_key(p)
                    || self.migrated.get(v).is_some_and(|m| m.contains_key(p))
            };
            let strays: Vec<_> = nodes
                .keys()
                .filter(|p| !known(p))
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            assert!(
                strays.is_empty(),
                "{what}: in `{v}`, paths of neither round: {strays:?}"
            );
        }
    }

    /// 2 and 3, from a settled target: nothing staged, the base or the
    /// migrated tree, then the delta (if rolled back) and the next apply.
    fn assert_settled_then_rounds_apply(&self, t: &FakeDataRoot, what: &str) -> State {
        assert_no_staging(t, what);
        let state = self
            .state(t)
            .unwrap_or_else(|e| panic!("{what}: the target is {e}"));
        if state == State::Base {
            run_ok(
                volmig(&t.path()).arg("import").arg(self.bundle("d1")),
                &format!("{what}: the delta again, after its rollback"),
            );
            assert_eq!(
                self.state(t),
                Ok(State::Migrated),
                "{what}: the delta again, after its rollback"
            );
        }
        run_ok(
            volmig(&t.path()).arg("import").arg(self.bundle("d2")),
            &format!("{what}: the next delta"),
        );
        assert!(
            volumes(&t.path()) == self.next,
            "{what}: the next delta did not give the next round"
        );
        assert_no_staging(t, what);
        state
    }

    /// The call numbers to fault for `step`: all from the journal on
    /// (evenly sampled above `cap`), and `before` of those before it.
    fn sample(&self, step: &str, cap: usize, before: usize, until_done: bool) -> Vec<usize> {
        let Some(c) = self.counts.get(step) else {
            return Vec::new();
        };
        let end = match until_done {
            true => c.before_done,
            false => c.total,
        };
        let mut out = evenly(1, c.before_journal, before);
        out.extend(evenly(c.before_journal + 1, end, cap));
        out
    }
}

/// `n` numbers of `from..=to`, evenly spread, both ends included.
fn evenly(from: usize, to: usize, n: usize) -> Vec<usize> {
    if to < from || n == 0 {
        return Vec::new();
    }
    let len = to - from + 1;
    if len <= n {
        return (from..=to).collect();
    }
    if n == 1 {
        return vec![from + len / 2];
    }
    let set: BTreeSet<usize> = (0..n).map(|i| from + i * (len - 1) / (n - 1)).collect();
    set.into_iter().collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    Base,
    Migrated,
}

fn staging_left(t: &FakeDataRoot) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(entries) = fs::read_dir(t.path().join("volmig-staging")) {
        left.extend(entries.flatten().map(|e| e.path().display().to_string()));
    }
    if let Ok(entries) = fs::read_dir(t.path().join("volmig-bases")) {
        left.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".volmig-tmp"))
                .map(|e| e.path().display().to_string()),
        );
    }
    left
}

fn assert_no_staging(t: &FakeDataRoot, what: &str) {
    let left = staging_left(t);
    assert!(left.is_empty(), "{what}: left behind: {left:?}");
}

/// The import of `bundle` under strace with each of `inject`.
fn faulty_import(t: &FakeDataRoot, bundle: &Path, inject: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(strace());
    cmd.args(["-f", "-qq", "-o", "/dev/null"]);
    for i in inject {
        cmd.arg(format!("-einject={i}"));
    }
    cmd.arg(bin())
        .env("VOLMIG_DOCKERD", "")
        .env_remove("VOLMIG_DATA_ROOT")
        .arg("--data-root")
        .arg(t.path())
        .arg("import")
        .arg(bundle);
    output(&mut cmd)
}

/// How a killed import is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Recover,
    /// The next import of the same delta (which recovers first).
    Reimport,
}

fn kill(w: &World, step: &str, n: usize, settle: Settle) -> State {
    let t = w.fresh();
    let inject = format!("{step}:signal=SIGKILL:when={n}");
    let (code, text) = faulty_import(&t, &w.bundle("d1"), &[&inject]);
    let what = format!("killed at {inject} (exit {code:?}: {text})");
    // strace dies of the signal that killed the import: it came.
    assert!(matches!(code, None | Some(137)), "{what}: not killed");
    w.assert_known_paths(&t, &what);
    match settle {
        Settle::Recover => {
            run_ok(
                volmig(&t.path()).arg("recover"),
                &format!("{what}: recover"),
            );
            w.assert_settled_then_rounds_apply(&t, &format!("{what}, recovered"))
        }
        Settle::Reimport => {
            let (code, again) = output(volmig(&t.path()).arg("import").arg(w.bundle("d1")));
            let what = format!("{what}, imported again (exit {code:?}: {again})");
            // Recovery either undid the delta, which then applied, or
            // finished it, and the delta is refused as one already held.
            assert!(
                code == Some(0) || again.contains("this delta was applied"),
                "{what}"
            );
            assert_eq!(w.state(&t), Ok(State::Migrated), "{what}");
            w.assert_settled_then_rounds_apply(&t, &what);
            // What recovery made of it.
            match code {
                Some(0) => State::Base,
                _ => State::Migrated,
            }
        }
    }
}

fn kills(steps: &[&'static str], cap: usize, before: usize, settle: Settle) {
    let w = world();
    let started = std::time::Instant::now();
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for step in steps {
        // Removing staging and verifying the carried configs afterwards
        // are many alike calls.
        let cap = match *step {
            "unlinkat" | "rmdir" | "copy_file_range" => cap.min(3),
            _ => cap,
        };
        for n in w.sample(step, cap, before, false) {
            let state = kill(w, step, n, settle);
            let e = seen.entry(step.to_string()).or_default();
            match state {
                State::Base => e.0 += 1,
                State::Migrated => e.1 += 1,
            }
        }
    }
    eprintln!(
        "{settle:?}: {} kills in {:?} (per call: (rolled back, migrated)) {seen:?}; counts {:?}",
        seen.values().map(|(a, b)| a + b).sum::<usize>(),
        started.elapsed(),
        w.counts
    );
}

#[test]
fn a_delta_import_killed_at_any_change_to_the_target_is_undone_or_finished_by_recover() {
    kills(&CHANGES, 16, 1, Settle::Recover);
}

#[test]
fn a_delta_import_killed_while_staging_journaling_or_cleaning_up_is_settled_by_recover() {
    let rest: Vec<&'static str> = STEPS
        .iter()
        .filter(|s| !CHANGES.contains(s))
        .copied()
        .collect();
    kills(&rest, 8, 3, Settle::Recover);
}

#[test]
fn a_killed_delta_import_is_settled_by_the_next_import_of_the_same_delta() {
    kills(
        &[
            "renameat",
            "renameat2",
            "pwrite64",
            "write",
            "fsync",
            "rename",
        ],
        4,
        0,
        Settle::Reimport,
    );
}

/// The error a call fails with: out of space where it allocates.
fn error_of(step: &str) -> &'static str {
    match step {
        "write" | "pwrite64" | "ftruncate" | "fallocate" | "mkdir" | "mkdirat" | "linkat"
        | "copy_file_range" => "ENOSPC",
        _ => "EIO",
    }
}

/// What an import that a failed call stopped left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failed {
    /// It worked around it (a hole punched as zeros instead).
    WorkedAround,
    /// It rolled back: the base, nothing staged.
    RolledBack,
    /// It left its journal for `volmig recover`, which settled it.
    Recovered(State),
}

fn fail(w: &World, step: &str, n: usize) -> Failed {
    let t = w.fresh();
    let inject = format!("{step}:error={}:when={n}", error_of(step));
    let (code, text) = faulty_import(&t, &w.bundle("d1"), &[&inject]);
    let what = format!("failed at {inject} (exit {code:?}: {text})");
    if code == Some(0) {
        assert_eq!(w.state(&t), Ok(State::Migrated), "{what}");
        w.assert_settled_then_rounds_apply(&t, &what);
        return Failed::WorkedAround;
    }
    assert!(matches!(code, Some(1 | 2)), "{what}: the exit code");
    assert!(text.contains("error"), "{what}: no message");
    if code == Some(2) {
        // Exit 2 promises the target is as it was.
        assert_eq!(w.state(&t), Ok(State::Base), "{what}: exit 2");
    }
    let left = staging_left(&t);
    if left.is_empty() {
        assert_eq!(
            w.state(&t),
            Ok(State::Base),
            "{what}: the import failed, and the target is not its base"
        );
        w.assert_settled_then_rounds_apply(&t, &what);
        return Failed::RolledBack;
    }
    // Only a failure of the rollback itself, or of the last step once
    // applied, leaves the journal; the message says what settles it.
    assert!(
        text.contains("volmig recover"),
        "{what}: {left:?} left, and the message does not say to run volmig recover"
    );
    run_ok(
        volmig(&t.path()).arg("recover"),
        &format!("{what}: recover"),
    );
    Failed::Recovered(w.assert_settled_then_rounds_apply(&t, &what))
}

#[test]
fn a_delta_import_failing_with_eio_or_enospc_is_rolled_back_and_says_so() {
    let w = world();
    let started = std::time::Instant::now();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<Failed, Vec<String>> = BTreeMap::new();
    for step in STEPS {
        // The journal's and the bases' writes, fsyncs and renames all;
        // the others sampled.
        let (cap, before) = match step {
            "write" | "fsync" | "rename" | "unlink" | "syncfs" => (8, 1),
            _ if CHANGES.contains(&step) => (4, 1),
            _ => (3, 1),
        };
        for n in w.sample(step, cap, before, true) {
            let outcome = fail(w, step, n);
            outcomes
                .entry(outcome)
                .or_default()
                .push(format!("{step}#{n}"));
            *seen.entry(step.to_string()).or_default() += 1;
        }
    }
    eprintln!("errors: outcomes {outcomes:?}");
    eprintln!(
        "errors: {} in {:?}: {seen:?}",
        seen.values().sum::<usize>(),
        started.elapsed()
    );
}

/// Per call: how many the import of `d1` made up to the failure `first`
/// injects (strace marks it), and in all: those after it are its
/// rollback's.
fn counts_with(w: &World, first: &str) -> BTreeMap<&'static str, (usize, usize)> {
    let t = w.fresh();
    let log = tempfile::NamedTempFile::new().unwrap();
    let (code, text) = output(
        Command::new(strace())
            .args(["-f", "-qq", "-o"])
            .arg(log.path())
            .arg(format!("-etrace={}", STEPS.join(",")))
            .arg(format!("-einject={first}"))
            .arg(bin())
            .env("VOLMIG_DOCKERD", "")
            .arg("--data-root")
            .arg(t.path())
            .arg("import")
            .arg(w.bundle("d1")),
    );
    assert!(
        code == Some(2) && text.contains("everything was rolled back"),
        "{first}: exit {code:?}: {text}"
    );
    let log = fs::read_to_string(log.path()).unwrap();
    let mut counts: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut failed = false;
    for line in log.lines() {
        if let Some((_, step)) = call_of(line, &STEPS) {
            let c = counts.entry(step).or_default();
            c.1 += 1;
            if !failed {
                c.0 += 1;
            }
        }
        failed |= line.contains("(INJECTED)");
        // The staging is removed (its journal last): what follows is the
        // message.
        if line.contains("\"delta-journal.json\", 0)") {
            break;
        }
    }
    assert!(failed, "{first} was not injected");
    counts
}

/// The import of d1 fails at `first`; its rollback is killed, or fails,
/// at the calls it makes: `volmig recover` must finish the rollback.
fn rollback_faults(w: &World, first: &str, cap: usize, errors: bool) -> usize {
    let first_call = first.split(':').next().unwrap();
    let mut runs = 0;
    let counts = counts_with(w, first);
    for (step, (before, total)) in counts {
        if step == first_call {
            continue;
        }
        let error = format!("error={}", error_of(step));
        let kills = evenly(before + 1, total, cap)
            .into_iter()
            .map(|n| ("signal=SIGKILL", n));
        let errors = evenly(before + 1, total, usize::from(errors))
            .into_iter()
            .map(|n| (error.as_str(), n));
        for (fault, n) in kills.chain(errors) {
            {
                let t = w.fresh();
                let second = format!("{step}:{fault}:when={n}");
                let (code, text) = faulty_import(&t, &w.bundle("d1"), &[first, &second]);
                let what = format!("failed at {first}, then {second} (exit {code:?}: {text})");
                w.assert_known_paths(&t, &what);
                match fault {
                    "signal=SIGKILL" => {
                        assert!(matches!(code, None | Some(137)), "{what}: not killed")
                    }
                    _ => assert!(matches!(code, Some(1 | 2)), "{what}: the exit code"),
                }
                if code == Some(2) {
                    // Exit 2 promises the target is as it was.
                    assert_eq!(w.state(&t), Ok(State::Base), "{what}: exit 2");
                }
                if !staging_left(&t).is_empty() && code.is_some() {
                    assert!(
                        text.contains("volmig recover"),
                        "{what}: staging left, and the message does not say to run volmig recover"
                    );
                }
                run_ok(
                    volmig(&t.path()).arg("recover"),
                    &format!("{what}: recover"),
                );
                // Recovery of a journal that says `applying` rolls back.
                let state = w.assert_settled_then_rounds_apply(&t, &format!("{what}, recovered"));
                assert_eq!(state, State::Base, "{what}: recovered");
                runs += 1;
            }
        }
    }
    runs
}

#[test]
fn a_delta_import_killed_or_failing_while_rolling_back_is_settled_by_recover() {
    let w = world();
    let started = std::time::Instant::now();
    // Everything applied, then its sync fails; a patch half written.
    let runs = rollback_faults(w, "syncfs:error=EIO:when=2", 2, true)
        + rollback_faults(w, "pwrite64:error=ENOSPC:when=2", 1, false);
    eprintln!("rollbacks: {runs} faults in {:?}", started.elapsed());
}
