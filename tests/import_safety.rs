//! Issue 7: the observed defects of import under crashes, races and
//! failures, each reproduced and pinned by a test named after it (the
//! exhaustive kill/fail-at-every-step suite is `crash_import.rs`).

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bundle_support::{bin, export_to, small_source, stderr, stdout};
use crate::common::{json_run, FakeDataRoot};
use volmig::dataroot::metadata::read_store;

fn bundle(work: &Path) -> (FakeDataRoot, PathBuf) {
    let src = small_source();
    let b = work.join("b.tar");
    export_to(&src, &["app", "db"], &[], &b);
    (src, b)
}

/// `volmig --data-root ROOT import --on-conflict POLICY BUNDLE` under
/// strace with `-e inject=INJECT` (a kill, an error or a delay), started.
fn spawn_import(root: &Path, bundle: &Path, policy: &str, inject: &str) -> std::process::Child {
    Command::new("/usr/bin/strace")
        .env("VOLMIG_DOCKERD", "")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .arg(format!("-einject={inject}"))
        .arg(bin())
        .arg("--data-root")
        .arg(root)
        .args(["import", "--on-conflict", policy])
        .arg(bundle)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace is needed: apt-get install strace (scripts/test does)")
}

/// The exit code of an import under strace with `inject` (None: killed).
fn import_with_fault(root: &Path, bundle: &Path, policy: &str, inject: &str) -> Option<i32> {
    spawn_import(root, bundle, policy, inject)
        .wait_with_output()
        .unwrap()
        .status
        .code()
}

fn labels(root: &Path, volume: &str) -> Option<std::collections::BTreeMap<String, String>> {
    read_store(&root.join("volumes/metadata.db"))
        .unwrap()
        .and_then(|s| s.records.get(volume).cloned())
        .and_then(|r| r.labels)
}

fn replace_target() -> FakeDataRoot {
    let mut t = FakeDataRoot::new();
    for v in ["appdata", "pgdata", "shared"] {
        t.volume(v, &[("owner", "target")]);
        fs::write(
            t.path().join("volumes").join(v).join("_data/old.txt"),
            b"old",
        )
        .unwrap();
    }
    t.write_db();
    t
}

/// Item 1: SIGKILL between the two renames of `--on-conflict replace` left
/// the volume missing, and the next import of any bundle (even a corrupt
/// one) deleted the dead import's staging: the only copy.
#[test]
fn a_replaced_volume_killed_mid_commit_survives_the_next_corrupt_import() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    let t = replace_target();
    for k in 1..=4 {
        let t = replace_target();
        let code = import_with_fault(
            &t.path(),
            &b,
            "replace",
            &format!("renameat2:signal=SIGKILL:when={k}"),
        );
        assert_eq!(code, None, "killed at rename {k}");
        for v in ["appdata", "pgdata", "shared"] {
            assert!(
                t.path().join("volumes").join(v).join("_data").is_dir(),
                "rename {k}: `{v}` missing"
            );
        }
        let corrupt = work.path().join("corrupt.tar");
        let bytes = fs::read(&b).unwrap();
        fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
        let out = t
            .volmig()
            .args(["import", "--on-conflict", "replace"])
            .arg(&corrupt)
            .output()
            .unwrap();
        // Exit 1, not 2: the data-root changed (the dead import was
        // finished first), though this bundle was refused.
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("interrupted import(s) of this data-root were settled"),
            "{}",
            stderr(&out)
        );
        // The interrupted import was finished first, not thrown away.
        for v in ["appdata", "pgdata", "shared"] {
            let data = t.path().join("volumes").join(v).join("_data");
            assert!(
                !data.join("old.txt").exists(),
                "rename {k}: `{v}` is still the old one"
            );
        }
        assert_eq!(labels(&t.path(), "shared").unwrap()["tier"], "cache");
        assert!(!t.path().join("volmig-staging").exists());
    }
    drop(t);
}

