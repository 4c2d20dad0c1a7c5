//! Issue 3: what import does with what is already there (`--on-conflict
//! fail|skip-identical|replace`, `--dry-run`, a daemon holding
//! metadata.db), what export refuses (running containers, missing volumes,
//! missing checkpoints), and checkpoints carried into the target container.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::bundle_support::{
    assert_same_tree, assert_unchanged, export_to, small_source, snapshot, stderr, stdout,
    write_at, APP_ID, DB_ID,
};
use crate::common::{json_run, volume_mount, FakeDataRoot};
use serde_json::Value;

const VOLUMES: [&str; 3] = ["appdata", "pgdata", "shared"];

fn bundle_of(src: &FakeDataRoot, work: &Path) -> std::path::PathBuf {
    let bundle = work.join("b.tar");
    export_to(src, &["app", "db"], &[], &bundle);
    bundle
}

/// A target holding `appdata` with other content, and an unrelated volume.
fn target_with_conflicts(conflicting: &[&str]) -> FakeDataRoot {
    let mut t = FakeDataRoot::new();
    t.volume("unrelated", &[]);
    for v in conflicting {
        t.volume(v, &[("old", "yes")]);
        fs::write(
            t.path().join("volumes").join(v).join("_data/old.txt"),
            b"old content\n",
        )
        .unwrap();
    }
    t.write_db();
    t
}

fn labels(root: &Path, volume: &str) -> Value {
    let (code, doc) = json_run(
        crate::common::volmig()
            .arg("--data-root")
            .arg(root)
            .arg("scan"),
    );
    assert!(code == 0 || code == 1, "{doc:#}");
    doc["volumes"][volume]["labels"].clone()
}

