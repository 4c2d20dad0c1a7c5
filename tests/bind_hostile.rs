//! Bind-type volumes (issue 8) against crafted bundles and awkward
//! targets: several carried volumes whose device paths meet, symlinks on
//! the way to a device path, an opts.json that mounts another path than
//! the header lays the data down at, a mount point at the device path.
//! Each must be refused (exit 2) before anything is written.

use std::fs;
use std::path::{Path, PathBuf};

use crate::bundle_support::{parse_entries, position, reseal, write_entries};
use crate::common::{json_run, volume_mount, FakeDataRoot};
use serde_json::Value;

fn opts(device: &Path) -> String {
    format!(
        r#"{{"MountType":"none","MountOpts":"bind","MountDevice":"{}"}}"#,
        device.display()
    )
}

/// A source whose container `web` uses bind volumes `a` and `b` with
/// these device paths (created with one file each unless they exist).
fn source(devices: [&Path; 2]) -> FakeDataRoot {
    let mut root = FakeDataRoot::new();
    let path = root.path();
    for (name, device) in ["va", "vb"].iter().zip(devices) {
        if !device.exists() {
            fs::create_dir_all(device).unwrap();
            fs::write(device.join(format!("{name}.txt")), name).unwrap();
        }
        root.volume(name, &[]).opts_json(name, &opts(device));
    }
    root.container(
        &"c1".repeat(32),
        "web",
        &[
            volume_mount("va", "/a", &path),
            volume_mount("vb", "/b", &path),
        ],
    )
    .write_db();
    root
}

fn export(src: &FakeDataRoot, bundle: &Path) {
    let mut cmd = src.volmig();
    cmd.args(["export", "web", "-o"]).arg(bundle);
    let (code, doc) = json_run(&mut cmd);
    assert_eq!(code, 0, "{doc}");
}

fn import(target: &FakeDataRoot, bundle: &Path, extra: &[&str]) -> (i32, Value) {
    let mut cmd = target.volmig();
    cmd.arg("import").arg(bundle).args(extra);
    json_run(&mut cmd)
}

fn map(old: &Path, new: &Path) -> String {
    format!("--map-path={}={}", old.display(), new.display())
}

/// Names in `dir` that volmig staged (none may be left).
fn staged_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".volmig"))
                .collect()
        })
        .unwrap_or_default()
}