/// Item 2: SIGKILL at the K-th rename of a fresh import left K-1 volumes
/// without records, and a re-run refused them as conflicts. Now the next
/// import (or `volmig recover`) finishes the commit, labels included.
#[test]
fn a_fresh_import_killed_at_a_rename_is_finished_by_the_next_command() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    let t = FakeDataRoot::new();
    assert_eq!(
        import_with_fault(&t.path(), &b, "fail", "renameat2:signal=SIGKILL:when=2"),
        None
    );
    let out = t.volmig().arg("recover").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("finished the interrupted import"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        labels(&t.path(), "appdata").unwrap()["com.docker.compose.project"],
        "shop"
    );
    let (code, doc) = json_run(
        t.volmig()
            .args(["import", "--on-conflict", "skip-identical"])
            .arg(&b),
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        doc["skipped_identical"].as_array().unwrap().len(),
        3,
        "{doc:#}"
    );
}

/// The 1-based index, among the calls of `syscall` in one successful
/// import of `bundle` into a fresh `target()`, of the first on a file
/// whose path contains `fragment` (strace -y shows each descriptor's path).
fn nth_call_on(
    target: impl Fn() -> FakeDataRoot,
    bundle: &Path,
    policy: &str,
    syscall: &str,
    fragment: &str,
) -> usize {
    let t = target();
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("/usr/bin/strace")
        .env("VOLMIG_DOCKERD", "")
        .args(["-f", "-qq", "-y", "-o"])
        .arg(log.path())
        .arg(format!("-etrace={syscall}"))
        .arg(bin())
        .arg("--data-root")
        .arg(t.path())
        .args(["import", "--on-conflict", policy])
        .arg(bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = fs::read_to_string(log.path()).unwrap();
    let calls: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("{syscall}(")))
        .collect();
    calls
        .iter()
        .position(|l| l.contains(fragment))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no {syscall} on {fragment}: {calls:#?}"))
}

/// Item 3: an I/O error while writing metadata.db rolled the volumes back
/// but left the bundle's labels over the target's own (or a 0-byte
/// metadata.db). Every write and fsync of the new database is failed in
/// turn: each time, exit 2 and the target's own records, byte for byte.
#[test]
fn a_failed_metadata_db_write_leaves_the_targets_own_records() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    for (syscall, error) in [("fsync", "EIO"), ("write", "ENOSPC")] {
        let k = nth_call_on(replace_target, &b, "replace", syscall, "metadata.db.new");
        let t = replace_target();
        let db = t.path().join("volumes/metadata.db");
        let before = fs::read(&db).unwrap();
        let code = import_with_fault(
            &t.path(),
            &b,
            "replace",
            &format!("{syscall}:error={error}:when={k}"),
        );
        assert_eq!(code, Some(2), "{syscall} {k}");
        assert_eq!(
            fs::read(&db).unwrap(),
            before,
            "metadata.db changed ({syscall} {k})"
        );
        assert_eq!(labels(&t.path(), "appdata").unwrap()["owner"], "target");
        assert!(t.path().join("volumes/appdata/_data/old.txt").exists());
        assert!(!t.path().join("volmig-staging").exists());
    }
}

/// Item 4: files deleted from staging between staging and commit (by a
/// second volmig that took the staging for a dead one's) were committed
/// with exit 0: the digests were checked on the stream only.
#[test]
fn files_removed_from_staging_before_the_commit_are_caught() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    let t = FakeDataRoot::new();
    // Hold the import at its syncfs (staging done, the check of what
    // landed next) and delete a staged file meanwhile: the 1.5 s hold
    // covers a walk of the staging and one unlink.
    let child = spawn_import(&t.path(), &b, "fail", "syncfs:delay_enter=1500000");
    let volmig = traced_volmig(&child);
    wait_for("volmig held at the syncfs that ends staging", || {
        in_syscall(volmig, libc::SYS_syncfs)
    });
    let staged = walkdir::WalkDir::new(t.path().join("volmig-staging"))
        .into_iter()
        .flatten()
        .find(|e| e.file_name() == "c.txt")
        .expect("c.txt is staged")
        .into_path();
    fs::remove_file(&staged).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("differs from the bundle"),
        "{}",
        stderr(&out)
    );
    assert!(!t.path().join("volumes/appdata").exists());
}

