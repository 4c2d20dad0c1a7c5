//! Property tests: real bundles and real data-roots, mutated at random,
//! must never make volmig panic, hang or grow; a failed import must leave
//! the target data-root exactly as it was.
//!
//! The bulk runs in-process through the library (thousands of cases in
//! seconds, panics caught with `catch_unwind`); a smaller sample runs the
//! binary and checks its exit code (0, 1 or 2, never a panic's 101) and
//! its peak RSS (under 64 MiB).

use std::fs;
use std::io::{self, Cursor, Read};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;

use crate::bundle_support::{
    assert_unchanged, empty_target, export_to, parse_entries, reseal, small_source, snapshot,
    write_entries, RawEntry,
};
use volmig::bundle::reader::{self, Check, ReadError, Visitor};
use volmig::bundle::{BundleHeader, EntryMeta, Place};
use volmig::daemon_version::DaemonVersion;
use volmig::dataroot::mountinfo::MountTable;
use volmig::dataroot::{containers, DataRoot};
use volmig::import::{import, ImportOptions, OnConflict};
use volmig::progress::NoProgress;
use volmig::verify::{verify_container, VerifyOptions, World};

/// A valid bundle of `small_source()` (raw and zstd), made once by the
/// binary.
fn valid(zstd: bool) -> &'static [u8] {
    static RAW: OnceLock<Vec<u8>> = OnceLock::new();
    static ZSTD: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = if zstd { &ZSTD } else { &RAW };
    cell.get_or_init(|| {
        let src = small_source();
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("b.volmig");
        let extra: &[&str] = if zstd { &["--compress", "zstd"] } else { &[] };
        export_to(&src, &["app", "db"], extra, &out);
        fs::read(out).unwrap()
    })
}

/// Reads every byte handed over, as import would.
struct Drain;

impl Visitor for Drain {
    fn header(&mut self, _: &BundleHeader) -> Result<(), ReadError> {
        Ok(())
    }
    fn entry(
        &mut self,
        _: &BundleHeader,
        _: &EntryMeta,
        _: Place<'_>,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        io::copy(data, &mut io::sink()).map_err(ReadError::Io)?;
        Ok(())
    }
}

fn quiet<T>(work: impl FnOnce() -> T) -> std::thread::Result<T> {
    panic::catch_unwind(AssertUnwindSafe(work))
}

fn inspect_in_process(bytes: Vec<u8>) -> std::thread::Result<bool> {
    quiet(|| {
        let Ok(input) = reader::open(Box::new(Cursor::new(bytes))) else {
            return false;
        };
        reader::read(input, &mut Drain, &NoProgress, Check::Content).is_ok()
    })
}

/// Imports into a fresh empty target; on failure the target must be
/// unchanged. Returns whether the import succeeded.
fn import_in_process(bytes: Vec<u8>) -> bool {
    let target = empty_target();
    let before = snapshot(&target.path());
    let root = DataRoot::open(&target.path(), None).unwrap();
    let outcome = quiet(|| {
        import(
            &root,
            Box::new(Cursor::new(bytes)),
            &ImportOptions {
                policy: OnConflict::Fail,
                dry_run: false,
                wait: false,
                map_paths: Vec::new(),
            },
            None,
            &NoProgress,
        )
        .is_ok()
    });
    let ok = outcome.expect("import panicked");
    if !ok {
        assert_unchanged(&target.path(), &before);
    }
    ok
}

// ---------------------------------------------------------------------
// Bundle mutations.

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte anywhere.
    Flip(Index, u8),
    /// XOR one byte of a ustar header block (typeflag, size, mode, ...).
    HeaderByte(Index, Index, u8),
    Truncate(Index),
    Overwrite(Index, Vec<u8>),
    Swap(Index, Index),
    Drop(Index),
    Duplicate(Index),
    /// Set a ustar field of an entry: 0 mode, 1 uid, 2 gid, 3 mtime,
    /// 4 entry type, 5 device.
    Field(Index, u8, u64),
    Pax(Index, &'static str, Vec<u8>),
    /// XOR a byte of header.json or trailer.json.
    Json(bool, Index, u8),
    /// Change a file's content.
    Data(Index, Vec<u8>),
}