/// Nothing of the bundle reached the target data-root.
fn assert_no_volumes(target: &FakeDataRoot) {
    let left: Vec<_> = fs::read_dir(target.path().join("volumes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "metadata.db")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!target.path().join("volmig-staging").exists());
}

/// Two volumes bound to the same host directory: the bundle carries it
/// twice. With an empty directory there, both were planned as filling it;
/// the second move found the directory "lost" (the first had put it
/// aside), the rollback of the second failed on the same, and the import
/// exited 1 with an unsettled journal and `volmig recover` to run.
#[test]
fn two_volumes_with_one_device_path_left_an_unsettled_journal() {
    let host = tempfile::tempdir().unwrap();
    let shared = host.path().join("srv/shared");
    let src = source([&shared, &shared]);
    let bundle = host.path().join("b.vmb");
    export(&src, &bundle);
    let new = host.path().join("new/shared");
    fs::create_dir_all(&new).unwrap();
    let target = FakeDataRoot::new();
    let (code, doc) = import(&target, &bundle, &[&map(&shared, &new)]);
    assert_eq!(code, 2, "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("`va` and `vb`") && error.contains(&format!("`{}`", new.display())),
        "{error}"
    );
    assert_eq!(fs::read_dir(&new).unwrap().count(), 0, "left empty");
    assert!(staged_in(new.parent().unwrap()).is_empty());
    assert_no_volumes(&target);
}

/// `b`'s device inside `a`'s: `a`'s tree (which holds `b`'s directory)
/// was laid down first, and `b`'s rename then failed half-way through the
/// commit, after the whole bundle had been staged twice.
#[test]
fn nested_device_paths_failed_half_way_through_the_commit() {
    let host = tempfile::tempdir().unwrap();
    let outer = host.path().join("srv/app");
    let inner = outer.join("data");
    fs::create_dir_all(&inner).unwrap();
    fs::write(inner.join("rows"), "rows").unwrap();
    let src = source([&outer, &inner]);
    let bundle = host.path().join("b.vmb");
    export(&src, &bundle);
    let new = host.path().join("new");
    let target = FakeDataRoot::new();
    let (code, doc) = import(&target, &bundle, &[&map(&host.path().join("srv"), &new)]);
    assert_eq!(code, 2, "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("volume `vb`") && error.contains("inside") && error.contains("--map-path"),
        "{error}"
    );
    assert!(!new.exists(), "nothing created, not even the parents");
    assert_no_volumes(&target);
}

/// # Security
/// A crafted bundle: volume `a`'s data holds a symlink `d` to the target's
/// `volumes/`, volume `b`'s device is `<a's device>/d/evil`. `a` was laid
/// down first, and `b`'s rename went through `a`'s symlink: a directory
/// of bundle data in the target's `volumes/`, which dockerd takes for a
/// volume.
#[test]
fn a_symlink_in_one_volumes_data_carried_anothers_into_the_data_root() {
    let host = tempfile::tempdir().unwrap();
    let target = FakeDataRoot::new();
    let outer = host.path().join("srv/app");
    fs::create_dir_all(&outer).unwrap();
    std::os::unix::fs::symlink(target.path().join("volumes"), outer.join("d")).unwrap();
    let evil = outer.join("d/evil");
    // On the source, the device resolves (only for the export).
    fs::create_dir(&evil).unwrap();
    fs::write(evil.join("payload"), "x").unwrap();
    let src = source([&outer, &evil]);
    let bundle = host.path().join("b.vmb");
    export(&src, &bundle);
    fs::remove_dir_all(target.path().join("volumes/evil")).unwrap();
    let new = host.path().join("new");
    let (code, doc) = import(&target, &bundle, &[&map(&host.path().join("srv"), &new)]);
    assert_eq!(code, 2, "{doc}");
    assert!(!target.path().join("volumes/evil").exists());
    assert!(!new.exists());
    assert_no_volumes(&target);
}

/// # Security
/// A symlink on the target host on the way to the device path: the path
/// as written is not in the data-root, but the kernel resolves it there.
/// The staging and then the data went into the target's `volumes/`.
#[test]
fn a_symlink_on_the_way_to_the_device_path_led_into_the_data_root() {
    let host = tempfile::tempdir().unwrap();
    let dev = host.path().join("srv/a");
    let other = host.path().join("srv/b");
    let src = source([&dev, &other]);
    let bundle = host.path().join("b.vmb");
    export(&src, &bundle);
    let target = FakeDataRoot::new();
    let link = host.path().join("link");
    std::os::unix::fs::symlink(target.path().join("volumes"), &link).unwrap();
    let (code, doc) = import(
        &target,
        &bundle,
        &[
            &map(&dev, &link.join("x/a")),
            &map(&other, &host.path().join("new/b")),
        ],
    );
    assert_eq!(code, 2, "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("inside (or above) the data-root"), "{error}");
    assert!(!target.path().join("volumes/x").exists());
    assert!(staged_in(&target.path().join("volumes")).is_empty());
    assert_no_volumes(&target);
}

/// The bundle `source([a, b])` exports, as entries to edit.
fn crafted(host: &Path) -> (PathBuf, Vec<crate::bundle_support::RawEntry>) {
    let a = host.join("srv/a");
    let b = host.join("srv/b");
    let src = source([&a, &b]);
    let bundle = host.join("b.vmb");
    export(&src, &bundle);
    let entries = parse_entries(&fs::read(&bundle).unwrap());
    (a, entries)
}

/// # Security
/// The header says where the data is laid down (and what `inspect` and
/// `--dry-run` show), opts.json what dockerd mounts. A bundle whose
/// opts.json bind-mounted `/` while its header named a harmless path was
/// imported (exit 0): every container of the volume got the host's root.
#[test]
fn an_opts_json_mounting_another_path_than_the_header_was_imported() {
    let host = tempfile::tempdir().unwrap();
    let (a, mut entries) = crafted(host.path());
    let at = position(&entries, b"volumes/va/opts.json");
    entries[at].data = opts(Path::new("/")).into_bytes();
    reseal(&mut entries);
    let bundle = host.path().join("crafted.vmb");
    fs::write(&bundle, write_entries(&entries)).unwrap();
    let new = host.path().join("new");
    let target = FakeDataRoot::new();
    let (code, doc) = import(
        &target,
        &bundle,
        &[&map(&host.path().join("srv"), &new), "--dry-run"],
    );
    assert_eq!(code, 2, "the dry run refuses it too: {doc}");
    let (code, doc) = import(&target, &bundle, &[&map(&host.path().join("srv"), &new)]);
    assert_eq!(code, 2, "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("volumes/va/opts.json") && error.contains(&a.display().to_string()),
        "{error}"
    );
    assert!(!new.exists());
    assert_no_volumes(&target);
}

/// # Security
/// The same with the metadata.db record (what `docker volume inspect`
/// shows) naming another device than the header.
#[test]
fn a_record_naming_another_device_than_the_header_was_imported() {
    let host = tempfile::tempdir().unwrap();
    let (_, mut entries) = crafted(host.path());
    let mut header: Value = serde_json::from_slice(&entries[0].data).unwrap();
    let volume = header["volumes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|v| v["name"] == "va")
        .unwrap();
    volume["record"] = serde_json::json!({
        "Name": "va", "Driver": "local", "Labels": null,
        "Options": {"type": "none", "o": "bind", "device": "/srv/harmless"},
    });
    entries[0].data = serde_json::to_vec(&header).unwrap();
    reseal(&mut entries);
    let bundle = host.path().join("crafted.vmb");
    fs::write(&bundle, write_entries(&entries)).unwrap();
    let new = host.path().join("new");
    let target = FakeDataRoot::new();
    let (code, doc) = import(&target, &bundle, &[&map(&host.path().join("srv"), &new)]);
    assert_eq!(code, 2, "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("/srv/harmless"), "{error}");
    assert!(!new.exists());
    assert_no_volumes(&target);
}

/// A tmpfs mounted at `dir` for the test's life (`None` where this host
/// does not let the test mount: the case is then skipped). Dropped, it
/// unmounts every mount under `host`, wherever an import moved it.
struct Tmpfs {
    host: PathBuf,
}

impl Tmpfs {
    fn mount(host: &Path, dir: &Path) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "volmig-test"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("cannot mount a tmpfs here: skipped");
        }
        ok.then(|| Tmpfs {
            host: host.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let table = volmig::dataroot::mountinfo::MountTable::read_self().unwrap();
        for m in table.mounts.iter().rev() {
            if m.mount_point.starts_with(&self.host) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&m.mount_point)
                    .status();
            }
        }
    }
}

/// A mount point at the device path (a fresh disk mounted where the data
/// goes): the whole bundle was staged on the filesystem below it, and
/// the commit's rename then failed on the mount point (EBUSY).
#[test]
fn a_mount_point_at_the_device_path_failed_only_at_the_commit() {
    let host = tempfile::tempdir().unwrap();
    let a = host.path().join("srv/a");
    let b = host.path().join("srv/b");
    let src = source([&a, &b]);
    let bundle = host.path().join("b.vmb");
    export(&src, &bundle);
    let new = host.path().join("new");
    let Some(_mount) = Tmpfs::mount(host.path(), &new.join("a")) else {
        return;
    };
    let target = FakeDataRoot::new();
    let (code, doc) = import(&target, &bundle, &[&map(&host.path().join("srv"), &new)]);
    assert_eq!(code, 2, "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("mount point") && error.contains("--map-path"),
        "{error}"
    );
    assert!(staged_in(&new).is_empty());
    assert!(!new.join("b").exists());
    assert_no_volumes(&target);
}

/// # Safety of data
/// A mount below the device path, with `--on-conflict replace`: the old
/// directory went aside with the mount inside it, and removing it after
/// the commit deleted the mounted filesystem's files.
#[test]
fn replace_deleted_the_files_of_a_filesystem_mounted_below_the_device_path() {
    let host = tempfile::tempdir().unwrap();
    let a = host.path().join("srv/a");
    let b = host.path().join("srv/b");
    let src = source([&a, &b]);
    let bundle = host.path().join("b.vmb");
    export(&src, &bundle);
    let new = host.path().join("new");
    fs::create_dir_all(new.join("a")).unwrap();
    fs::write(new.join("a/old.txt"), "old").unwrap();
    let Some(_mount) = Tmpfs::mount(host.path(), &new.join("a/backup")) else {
        return;
    };
    fs::write(new.join("a/backup/precious"), "on another filesystem").unwrap();
    let target = FakeDataRoot::new();
    let (code, doc) = import(
        &target,
        &bundle,
        &[
            &map(&host.path().join("srv"), &new),
            "--on-conflict",
            "replace",
        ],
    );
    assert_eq!(code, 2, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("new/a/backup"),
        "{doc}"
    );
    assert_eq!(
        fs::read_to_string(new.join("a/backup/precious")).unwrap(),
        "on another filesystem"
    );
    assert_eq!(fs::read_to_string(new.join("a/old.txt")).unwrap(), "old");
    assert_no_volumes(&target);
}

/// A volume imported before whose device path was removed since: a
/// re-run with `skip-identical` hashed the missing directory and failed
/// with "cannot write `<R>/volumes/app`: cannot open `<device>`" after
/// staging the whole bundle, where it is a volume that differs.
#[test]
fn skip_identical_with_the_device_path_gone_failed_to_hash_it() {
    let host = tempfile::tempdir().unwrap();
    let a = host.path().join("srv/a");
    let b = host.path().join("srv/b");
    let src = source([&a, &b]);
    let bundle = host.path().join("b.vmb");
    export(&src, &bundle);
    let new = host.path().join("new");
    let target = FakeDataRoot::new();
    let mapped = map(&host.path().join("srv"), &new);
    let (code, doc) = import(&target, &bundle, &[&mapped]);
    assert_eq!(code, 0, "{doc}");
    fs::remove_dir_all(new.join("a")).unwrap();
    let skip = [mapped.as_str(), "--on-conflict", "skip-identical"];
    let (code, doc) = import(&target, &bundle, &skip);
    assert_eq!(code, 2, "{doc}");
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains("volume `va` already exists") && error.contains("different content"),
        "{error}"
    );
    assert!(!error.contains("cannot open"), "{error}");
    let (code, doc) = import(&target, &bundle, &[&mapped, "--on-conflict", "replace"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(fs::read_to_string(new.join("a/va.txt")).unwrap(), "va");
}