/// Item 10: a reader's shared lock on metadata.db made import report
/// "dockerd is running" and skip the labels, with exit 0.
#[test]
fn a_reader_holding_metadata_db_is_waited_for_not_taken_for_dockerd() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    let mut t = FakeDataRoot::new();
    t.volume("other", &[]).write_db();
    let db = fs::File::open(t.path().join("volumes/metadata.db")).unwrap();
    let reader = nix::fcntl::Flock::lock(db, nix::fcntl::FlockArg::LockSharedNonblock).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(reader);
    });
    let (code, doc) = json_run(t.volmig().arg("import").arg(&b));
    release.join().unwrap();
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["metadata"]["written"], 3, "{doc:#}");
    assert_eq!(labels(&t.path(), "shared").unwrap()["tier"], "cache");
}

/// Item 10: two imports into one data-root raced each other. Now the
/// second says who holds the data-root and refuses, or waits with --wait.
#[test]
fn a_second_import_refuses_or_waits_while_one_runs() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    let t = FakeDataRoot::new();
    let first = spawn_import(&t.path(), &b, "fail", "syncfs:delay_enter=2000000");
    wait_for("the staging directory", || {
        t.path().join("volmig-staging").exists()
    });
    let out = t.volmig().arg("import").arg(&b).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another volmig import is running on this data-root"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--wait"), "{}", stderr(&out));
    let (code, doc) = json_run(
        t.volmig()
            .args(["import", "--wait", "--on-conflict", "skip-identical"])
            .arg(&b),
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        doc["skipped_identical"].as_array().unwrap().len(),
        3,
        "{doc:#}"
    );
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
}

/// Item 11: SIGTERM during staging exited 143 with no message and left
/// staging behind.
#[test]
fn sigterm_during_staging_removes_staging_and_says_so() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    let bytes = fs::read(&b).unwrap();
    let t = FakeDataRoot::new();
    let mut child = Command::new(bin())
        .env("VOLMIG_DOCKERD", "")
        .arg("--data-root")
        .arg(t.path())
        .args(["import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let half = bytes.len() / 2;
    stdin.write_all(&bytes[..half]).unwrap();
    stdin.flush().unwrap();
    wait_for("the staging directory", || {
        t.path().join("volmig-staging").exists()
    });
    let (took_it, said) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.starts_with("SIGTERM: ") {
                let _ = took_it.send(());
            }
            all += &line;
            all.push('\n');
        }
        all
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // The rest of the bundle once volmig has taken the signal (its signal
    // thread says so): staging stops at its next poll, before the commit.
    let acknowledged = said.recv_timeout(HANG);
    let _ = stdin.write_all(&bytes[half..]);
    drop(stdin);
    let status = child.wait().unwrap();
    let err = err.join().unwrap();
    assert!(acknowledged.is_ok(), "no `SIGTERM: ` line: {err}");
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(
        err.contains(
            "interrupted by SIGTERM: the staging directory was removed and nothing was written"
        ),
        "{err}"
    );
    assert!(!t.path().join("volmig-staging").exists());
    assert!(!t.path().join("volumes/appdata").exists());
}

/// Item 11: `--json` printed no JSON on exit-2 errors; OS errors were
/// printed twice; control characters went raw to the terminal.
#[test]
fn errors_are_one_json_document_said_once_and_printable() {
    let t = FakeDataRoot::new();
    let out = t
        .volmig()
        .args(["--json", "import", "/nonexistent/b.tar"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["error"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/b.tar"));
    assert_eq!(
        stderr(&out).matches("os error 2").count(),
        1,
        "{}",
        stderr(&out)
    );

    let out = t
        .volmig()
        .args(["verify", "bad\x01name\x1b[2J"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(!err.contains('\x01') && !err.contains('\x1b'), "{err:?}");
    assert!(err.contains("\\x01"), "{err:?}");
}

/// A small ext4 filesystem on a loop device, mounted for one test and
/// removed with it.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(mib: u64) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let f = fs::File::create(&img).unwrap();
        f.set_len(mib << 20).unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
        };
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&img));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt));
        fs::create_dir_all(mnt.join("root/volumes")).unwrap();
        fs::create_dir_all(mnt.join("root/containers")).unwrap();
        SmallFs { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("mnt/root")
    }

    /// Fills the filesystem but for `keep` bytes.
    fn fill(&self, keep: u64) {
        let stat = nix::sys::statvfs::statvfs(&self.dir.path().join("mnt")).unwrap();
        let free = stat.blocks_available() * stat.fragment_size();
        let filler = fs::File::create(self.dir.path().join("mnt/filler")).unwrap();
        nix::fcntl::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&filler),
            nix::fcntl::FallocateFlags::empty(),
            0,
            free.saturating_sub(keep) as i64,
        )
        .unwrap();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(self.dir.path().join("mnt"))
            .status();
    }
}

