//! Issue 9, pre-copy rounds: a full round with `--manifest-out`, then
//! deltas (`export --since`) applied by `import`. Every kind of change
//! between rounds must arrive, equal on every attribute to the source;
//! a delta carries only what changed; a delta onto a target that is not
//! its base is refused with the target unchanged; deltas chain.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::bundle_support::{
    assert_same_tree, assert_unchanged, parse_entries, small_source, snapshot, stderr, write_at,
    RawEntry,
};
use crate::common::FakeDataRoot;
use volmig::dataroot::metadata::{read_store, write_records, VolumeRecord};
use volmig::manifest::CHUNK;

/// A source, a target that received its full round, and the manifests of
/// the rounds so far.
struct Rounds {
    src: FakeDataRoot,
    dst: FakeDataRoot,
    dir: tempfile::TempDir,
    round: usize,
    /// The containers each export names (`app`: appdata and shared).
    containers: Vec<&'static str>,
}

const VOLUMES: [&str; 2] = ["appdata", "shared"];

impl Rounds {
    /// Round 0: `app`'s volumes exported in full, with a manifest, and
    /// imported.
    fn start(src: FakeDataRoot) -> Rounds {
        let r = Rounds {
            src,
            dst: FakeDataRoot::new(),
            dir: tempfile::tempdir().unwrap(),
            round: 0,
            containers: vec!["app"],
        };
        let bundle = r.dir.path().join("b0");
        r.export(
            &["--manifest-out", r.manifest(0).to_str().unwrap()],
            &bundle,
        );
        r.import(&bundle);
        r.same();
        r
    }

    fn manifest(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("m{n}"))
    }

    fn data(root: &Path, volume: &str) -> PathBuf {
        root.join("volumes").join(volume).join("_data")
    }

    fn src_data(&self, volume: &str) -> PathBuf {
        Self::data(&self.src.path(), volume)
    }

    fn export(&self, extra: &[&str], out: &Path) {
        let o = self
            .src
            .volmig()
            .arg("export")
            .args(&self.containers)
            .args(extra)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "export failed: {}", stderr(&o));
    }

    fn import(&self, bundle: &Path) -> String {
        let o = self
            .dst
            .volmig()
            .arg("import")
            .arg(bundle)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "import failed: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Exports the next delta and returns it (not imported).
    fn delta(&mut self) -> PathBuf {
        let bundle = self.dir.path().join(format!("d{}", self.round + 1));
        let since = self.manifest(self.round);
        let next = self.manifest(self.round + 1);
        self.export(
            &[
                "--since",
                since.to_str().unwrap(),
                "--manifest-out",
                next.to_str().unwrap(),
            ],
            &bundle,
        );
        self.round += 1;
        bundle
    }

    /// Exports and imports the next delta; returns its `_data` entries
    /// (paths below `volumes/`, with their delta marks).
    fn next(&mut self) -> Vec<String> {
        let bundle = self.delta();
        self.import(&bundle);
        self.same();
        carried(&bundle)
    }

    fn same(&self) {
        for v in VOLUMES {
            assert_same_tree(&self.src_data(v), &Self::data(&self.dst.path(), v));
        }
        assert!(
            !self.dst.path().join("volmig-staging").exists()
                || fs::read_dir(self.dst.path().join("volmig-staging"))
                    .unwrap()
                    .next()
                    .is_none(),
            "staging left behind"
        );
    }
}

/// The `_data` entries a bundle carries, as `volume/rel` with ` (delete)`
/// or ` (patch)` for marked ones.
fn carried(bundle: &Path) -> Vec<String> {
    let entries = parse_entries(&fs::read(bundle).unwrap());
    entries
        .iter()
        .filter_map(|e: &RawEntry| {
            let rest = e.path.strip_prefix(b"volumes/")?;
            let text = String::from_utf8_lossy(rest).into_owned();
            let (vol, tail) = text.split_once('/')?;
            let rel = tail.strip_prefix("_data")?;
            let rel = rel.strip_prefix('/').unwrap_or(rel);
            let mark = if e.pax.iter().any(|(k, _)| k == "VOLMIG.delete") {
                " (delete)"
            } else if e.pax.iter().any(|(k, _)| k == "VOLMIG.patch.size") {
                " (patch)"
            } else {
                ""
            };
            Some(format!("{vol}/{rel}{mark}"))
        })
        .collect()
}