#[test]
fn dry_run_writes_nothing_and_prints_the_plan() {
    let src = small_source();
    let work = tempfile::tempdir().unwrap();
    let bundle = bundle_of(&src, work.path());

    // Would proceed: exit 0, the plan, nothing written.
    let t = target_with_conflicts(&[]);
    let before = snapshot(&t.path());
    let out = t
        .volmig()
        .args(["import", "--dry-run"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "2 containers, 3 volumes",
        "dry run: every digest checked, nothing written to",
        "create                   appdata (3 files, 2.9 KiB)",
        "create                   pgdata (1 file, 3 B)",
        "create                   shared (2 files, 91 B)",
        "free on ",
        "(needs ",
        "the import would proceed",
    ] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }
    assert_unchanged(&t.path(), &before);
    let (code, doc) = json_run(t.volmig().args(["import", "--dry-run"]).arg(&bundle));
    assert_eq!(code, 0);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["create"], serde_json::json!(VOLUMES));
    assert!(doc["bytes"].as_u64().unwrap() > 3000);
    assert!(doc["free_bytes"].as_u64().unwrap() > doc["bytes"].as_u64().unwrap());
    assert_unchanged(&t.path(), &before);

    // Would refuse (a conflict under `fail`): exit 2, still nothing written.
    let t = target_with_conflicts(&["appdata"]);
    let before = snapshot(&t.path());
    let out = t
        .volmig()
        .args(["import", "--dry-run"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "exists                   appdata",
        "create                   pgdata",
        "refused: volume `appdata` already exists in `",
        "the import would be refused",
    ] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }
    assert_unchanged(&t.path(), &before);

    // skip-identical: a different volume is refused, replace proceeds.
    let out = t
        .volmig()
        .args(["import", "--dry-run", "--on-conflict", "skip-identical"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).contains("exists, DIFFERENT        appdata"));
    let out = t
        .volmig()
        .args(["import", "--dry-run", "--on-conflict", "replace"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_unchanged(&t.path(), &before);

    // A damaged bundle is refused by a dry run too: the digests are checked.
    let mut bytes = fs::read(&bundle).unwrap();
    let at = bytes.windows(6).position(|w| w == b"alpha\n").unwrap();
    bytes[at] = b'A';
    let bad = work.path().join("bad.tar");
    fs::write(&bad, bytes).unwrap();
    let t = target_with_conflicts(&[]);
    let before = snapshot(&t.path());
    let out = t
        .volmig()
        .args(["import", "--dry-run"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("content of `volumes/appdata/_data/a.txt` does not match"));
    assert_unchanged(&t.path(), &before);
}

#[test]
fn fail_lists_every_conflict_and_writes_nothing() {
    let src = small_source();
    let work = tempfile::tempdir().unwrap();
    let bundle = bundle_of(&src, work.path());
    let t = target_with_conflicts(&["appdata", "pgdata"]);
    let before = snapshot(&t.path());
    let out = t.volmig().arg("import").arg(&bundle).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let volumes_dir = t.path().join("volumes");
    for v in ["appdata", "pgdata"] {
        let want = format!(
            "volume `{v}` already exists in `{}`: re-run with --on-conflict skip-identical or replace",
            volumes_dir.display()
        );
        assert!(err.contains(&want), "`{want}` not in: {err}");
    }
    assert!(!err.contains("`shared`"), "{err}");
    // Not even the volume without a conflict was created.
    assert_unchanged(&t.path(), &before);
    assert!(!t.path().join("volumes/shared").exists());
}

#[test]
fn skip_identical_keeps_identical_volumes_and_refuses_different_ones() {
    let src = small_source();
    let work = tempfile::tempdir().unwrap();
    let bundle = bundle_of(&src, work.path());
    let t = target_with_conflicts(&[]);
    let (code, doc) = json_run(t.volmig().arg("import").arg(&bundle));
    assert_eq!(code, 0, "{doc:#}");

    // The labels are lost (as after a daemon start with a stale metadata.db):
    // re-importing the same bundle keeps the volumes and writes the records.
    fs::remove_file(t.path().join("volumes/metadata.db")).unwrap();
    assert_eq!(labels(&t.path(), "appdata"), Value::Null);
    let ino = fs::metadata(t.path().join("volumes/appdata/_data/a.txt"))
        .unwrap()
        .ino();
    let kept: Vec<_> = VOLUMES
        .iter()
        .map(|v| crate::bundle_support::tree(&t.path().join("volumes").join(v)).nodes)
        .collect();
    let (code, doc) = json_run(
        t.volmig()
            .args(["import", "--on-conflict", "skip-identical"])
            .arg(&bundle),
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["skipped_identical"], serde_json::json!(VOLUMES));
    assert_eq!(doc["replaced"], serde_json::json!([]));
    assert_eq!(doc["metadata"]["written"], 3);
    for (v, before) in VOLUMES.iter().zip(&kept) {
        assert_eq!(
            &crate::bundle_support::tree(&t.path().join("volumes").join(v)).nodes,
            before,
            "volume {v} was touched"
        );
    }
    assert_eq!(
        fs::metadata(t.path().join("volumes/appdata/_data/a.txt"))
            .unwrap()
            .ino(),
        ino,
        "an identical volume is kept, not rewritten"
    );
    assert_eq!(
        labels(&t.path(), "appdata")["com.docker.compose.project"],
        "shop"
    );
    assert!(!t.path().join("volmig-staging").exists());

    // One volume differs (one byte), another is gone: refused, and the gone
    // one is not created either.
    fs::write(t.path().join("volumes/appdata/_data/a.txt"), b"alphA\n").unwrap();
    fs::remove_dir_all(t.path().join("volumes/shared")).unwrap();
    let before = snapshot(&t.path());
    let out = t
        .volmig()
        .args(["import", "--on-conflict", "skip-identical"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("volume `appdata` already exists in `")
            && err.contains("with different content: re-run with --on-conflict replace"),
        "{err}"
    );
    assert!(!err.contains("`pgdata`"), "pgdata is identical: {err}");
    assert_unchanged(&t.path(), &before);
    assert!(!t.path().join("volumes/shared").exists());

    // A mode or an owner is a difference too.
    fs::write(t.path().join("volumes/appdata/_data/a.txt"), b"alpha\n").unwrap();
    std::os::unix::fs::lchown(t.path().join("volumes/pgdata/_data"), Some(0), None).unwrap();
    let out = t
        .volmig()
        .args(["import", "--on-conflict", "skip-identical"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("volume `pgdata` already exists"));
}

#[test]
fn replace_replaces_and_leaves_nothing_behind() {
    let src = small_source();
    let work = tempfile::tempdir().unwrap();
    let bundle = bundle_of(&src, work.path());
    let t = target_with_conflicts(&["appdata", "pgdata"]);
    let (code, doc) = json_run(
        t.volmig()
            .args(["import", "--on-conflict", "replace"])
            .arg(&bundle),
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["replaced"], serde_json::json!(["appdata", "pgdata"]));
    assert_eq!(doc["created"], serde_json::json!(["shared"]));
    for v in VOLUMES {
        assert_same_tree(
            &src.path().join("volumes").join(v),
            &t.path().join("volumes").join(v),
        );
    }
    assert!(!t.path().join("volumes/appdata/_data/old.txt").exists());
    assert!(
        !t.path().join("volmig-staging").exists(),
        "old volumes kept"
    );
    assert!(t.path().join("volumes/unrelated/_data").is_dir());
    // The records are the bundle's (the old labels are gone).
    let l = labels(&t.path(), "appdata");
    assert_eq!(l["com.docker.compose.project"], "shop");
    assert_eq!(l.get("old"), None);
    let names: Vec<String> = fs::read_dir(t.path().join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn a_daemon_holding_metadata_db_gets_the_volumes_but_not_the_labels() {
    let src = small_source();
    let work = tempfile::tempdir().unwrap();
    let bundle = bundle_of(&src, work.path());
    let t = target_with_conflicts(&[]);
    let db = fs::File::open(t.path().join("volumes/metadata.db")).unwrap();
    // SAFETY: flock on a valid descriptor; dockerd (bbolt) holds LOCK_EX.
    assert_eq!(unsafe { libc::flock(db.as_raw_fd(), libc::LOCK_EX) }, 0);
    let db_before = fs::read(t.path().join("volumes/metadata.db")).unwrap();
    let (code, doc) = json_run(t.volmig().arg("import").arg(&bundle));
    assert!(code == 0 || code == 1, "{doc:#}");
    assert_eq!(doc["metadata"]["daemon_running"], true, "{doc:#}");
    assert_eq!(
        fs::read(t.path().join("volumes/metadata.db")).unwrap(),
        db_before
    );
    for v in VOLUMES {
        assert!(t.path().join("volumes").join(v).join("_data").is_dir());
    }
    drop(db);
}

fn set_running(src: &FakeDataRoot, id: &str) {
    let p = src
        .path()
        .join("containers")
        .join(id)
        .join("config.v2.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    config["State"]["Running"] = true.into();
    fs::write(&p, serde_json::to_vec(&config).unwrap()).unwrap();
}

#[test]
fn export_refuses_running_containers_and_missing_volumes() {
    let mut src = small_source();
    let root = src.path();
    const GHOST_ID: &str = "e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3";
    src.container(GHOST_ID, "ghostly", &[volume_mount("ghost", "/g", &root)]);
    set_running(&src, APP_ID);
    let work = tempfile::tempdir().unwrap();
    let out_file = work.path().join("b.tar");

    let out = src
        .volmig()
        .args(["export", "app", "-o"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "container app is running: its data is changing; stop it first (docker stop app), or pass --allow-running"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0, "no bundle");

    // Every refusal at once.
    let out = src
        .volmig()
        .args(["export", "app", "db", "ghostly", "-o"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("container app is running"), "{err}");
    assert!(
        err.contains(&format!(
            "container ghostly: volume `ghost` is missing here (`{}` does not exist)",
            root.join("volumes/ghost/_data").display()
        )),
        "{err}"
    );
    assert!(!err.contains("container db"), "{err}");
    assert_eq!(fs::read_dir(work.path()).unwrap().count(), 0, "no bundle");

    // --allow-running carries it anyway.
    let out = src
        .volmig()
        .args(["export", "app", "--allow-running", "-o"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out_file.is_file());

    // Export never follows a symlink, not even `_data` or the volume
    // directory itself.
    let elsewhere = tempfile::tempdir().unwrap();
    fs::create_dir(elsewhere.path().join("_data")).unwrap();
    fs::write(elsewhere.path().join("_data/secret"), b"not volume data\n").unwrap();
    for (link, to) in [
        ("volumes/pgdata/_data", elsewhere.path().join("_data")),
        ("volumes/pgdata", elsewhere.path().to_path_buf()),
    ] {
        let p = root.join(link);
        let aside = root.join("aside");
        fs::rename(&p, &aside).unwrap();
        std::os::unix::fs::symlink(&to, &p).unwrap();
        let out = src
            .volmig()
            .args(["export", "db", "-o"])
            .arg(work.path().join("d.tar"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{link}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "container db: volume `pgdata`: `{}` is a symlink, not a directory: volmig never follows symlinks",
                p.display()
            )),
            "{}",
            stderr(&out)
        );
        fs::remove_file(&p).unwrap();
        fs::rename(&aside, &p).unwrap();
    }
    assert!(!work.path().join("d.tar").exists());

    // A source opts.json that would stop dockerd is not carried.
    src.opts_json("appdata", r#"{"Quota":5}"#);
    let out = src
        .volmig()
        .args(["export", "db", "app", "--allow-running", "-o"])
        .arg(work.path().join("c.tar"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("volumes/appdata/opts.json` would stop dockerd from starting"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_checkpoint_is_carried_and_installed_into_the_target_container() {
    let src = small_source();
    let cp = src
        .path()
        .join("containers")
        .join(APP_ID)
        .join("checkpoints/cp1");
    fs::create_dir_all(cp.join("criu.work")).unwrap();
    write_at(&cp.join("pages-1.img"), &[0x5a; 8192], (1_700_000_000, 5));
    write_at(
        &cp.join("inventory.img"),
        b"\x00\x01inv",
        (1_700_000_000, 6),
    );
    write_at(&cp.join("config.json"), b"{}", (1_700_000_000, 7));
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("cp.tar");
    export_to(&src, &["app"], &["--checkpoint", "cp1"], &bundle);

    let out = crate::common::volmig()
        .arg("inspect")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("(checkpoint cp1)"),
        "{}",
        stdout(&out)
    );
    let out = crate::bundle_support::sh(&format!("tar -tf {}", crate::bundle_support::q(&bundle)));
    assert!(stdout(&out).contains(&format!("containers/{APP_ID}/checkpoints/cp1/pages-1.img")));

    // A target that holds the container (its configs were moved already).
    let mut t = FakeDataRoot::new();
    let troot = t.path();
    t.container(APP_ID, "app", &[volume_mount("appdata", "/data", &troot)]);
    let (code, doc) = json_run(t.volmig().arg("import").arg(&bundle));
    assert_eq!(code, 0, "{doc:#}");
    let installed = troot
        .join("containers")
        .join(APP_ID)
        .join("checkpoints/cp1");
    assert_eq!(
        doc["checkpoints"],
        serde_json::json!([installed.display().to_string()])
    );
    assert_same_tree(&cp, &installed);
    assert!(!troot.join("volmig-staging").exists());

    // A target without the container: the volumes arrive, the checkpoint
    // has nowhere to go, and the bundle's config is what gets verified.
    let t = FakeDataRoot::new();
    let (code, doc) = json_run(t.volmig().arg("import").arg(&bundle));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["checkpoints"], serde_json::json!([]));
    assert_eq!(doc["containers_from_bundle"], serde_json::json!(["app"]));
    assert!(!t.path().join("containers").join(APP_ID).exists());

    // A checkpoint that is not there is refused, naming it.
    let out = src
        .volmig()
        .args(["export", "app", "db", "--checkpoint", "nope", "-o"])
        .arg(work.path().join("x.tar"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for c in ["app", "db"] {
        assert!(
            err.contains(&format!("container {c} has no checkpoint `nope`")),
            "{err}"
        );
    }
    // A name that is a path is refused, even where the path exists.
    let out = src
        .volmig()
        .args(["export", "app", "--checkpoint", "../checkpoints/cp1", "-o"])
        .arg(work.path().join("x.tar"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid checkpoint name `../checkpoints/cp1`"),
        "{}",
        stderr(&out)
    );
    assert!(!work.path().join("x.tar").exists());
    let _ = DB_ID;
}

/// A tmpfs of `size` mounted on a tempdir, unmounted when dropped; `None`
/// where this process may not mount (no CAP_SYS_ADMIN).
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then_some(SmallFs { dir })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn sparse_files_need_only_their_data_on_the_target() {
    // Regression: the free-space check counted a sparse file's holes, so a
    // volume with a large sparse file (a VM disk, a preallocated database)
    // was refused by a target with room for its data many times over.
    let src = small_source();
    let data = src.path().join("volumes/appdata/_data/disk.img");
    let f = fs::File::create(&data).unwrap();
    f.set_len(4 << 20).unwrap();
    drop(f);
    let work = tempfile::tempdir().unwrap();
    let bundle = bundle_of(&src, work.path());
    let Some(small) = SmallFs::mount("1m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let root = small.dir.path();
    fs::create_dir(root.join("volumes")).unwrap();
    fs::create_dir(root.join("containers")).unwrap();
    let (code, doc) = json_run(
        crate::common::volmig()
            .arg("--data-root")
            .arg(root)
            .arg("import")
            .arg(&bundle),
    );
    assert_eq!(code, 0, "{doc:#}");
    let m = fs::metadata(root.join("volumes/appdata/_data/disk.img")).unwrap();
    assert_eq!(m.len(), 4 << 20);
    assert_eq!(m.blocks(), 0);
    assert_same_tree(
        &src.path().join("volumes/appdata"),
        &root.join("volumes/appdata"),
    );
}

/// Regression: `-o /dev/null` wrote `/dev/null.partial` and renamed it over
/// the device, leaving /dev/null a regular file.
#[test]
fn export_to_a_device_writes_into_it_and_keeps_it() {
    use std::os::unix::fs::FileTypeExt;
    let mut src = crate::common::FakeDataRoot::new();
    let r = src.path();
    src.volume("v1", &[])
        .container(
            &format!("{:0>64}", 1),
            "web",
            &[crate::common::volume_mount("v1", "/v", &r)],
        )
        .write_db();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    crate::common::volmig()
        .arg("--data-root")
        .arg(&r)
        .args(["export", "web", "-o"])
        .arg(&fifo)
        .assert()
        .success();
    let bytes = reader.join().unwrap();
    assert!(bytes.len() > 1024, "the bundle went through the fifo");
    assert!(
        std::fs::metadata(&fifo).unwrap().file_type().is_fifo(),
        "the fifo is still a fifo"
    );
    assert!(!dir.path().join("pipe.partial").exists());
}

/// Issue 7, item 8: an existing checkpoint of a target container was
/// replaced and deleted under the default `--on-conflict fail`, with no
/// conflict reported. Now it is a conflict: refused under fail (and
/// skip-identical), replaced under replace, the old one kept until commit.
#[test]
fn an_existing_checkpoint_is_a_conflict_not_silently_replaced() {
    let src = small_source();
    let cp = src
        .path()
        .join("containers")
        .join(APP_ID)
        .join("checkpoints/cp1");
    fs::create_dir_all(&cp).unwrap();
    write_at(&cp.join("pages-1.img"), &[0x5a; 4096], (1_700_000_000, 5));
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("cp.tar");
    export_to(&src, &["app"], &["--checkpoint", "cp1"], &bundle);

    let mut t = FakeDataRoot::new();
    let troot = t.path();
    t.container(APP_ID, "app", &[volume_mount("appdata", "/data", &troot)]);
    let theirs = troot
        .join("containers")
        .join(APP_ID)
        .join("checkpoints/cp1");
    fs::create_dir_all(&theirs).unwrap();
    fs::write(theirs.join("pages-1.img"), b"the target's own checkpoint").unwrap();
    let before = snapshot(&troot);
    for policy in ["fail", "skip-identical"] {
        let out = t
            .volmig()
            .args(["import", "--on-conflict", policy])
            .arg(&bundle)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{policy}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("checkpoint `cp1` of container"),
            "{policy}: {}",
            stderr(&out)
        );
        assert_unchanged(&troot, &before);
    }
    let (code, doc) = json_run(
        t.volmig()
            .args(["import", "--on-conflict", "replace"])
            .arg(&bundle),
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        fs::read(theirs.join("pages-1.img")).unwrap(),
        vec![0x5a; 4096]
    );
    assert!(!troot.join("volmig-staging").exists());
}