/// ENOSPC while staging: a bundle larger than the free space fails with
/// exit 2 naming the cause, and the target is as it was, staging removed.
#[test]
fn enospc_on_a_small_filesystem_while_staging_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (src, _) = bundle(work.path());
    // A volume bigger than the filesystem.
    let big: Vec<u8> = (0..6u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    fs::write(src.path().join("volumes/appdata/_data/big.bin"), &big).unwrap();
    let b = work.path().join("big.tar");
    export_to(&src, &["app", "db"], &[], &b);
    let small = SmallFs::new(16);
    small.fill(3 << 20);
    let root = small.root();
    let before = crate::bundle_support::snapshot(&root);
    let out = Command::new(bin())
        .env("VOLMIG_DOCKERD", "")
        .arg("--data-root")
        .arg(&root)
        .arg("import")
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    crate::bundle_support::assert_unchanged(&root, &before);
}

/// ENOSPC at the commit: the staged bundle fits, then the filesystem fills
/// up (another writer) before metadata.db is copied: the commit fails,
/// everything is rolled back, exit 2, the target's own metadata.db as it
/// was.
#[test]
fn enospc_on_a_small_filesystem_at_the_commit_rolls_back() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    let small = SmallFs::new(16);
    let root = small.root();
    let mut t = FakeDataRoot::new();
    t.volume("other", &[("mine", "yes")]).write_db();
    // The target's own metadata.db, grown so that copying it needs room.
    let db = t.path().join("volumes/metadata.db");
    let filler: Vec<volmig::dataroot::metadata::VolumeRecord> = (0..2000)
        .map(|i| volmig::dataroot::metadata::VolumeRecord {
            name: format!("filler{i:05}"),
            driver: "local".into(),
            labels: Some([("pad".to_string(), "x".repeat(200))].into()),
            options: None,
        })
        .collect();
    volmig::dataroot::metadata::write_records(&db, &filler).unwrap();
    fs::copy(&db, root.join("volumes/metadata.db")).unwrap();
    let db = root.join("volumes/metadata.db");
    let db_size = fs::metadata(&db).unwrap().len();
    assert!(db_size > 256 << 10, "metadata.db is {db_size} bytes");
    let before = crate::bundle_support::snapshot(&root);
    // Held at the syncfs that ends staging; the filesystem fills meanwhile
    // (one fallocate: the 1.5 s hold covers it).
    let child = spawn_import(&root, &b, "fail", "syncfs:delay_enter=1500000");
    let volmig = traced_volmig(&child);
    wait_for("volmig held at the syncfs that ends staging", || {
        in_syscall(volmig, libc::SYS_syncfs)
    });
    small.fill(db_size / 4);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("everything was rolled back"),
        "{}",
        stderr(&out)
    );
    fs::remove_file(small.dir.path().join("mnt/filler")).unwrap();
    crate::bundle_support::assert_unchanged(&root, &before);
}

/// How long a wait for the imported process may take before the test
/// calls it a hang (never a timing condition: each wait below is for a
/// state the import reaches by itself).
const HANG: Duration = Duration::from_secs(60);

/// The pid of the volmig that strace runs, once strace has exec'd it.
/// strace first forks short-lived probes of its own (its PTRACE_TRACEME
/// and PTRACE_GET_SYSCALL_INFO checks) whose command line is strace's and
/// so names `import` too: one taken for volmig was gone by the time it
/// got the signal (ESRCH, half the runs on a loaded machine). Only the
/// executable tells them apart.
fn traced_volmig(strace: &std::process::Child) -> i32 {
    let exe = fs::canonicalize(bin()).unwrap();
    let parent = strace.id();
    let mut found = None;
    wait_for("strace to start volmig", || {
        let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        found = children
            .split_whitespace()
            .find(|pid| fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe))
            .map(|pid| pid.parse().unwrap());
        found.is_some()
    });
    found.unwrap()
}

/// Whether a thread of `pid` is inside system call `nr`: /proc shows a
/// thread that strace holds at the entry of a delayed call (`-e
/// inject=NAME:delay_enter=`) with that call's number first.
fn in_syscall(pid: i32, nr: libc::c_long) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        fs::read_to_string(t.path().join("syscall"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<libc::c_long>().ok())
            == Some(nr)
    })
}