const PAX_KEYS: &[&str] = &[
    "mtime",
    "size",
    "uid",
    "gid",
    "path",
    "linkpath",
    "GNU.sparse.major",
    "GNU.sparse.realsize",
    "GNU.sparse.name",
    "SCHILY.xattr.user.x",
];

fn number_or_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        any::<i64>().prop_map(|n| format!("{n}.{}", n.unsigned_abs() % 1000).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..40),
        Just(b"volumes/appdata/_data/../../../etc/x".to_vec()),
        Just(b"99999999999999999999999".to_vec()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<Index>(), any::<Index>(), 1..=255u8)
            .prop_map(|(b, o, x)| Mutation::HeaderByte(b, o, x)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        any::<Index>().prop_map(Mutation::Drop),
        any::<Index>().prop_map(Mutation::Duplicate),
        (any::<Index>(), 0..6u8, any::<u64>()).prop_map(|(i, f, v)| Mutation::Field(i, f, v)),
        (
            any::<Index>(),
            prop::sample::select(PAX_KEYS),
            number_or_bytes()
        )
            .prop_map(|(i, k, v)| Mutation::Pax(i, k, v)),
        (any::<bool>(), any::<Index>(), 1..=255u8).prop_map(|(t, i, x)| Mutation::Json(t, i, x)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 0..2000))
            .prop_map(|(i, d)| Mutation::Data(i, d)),
    ]
}

/// Start offsets of the ustar header blocks of `bytes`.
fn header_blocks(bytes: &[u8]) -> Vec<usize> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().raw_header_position() as usize)
        .collect()
}

fn set_field(e: &mut RawEntry, field: u8, value: u64) {
    let h = &mut e.header;
    match field {
        0 => h.set_mode(value as u32),
        1 => h.set_uid(value % (1 << 21)),
        2 => h.set_gid(value % (1 << 21)),
        3 => h.set_mtime(value % (1 << 33)),
        4 => {
            const TYPES: &[u8] = b"0123456789xgLKSAD\0";
            h.set_entry_type(tar::EntryType::new(TYPES[value as usize % TYPES.len()]));
        }
        _ => {
            let _ = h.set_device_major(value as u32 % 4096);
            let _ = h.set_device_minor((value >> 32) as u32 % 4096);
        }
    }
}