fn big(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// A source whose `appdata` also holds a 5 MiB file and a directory tree.
fn source() -> FakeDataRoot {
    let src = small_source();
    let d = Rounds::data(&src.path(), "appdata");
    write_at(&d.join("big.bin"), &big(5 << 20, 0), (1_600_000_000, 9));
    fs::create_dir_all(d.join("tree/deep")).unwrap();
    write_at(&d.join("tree/deep/x"), b"x", (1_600_000_000, 10));
    write_at(&d.join("tree/y"), b"y", (1_600_000_000, 11));
    src
}

#[test]
fn an_unchanged_source_gives_an_empty_delta() {
    let mut r = Rounds::start(source());
    let carried = r.next();
    assert!(carried.is_empty(), "{carried:?}");
}

#[test]
fn content_changed_in_place_and_a_new_file_travel_whole() {
    let mut r = Rounds::start(source());
    let d = r.src_data("appdata");
    fs::write(d.join("a.txt"), b"ALPHA\n").unwrap();
    fs::write(d.join("new.txt"), b"new").unwrap();
    let carried = r.next();
    // The directory that got a new entry travels for its mtime.
    assert_eq!(carried, ["appdata/", "appdata/a.txt", "appdata/new.txt"]);
}

#[test]
fn a_large_file_written_in_place_travels_as_its_changed_chunks() {
    let mut r = Rounds::start(source());
    let path = r.src_data("appdata").join("big.bin");
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"changed", (2 << 20) + 17).unwrap();
    drop(f);
    let bundle = r.delta();
    assert_eq!(carried(&bundle), ["appdata/big.bin (patch)"]);
    // One chunk, not the 5 MiB file.
    let size = fs::metadata(&bundle).unwrap().len();
    assert!(size < CHUNK + 64 * 1024, "delta of {size} bytes");
    r.import(&bundle);
    r.same();
}

/// A database writes pages at 4 KiB-aligned offsets: a 1 MiB write there
/// must cost its chunks, not twice its size (with 1 MiB chunks it
/// carried 2 MiB: the two it straddles).
#[test]
fn a_page_aligned_write_of_1_mib_travels_as_the_chunks_it_touches() {
    let mut r = Rounds::start(source());
    let path = r.src_data("appdata").join("big.bin");
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let at = (1 << 20) + 3 * 4096;
    std::os::unix::fs::FileExt::write_all_at(&f, &big(1 << 20, 5), at).unwrap();
    drop(f);
    let bundle = r.delta();
    assert_eq!(carried(&bundle), ["appdata/big.bin (patch)"]);
    let touched = (at + (1 << 20) - 1) / CHUNK - at / CHUNK + 1;
    let size = fs::metadata(&bundle).unwrap().len();
    assert!(
        size < touched * CHUNK + 64 * 1024 && size < 3 << 19,
        "delta of {size} bytes for {touched} chunks"
    );
    r.import(&bundle);
    r.same();
}

#[test]
fn a_large_file_appended_to_and_one_truncated() {
    let mut r = Rounds::start(source());
    let d = r.src_data("appdata");
    let mut content = big(5 << 20, 0);
    content.extend_from_slice(&big(3 << 19, 7));
    fs::write(d.join("big.bin"), &content).unwrap();
    r.next();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(d.join("big.bin"))
        .unwrap();
    f.set_len((2 << 20) + 5).unwrap();
    drop(f);
    let carried = r.next();
    assert_eq!(carried, ["appdata/big.bin (patch)"]);
}

#[test]
fn deletions_of_a_file_and_of_a_whole_directory() {
    let mut r = Rounds::start(source());
    let d = r.src_data("appdata");
    fs::remove_file(d.join("b.txt")).unwrap();
    fs::remove_dir_all(d.join("tree")).unwrap();
    let carried = r.next();
    // The subtree goes with its directory: one deletion for it.
    assert_eq!(
        carried,
        [
            "appdata/",
            "appdata/b.txt (delete)",
            "appdata/tree (delete)"
        ]
    );
}

#[test]
fn a_rename_and_type_changes_file_dir_symlink() {
    let mut r = Rounds::start(source());
    let d = r.src_data("appdata");
    fs::rename(d.join("a.txt"), d.join("renamed.txt")).unwrap();
    // A directory becomes a file, a file a directory, a file a symlink.
    fs::remove_dir_all(d.join("tree")).unwrap();
    fs::write(d.join("tree"), b"now a file").unwrap();
    fs::remove_file(d.join("b.txt")).unwrap();
    fs::create_dir(d.join("b.txt")).unwrap();
    fs::write(d.join("b.txt/inside"), b"i").unwrap();
    fs::remove_file(d.join("sub/c.txt")).unwrap();
    symlink("../a.txt", d.join("sub/c.txt")).unwrap();
    r.next();
    // And back.
    fs::remove_file(d.join("sub/c.txt")).unwrap();
    fs::write(d.join("sub/c.txt"), b"file again").unwrap();
    fs::remove_dir_all(d.join("b.txt")).unwrap();
    fs::write(d.join("b.txt"), b"b").unwrap();
    r.next();
}