/// Waits until `done`, failing the test after `HANG` with `what`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < HANG, "waited {HANG:?} for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Item 11: SIGTERM during the commit exited 143 with no output. Now the
/// commit finishes, the result is printed, then volmig exits 143 saying so.
#[test]
fn sigterm_during_the_commit_lets_it_finish_then_exits_143() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    let t = FakeDataRoot::new();
    // The commit's renameat2 calls: metadata.db, appdata, pgdata, shared.
    // The last two are held 2 s each at their entry. SIGTERM is sent once
    // appdata is in place and volmig is held in the next rename (both
    // seen, not guessed): mid-commit. volmig's signal thread then has 2 s
    // or more to take it before the commit ends; it needs milliseconds.
    let child = spawn_import(
        &t.path(),
        &b,
        "fail",
        "renameat2:delay_enter=2000000:when=3+",
    );
    let volmig = traced_volmig(&child);
    wait_for("appdata's rename, then volmig held in the next one", || {
        t.path().join("volumes/appdata").exists() && in_syscall(volmig, libc::SYS_renameat2)
    });
    assert!(!t.path().join("volumes/shared").exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(volmig),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(stdout(&out).contains("imported into"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("SIGTERM arrived during the commit: the import completed first"),
        "{}",
        stderr(&out)
    );
    for v in ["appdata", "pgdata", "shared"] {
        assert!(t.path().join("volumes").join(v).join("_data").is_dir());
    }
    assert_eq!(labels(&t.path(), "shared").unwrap()["tier"], "cache");
    assert!(!t.path().join("volmig-staging").exists());
}

/// Leftover staging of an import that died before its commit is reported
/// by scan with its size (a warning: dockerd ignores it), and removed by
/// the next import or `volmig recover`.
#[test]
fn leftover_staging_is_reported_by_scan_with_its_size() {
    let t = FakeDataRoot::new();
    let dead = t.path().join("volmig-staging/4242-1/volumes/v/_data");
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join("f"), vec![7u8; 100_000]).unwrap();
    let (code, doc) = json_run(t.volmig().arg("scan"));
    assert_eq!(code, 0, "{doc:#}");
    let finding = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "staging-leftover")
        .unwrap_or_else(|| panic!("{doc:#}"))
        .clone();
    assert!(
        finding["message"].as_str().unwrap().contains("4242-1"),
        "{finding}"
    );
    assert!(
        finding["message"].as_str().unwrap().contains("bytes"),
        "{finding}"
    );
    let out = t.volmig().arg("recover").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("removed"), "{}", stdout(&out));
    assert!(!t.path().join("volmig-staging").exists());
}

/// Review finding: a data-root without `volumes/` (a fresh host whose
/// dockerd never started) failed at the commit: metadata.db went into a
/// directory that did not exist yet.
#[test]
fn an_import_into_a_data_root_without_volumes_dir_creates_it() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    let t = FakeDataRoot::new();
    fs::remove_dir(t.path().join("volumes")).unwrap();
    let (code, doc) = json_run(t.volmig().arg("import").arg(&b));
    assert_eq!(code, 0, "{doc:#}");
    let mode = fs::metadata(t.path().join("volumes"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777,
        0o701
    );
    assert_eq!(labels(&t.path(), "shared").unwrap()["tier"], "cache");
}

/// Review finding: a file where a volume would go was taken for a volume
/// to replace; moving it failed after metadata.db was replaced, and the
/// rollback lost the volumes already moved. Now it is refused up front.
#[test]
fn a_file_where_a_volume_would_go_is_refused_before_anything_is_written() {
    let work = tempfile::tempdir().unwrap();
    let (_src, b) = bundle(work.path());
    let t = replace_target();
    fs::remove_dir_all(t.path().join("volumes/shared")).unwrap();
    fs::write(t.path().join("volumes/shared"), b"a stray file").unwrap();
    let before = crate::bundle_support::snapshot(&t.path());
    let out = t
        .volmig()
        .args(["import", "--on-conflict", "replace"])
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exists and is not a directory"),
        "{}",
        stderr(&out)
    );
    crate::bundle_support::assert_unchanged(&t.path(), &before);
}