/// Applies `m` to the valid bundle; entry-level mutations are resealed
/// (SHA256SUMS and trailer rewritten to match) when `seal` is set, so the
/// checks behind the digests are reached too.
fn mutate(m: &Mutation, seal: bool) -> Vec<u8> {
    let raw = valid(false);
    let mut bytes = raw.to_vec();
    let mut entries = parse_entries(raw);
    let n = entries.len();
    match m {
        Mutation::Flip(i, x) => {
            let at = i.index(bytes.len());
            bytes[at] ^= x;
            return bytes;
        }
        Mutation::HeaderByte(b, o, x) => {
            let blocks = header_blocks(raw);
            let at = blocks[b.index(blocks.len())] + o.index(512);
            bytes[at] ^= x;
            return bytes;
        }
        Mutation::Truncate(i) => {
            bytes.truncate(i.index(bytes.len()));
            return bytes;
        }
        Mutation::Overwrite(i, with) => {
            let at = i.index(bytes.len());
            let end = (at + with.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&with[..end - at]);
            return bytes;
        }
        Mutation::Swap(a, b) => entries.swap(a.index(n), b.index(n)),
        Mutation::Drop(i) => {
            entries.remove(i.index(n));
        }
        Mutation::Duplicate(i) => {
            let at = i.index(n);
            let copy = entries[at].clone();
            entries.insert(at, copy);
        }
        Mutation::Field(i, f, v) => set_field(&mut entries[i.index(n)], *f, *v),
        Mutation::Pax(i, k, v) => entries[i.index(n)].pax.push((k.to_string(), v.clone())),
        Mutation::Json(trailer, i, x) => {
            let e = if *trailer {
                &mut entries[n - 1]
            } else {
                &mut entries[0]
            };
            let at = i.index(e.data.len());
            e.data[at] ^= x;
        }
        Mutation::Data(i, d) => entries[i.index(n)].data = d.clone(),
    }
    if seal {
        // The test helper assumes a sane bundle; when the mutation broke
        // that, the unsealed bytes are just as good a case.
        let mut sealed = entries.clone();
        if quiet(|| reseal(&mut sealed)).is_ok() {
            entries = sealed;
        }
    }
    quiet(|| write_entries(&entries)).unwrap_or(bytes)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// inspect --check's reader never panics on a mutated bundle.
    #[test]
    fn a_mutated_bundle_never_panics_the_reader(m in mutation(), seal in any::<bool>()) {
        let outcome = inspect_in_process(mutate(&m, seal));
        prop_assert!(outcome.is_ok(), "the reader panicked on {m:?}");
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// Same for zstd bundles: flipped or truncated compressed bytes.
    #[test]
    fn a_mutated_zstd_bundle_never_panics_the_reader(
        at in any::<Index>(),
        x in 1..=255u8,
        cut in any::<Option<Index>>(),
    ) {
        let mut bytes = valid(true).to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        prop_assert!(inspect_in_process(bytes).is_ok(), "panicked");
    }
}

proptest! {
    #![proptest_config(config(200))]

    /// import never panics, and a failed import leaves the target as it
    /// was (nothing outside volmig-staging, and that removed).
    #[test]
    fn a_failed_import_of_a_mutated_bundle_changes_nothing(
        m in mutation(),
        seal in any::<bool>(),
    ) {
        import_in_process(mutate(&m, seal));
    }
}

// ---------------------------------------------------------------------
// Data-root mutations.

#[derive(Debug, Clone)]
enum Replacement {
    Bytes(Vec<u8>),
    Flip(Index, u8),
    Truncate(Index),
    Empty,
    Fifo,
    DevZero,
    Directory,
    SymlinkToDevZero,
    DeepJson(usize),
}

#[derive(Debug, Clone)]
enum RootMutation {
    /// One of the files dockerd reads: a config.v2.json, hostconfig.json,
    /// opts.json or metadata.db.
    Replace(Index, Replacement),
    /// A container directory with any name (non-UTF-8 included).
    Container(Vec<u8>, Vec<u8>),
    /// A volume directory with any name, maybe an opts.json.
    Volume(Vec<u8>, Option<Vec<u8>>),
}

fn replacement() -> impl Strategy<Value = Replacement> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Replacement::Bytes),
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Replacement::Flip(i, x)),
        any::<Index>().prop_map(Replacement::Truncate),
        Just(Replacement::Empty),
        Just(Replacement::Fifo),
        Just(Replacement::DevZero),
        Just(Replacement::Directory),
        Just(Replacement::SymlinkToDevZero),
        (1..20_000usize).prop_map(Replacement::DeepJson),
    ]
}

/// A directory name: any bytes but `/` and NUL, not `.` or `..`.
fn dir_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(1..=255u8, 1..30),
        Just("aααααααx".as_bytes().to_vec()),
        Just(b"\xff\xfe\x80".to_vec()),
    ]
    .prop_map(|mut n| {
        n.retain(|&b| b != b'/');
        if n.is_empty() || n == b"." || n == b".." {
            n = b"x".to_vec();
        }
        n
    })
}

fn root_mutation() -> impl Strategy<Value = RootMutation> {
    prop_oneof![
        4 => (any::<Index>(), replacement()).prop_map(|(i, r)| RootMutation::Replace(i, r)),
        1 => (dir_name(), prop::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(n, c)| RootMutation::Container(n, c)),
        1 => (dir_name(), prop::option::of(prop::collection::vec(any::<u8>(), 0..100)))
            .prop_map(|(n, o)| RootMutation::Volume(n, o)),
    ]
}

/// The files of a data-root that dockerd (and volmig) read.
fn read_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("volumes/metadata.db")];
    for dir in ["containers", "volumes"] {
        let mut entries: Vec<_> = fs::read_dir(root.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            for f in ["config.v2.json", "hostconfig.json", "opts.json"] {
                if e.join(f).exists() {
                    files.push(e.join(f));
                }
            }
        }
    }
    files
}