#[test]
fn hardlink_groups_split_and_merged() {
    let src = source();
    let d = Rounds::data(&src.path(), "appdata");
    fs::hard_link(d.join("a.txt"), d.join("a-link")).unwrap();
    let mut r = Rounds::start(src);
    // Split: a-link becomes a file of its own.
    fs::remove_file(d.join("a-link")).unwrap();
    fs::write(d.join("a-link"), b"alone").unwrap();
    r.next();
    // Merge: b.txt becomes a link to a.txt.
    fs::remove_file(d.join("b.txt")).unwrap();
    fs::hard_link(d.join("a.txt"), d.join("b.txt")).unwrap();
    r.next();
    // The base the merge recorded is the target's: one more round applies.
    fs::write(d.join("after-merge"), b"x").unwrap();
    r.next();
}

#[test]
fn mode_owner_and_xattr_changes_alone() {
    let mut r = Rounds::start(source());
    let d = r.src_data("appdata");
    fs::set_permissions(d.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(d.join("b.txt"), Some(1234), Some(4321)).unwrap();
    volmig::fileattrs::set_xattr(&d.join("sub/c.txt"), b"user.round", b"2").unwrap();
    fs::set_permissions(d.join("big.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    let carried = r.next();
    assert_eq!(
        carried,
        [
            "appdata/a.txt",
            "appdata/b.txt",
            "appdata/big.bin (patch)",
            "appdata/sub/c.txt"
        ]
    );
    // The xattr goes again.
    xattr::remove(d.join("sub/c.txt"), "user.round").unwrap();
    r.next();
}

#[test]
fn a_sparse_file_gains_and_loses_data() {
    let src = source();
    let d = Rounds::data(&src.path(), "appdata");
    let f = fs::File::create(d.join("sparse.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"head", 0).unwrap();
    drop(f);
    let mut r = Rounds::start(src);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(d.join("sparse.img"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &big(1 << 20, 3), 5 << 20).unwrap();
    drop(f);
    let bundle = r.delta();
    assert!(fs::metadata(&bundle).unwrap().len() < 2 << 20);
    r.import(&bundle);
    r.same();
    // Losing data: the region becomes a hole again.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(d.join("sparse.img"))
        .unwrap();
    nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        5 << 20,
        1 << 20,
    )
    .unwrap();
    drop(f);
    r.next();
}

#[test]
fn the_attributes_of_data_itself() {
    let mut r = Rounds::start(source());
    let d = r.src_data("appdata");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::lchown(&d, Some(999), Some(999)).unwrap();
    assert_eq!(r.next(), ["appdata/"]);
}

#[test]
fn deltas_chain_and_each_applies_onto_the_one_before() {
    let mut r = Rounds::start(source());
    let d = r.src_data("appdata");
    for i in 0..3 {
        fs::write(d.join(format!("round{i}")), format!("{i}")).unwrap();
        r.next();
    }
}

#[test]
fn a_delta_onto_a_changed_target_is_refused_naming_the_path() {
    let mut r = Rounds::start(source());
    fs::write(r.src_data("appdata").join("a.txt"), b"source change").unwrap();
    let bundle = r.delta();
    // The target's own copy changed since its round was imported.
    let theirs = Rounds::data(&r.dst.path(), "appdata").join("sub/c.txt");
    fs::write(&theirs, b"target change").unwrap();
    let before = snapshot(&r.dst.path());
    let o = r.dst.volmig().arg("import").arg(&bundle).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("sub/c.txt") && err.contains("changed since"),
        "{err}"
    );
    assert_unchanged(&r.dst.path(), &before);
}

#[test]
fn a_delta_out_of_order_is_refused() {
    let mut r = Rounds::start(source());
    let d = r.src_data("appdata");
    fs::write(d.join("a.txt"), b"one").unwrap();
    let first = r.delta();
    fs::write(d.join("a.txt"), b"two").unwrap();
    let second = r.delta();
    let before = snapshot(&r.dst.path());
    let o = r.dst.volmig().arg("import").arg(&second).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("import the deltas in order"),
        "{}",
        stderr(&o)
    );
    assert_unchanged(&r.dst.path(), &before);
    r.import(&first);
    r.import(&second);
    r.same();
}

fn records(root: &Path) -> std::collections::BTreeMap<String, VolumeRecord> {
    read_store(&root.join("volumes/metadata.db"))
        .unwrap()
        .map(|s| s.records)
        .unwrap_or_default()
}

fn relabel(root: &Path, name: &str, labels: &[(&str, &str)], options: &[(&str, &str)]) {
    let map = |kv: &[(&str, &str)]| {
        (!kv.is_empty()).then(|| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    };
    write_records(
        &root.join("volumes/metadata.db"),
        &[VolumeRecord {
            name: name.into(),
            driver: "local".into(),
            labels: map(labels),
            options: map(options),
        }],
    )
    .unwrap();
}

#[test]
fn labels_and_options_changed_between_rounds_are_written_into_metadata_db() {
    let mut r = Rounds::start(source());
    relabel(
        &r.src.path(),
        "appdata",
        &[("tier", "gold")],
        &[("type", "tmpfs"), ("device", "tmpfs")],
    );
    fs::write(r.src_data("appdata").join("a.txt"), b"with new labels").unwrap();
    let untouched = records(&r.dst.path())["shared"].clone();
    let bundle = r.delta();
    let out = r.import(&bundle);
    assert!(out.contains("1 record in metadata.db"), "{out}");
    r.same();
    let dst = records(&r.dst.path());
    assert_eq!(dst["appdata"], records(&r.src.path())["appdata"]);
    assert_eq!(
        dst["shared"], untouched,
        "an unchanged record was rewritten"
    );
    // Unchanged since: the next delta writes no record.
    fs::write(r.src_data("appdata").join("a.txt"), b"round two").unwrap();
    let bundle = r.delta();
    let out = r.import(&bundle);
    assert!(!out.contains("metadata.db"), "{out}");
    r.same();
}

#[test]
fn a_volume_added_between_rounds_arrives_whole_with_its_record_and_chains() {
    let mut r = Rounds::start(source());
    let pg = r.src_data("pgdata");
    fs::create_dir_all(pg.join("base/1")).unwrap();
    write_at(&pg.join("PG_VERSION"), b"15\n", (1_600_000_000, 30));
    write_at(
        &pg.join("base/1/big"),
        &big(3 << 20, 7),
        (1_600_000_000, 31),
    );
    relabel(&r.src.path(), "pgdata", &[("tier", "db")], &[]);
    fs::set_permissions(&pg, fs::Permissions::from_mode(0o700)).unwrap();
    // Round 1 names `db` too: its volume pgdata is new.
    r.containers = vec!["app", "db"];
    let bundle = r.delta();
    let before = snapshot(&r.dst.path());
    let o = r
        .dst
        .volmig()
        .args(["import", "--dry-run"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("pgdata added whole"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_unchanged(&r.dst.path(), &before);
    let out = r.import(&bundle);
    assert!(out.contains("pgdata added whole"), "{out}");
    r.same();
    let dst_pg = Rounds::data(&r.dst.path(), "pgdata");
    assert_same_tree(&pg, &dst_pg);
    assert_eq!(
        records(&r.dst.path())["pgdata"],
        records(&r.src.path())["pgdata"]
    );
    assert!(r.dst.path().join("volmig-bases/pgdata.manifest").is_file());
    let mode = |root: &Path| {
        fs::symlink_metadata(root.join("volumes/pgdata"))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(
        mode(&r.dst.path()),
        mode(&r.src.path()),
        "the volume directory's mode"
    );
    // The next delta applies onto the added volume like any other.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(pg.join("base/1/big"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"changed", 1 << 20).unwrap();
    drop(f);
    let carried = r.next();
    assert!(
        carried.contains(&"pgdata/base/1/big (patch)".to_string()),
        "{carried:?}"
    );
    assert_same_tree(&pg, &dst_pg);
}

#[test]
fn a_delta_adding_a_volume_the_target_already_has_is_refused_unchanged() {
    let mut r = Rounds::start(source());
    write_at(
        &r.src_data("pgdata").join("x"),
        b"source",
        (1_600_000_000, 30),
    );
    r.containers = vec!["app", "db"];
    let bundle = r.delta();
    // The target has a pgdata of its own, that no round brought.
    let theirs = Rounds::data(&r.dst.path(), "pgdata");
    fs::create_dir_all(&theirs).unwrap();
    fs::write(theirs.join("mine"), b"the target's only copy").unwrap();
    let before = snapshot(&r.dst.path());
    let o = r.dst.volmig().arg("import").arg(&bundle).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("pgdata"), "{}", stderr(&o));
    assert_unchanged(&r.dst.path(), &before);
}

#[test]
fn a_delta_of_a_volume_the_target_never_got_is_refused_unchanged() {
    // Round 1 adds pgdata; the target skips it and gets round 2, which
    // carries only pgdata's change: not the whole volume.
    let mut r = Rounds::start(source());
    write_at(&r.src_data("pgdata").join("x"), b"one", (1_600_000_000, 30));
    r.containers = vec!["app", "db"];
    let _skipped = r.delta();
    write_at(&r.src_data("pgdata").join("y"), b"two", (1_600_000_000, 31));
    let bundle = r.delta();
    let before = snapshot(&r.dst.path());
    let o = r.dst.volmig().arg("import").arg(&bundle).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("holds round") || stderr(&o).contains("does not carry it whole"),
        "{}",
        stderr(&o)
    );
    assert_unchanged(&r.dst.path(), &before);
}

#[test]
fn a_volume_removed_between_rounds_is_left_on_the_target_and_named() {
    let mut r = Rounds::start(source());
    write_at(
        &r.src_data("pgdata").join("x"),
        b"kept",
        (1_600_000_000, 30),
    );
    r.containers = vec!["app", "db"];
    let bundle = r.delta();
    r.import(&bundle);
    // Round 2 no longer names `db`: pgdata is not in it.
    r.containers = vec!["app"];
    fs::write(r.src_data("appdata").join("a.txt"), b"round two").unwrap();
    let bundle = r.delta();
    let out = r.import(&bundle);
    r.same();
    // Never deleted (it may be the only copy), and said so.
    assert!(
        out.contains("pgdata") && out.contains("not in this round"),
        "{out}"
    );
    assert_same_tree(
        &r.src_data("pgdata"),
        &Rounds::data(&r.dst.path(), "pgdata"),
    );
}

/// metadata.db held as a running dockerd holds it (bbolt's LOCK_EX), for
/// as long as the value lives.
fn hold_like_dockerd(root: &Path) -> nix::fcntl::Flock<fs::File> {
    let db = fs::File::open(root.join("volumes/metadata.db")).unwrap();
    nix::fcntl::Flock::lock(db, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap()
}

#[test]
fn labels_changed_while_the_target_dockerd_holds_metadata_db_are_named_as_work_left() {
    let mut r = Rounds::start(source());
    // Unchanged labels with dockerd running: nothing to say.
    fs::write(r.src_data("appdata").join("a.txt"), b"round one").unwrap();
    let bundle = r.delta();
    let held = hold_like_dockerd(&r.dst.path());
    let out = r.import(&bundle);
    assert!(!out.contains("labels"), "{out}");
    drop(held);
    r.same();
    // Changed: the data is applied, the labels named as work left.
    relabel(&r.src.path(), "appdata", &[("tier", "gold")], &[]);
    fs::write(r.src_data("appdata").join("a.txt"), b"round two").unwrap();
    let bundle = r.delta();
    let held = hold_like_dockerd(&r.dst.path());
    let o = r.dst.volmig().arg("import").arg(&bundle).output().unwrap();
    drop(held);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("volume `appdata` changed on the source since the base round, and a running dockerd holds"),
        "{out}"
    );
    r.same();
    // The next round, with dockerd stopped, writes them.
    fs::write(r.src_data("appdata").join("a.txt"), b"round three").unwrap();
    let bundle = r.delta();
    let out = r.import(&bundle);
    assert!(out.contains("1 record in metadata.db"), "{out}");
    assert_eq!(
        records(&r.dst.path())["appdata"],
        records(&r.src.path())["appdata"]
    );
}

#[test]
fn a_volume_added_while_the_target_dockerd_holds_metadata_db_is_refused_unchanged() {
    let mut r = Rounds::start(source());
    write_at(&r.src_data("pgdata").join("x"), b"new", (1_600_000_000, 30));
    r.containers = vec!["app", "db"];
    let bundle = r.delta();
    let before = snapshot(&r.dst.path());
    let held = hold_like_dockerd(&r.dst.path());
    let o = r.dst.volmig().arg("import").arg(&bundle).output().unwrap();
    drop(held);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("adds volume `pgdata`, and a running dockerd holds"),
        "{}",
        stderr(&o)
    );
    assert_unchanged(&r.dst.path(), &before);
}