fn replace(path: &Path, with: &Replacement) {
    let old = fs::read(path).unwrap_or_default();
    let _ = fs::remove_file(path);
    let _ = fs::remove_dir_all(path);
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
    match with {
        Replacement::Bytes(b) => fs::write(path, b).unwrap(),
        Replacement::Flip(i, x) => {
            let mut b = old;
            if !b.is_empty() {
                let at = i.index(b.len());
                b[at] ^= x;
            }
            fs::write(path, b).unwrap();
        }
        Replacement::Truncate(i) => fs::write(path, &old[..i.index(old.len() + 1)]).unwrap(),
        Replacement::Empty => fs::write(path, b"").unwrap(),
        Replacement::Fifo => nix::unistd::mkfifo(path, mode).unwrap(),
        Replacement::DevZero => nix::sys::stat::mknod(
            path,
            nix::sys::stat::SFlag::S_IFCHR,
            mode,
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap(),
        Replacement::Directory => fs::create_dir(path).unwrap(),
        Replacement::SymlinkToDevZero => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        Replacement::DeepJson(n) => {
            fs::write(path, [vec![b'['; *n], vec![b']'; *n]].concat()).unwrap()
        }
    }
}

/// A copy of fixture `source` with `m` applied.
fn mutated_root(m: &RootMutation) -> tempfile::TempDir {
    use std::os::unix::ffi::OsStrExt;
    let dir = crate::common::fixture("source");
    let root = dir.path();
    match m {
        RootMutation::Replace(i, with) => {
            let files = read_files(root);
            replace(&files[i.index(files.len())], with);
        }
        RootMutation::Container(name, config) => {
            let c = root
                .join("containers")
                .join(std::ffi::OsStr::from_bytes(name));
            let _ = fs::create_dir_all(&c);
            let _ = fs::write(c.join("config.v2.json"), config);
        }
        RootMutation::Volume(name, opts) => {
            let v = root.join("volumes").join(std::ffi::OsStr::from_bytes(name));
            let _ = fs::create_dir_all(v.join("_data"));
            if let Some(o) = opts {
                let _ = fs::write(v.join("opts.json"), o);
            }
        }
    }
    dir
}

/// scan and verify of every container, in-process.
fn scan_and_verify(path: &Path) {
    let Ok(root) = DataRoot::open(path, None) else {
        return;
    };
    let mounts = MountTable::read_self().unwrap();
    let scan = volmig::scan::scan(&root, &mounts, DaemonVersion::CURRENT);
    let Ok(slots) = containers::load_all(&root) else {
        return;
    };
    let world = World {
        root: &root,
        scan: &scan,
        mounts: &mounts,
        containers: &slots,
    };
    for slot in &slots {
        let _ = verify_container(&world, slot, &VerifyOptions::default());
        let _ = containers::find(&slots, &slot.id);
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// scan and verify never panic (or hang) on a mutated data-root.
    #[test]
    fn a_mutated_data_root_never_panics_scan_or_verify(m in root_mutation()) {
        let dir = mutated_root(&m);
        let outcome = quiet(|| scan_and_verify(dir.path()));
        prop_assert!(outcome.is_ok(), "scan/verify panicked on {m:?}");
    }
}

// ---------------------------------------------------------------------
// The binary, on a smaller sample: exit codes and peak RSS.

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn the_binary_exits_0_1_or_2_in_bounded_memory_on_a_mutated_bundle(
        m in mutation(),
        seal in any::<bool>(),
    ) {
        let work = tempfile::tempdir().unwrap();
        let bundle = work.path().join("m.volmig");
        fs::write(&bundle, mutate(&m, seal)).unwrap();
        let target = empty_target();
        let before = snapshot(&target.path());
        let mut cmd = crate::measured::volmig(&target.path());
        cmd.arg("import").arg(&bundle);
        let import = crate::measured::run(cmd, Duration::from_secs(30));
        import.assert_sane("import");
        // Exit 2 promises nothing changed. (Exit 1 is a committed import
        // whose carried containers would not start: a mutated header can
        // say so and still be sealed.)
        if import.code == Some(2) {
            assert_unchanged(&target.path(), &before);
        }
        let mut cmd = crate::measured::volmig(&target.path());
        cmd.args(["inspect", "--check"]).arg(&bundle);
        crate::measured::run(cmd, Duration::from_secs(30)).assert_sane("inspect --check");
    }

    #[test]
    fn the_binary_exits_0_1_or_2_in_bounded_memory_on_a_mutated_data_root(
        m in root_mutation(),
    ) {
        let dir = mutated_root(&m);
        for args in [&["scan"][..], &["verify", "--all"]] {
            let mut cmd = crate::measured::volmig(dir.path());
            cmd.args(args);
            crate::measured::run(cmd, Duration::from_secs(30)).assert_sane(&args.join(" "));
        }
    }
}
