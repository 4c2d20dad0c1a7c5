//! Issue 7 item 9 and friends: inputs built to hang volmig or exhaust its
//! memory. Each test runs the real binary and asserts it ends in time,
//! with one of its exit codes, under 64 MiB of peak RSS (the child's own,
//! from `wait4`), and with a message that names the culprit.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::{volume_mount, FakeDataRoot};
use crate::measured::{run, volmig, Measured};
use serde_json::Value;

const ID: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";

/// `/dev/zero` itself (1:5), made in place: we run as root.
fn mknod_zero(path: &Path) {
    let _ = fs::remove_file(path);
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
}

fn mkfifo(path: &Path) {
    let _ = fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A data-root with one container mounting volume `data1`.
fn one_volume() -> FakeDataRoot {
    let mut root = FakeDataRoot::new();
    let path = root.path();
    root.volume("data1", &[("a", "b")])
        .container(ID, "web", &[volume_mount("data1", "/data", &path)])
        .write_db();
    root
}

fn json_of(m: &Measured) -> Value {
    serde_json::from_str(&m.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", m.stdout, m.stderr))
}

fn kinds(findings: &Value) -> Vec<String> {
    findings
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

fn scan(root: &FakeDataRoot) -> Measured {
    let mut cmd = volmig(&root.path());
    cmd.args(["--json", "scan"]);
    let m = run(cmd, Duration::from_secs(20));
    m.assert_sane("scan");
    m
}

fn verify_all(root: &FakeDataRoot) -> Measured {
    let mut cmd = volmig(&root.path());
    cmd.args(["--json", "verify", "--all"]);
    let m = run(cmd, Duration::from_secs(20));
    m.assert_sane("verify --all");
    m
}

#[test]
fn a_fifo_or_dev_zero_as_opts_json_is_fatal_not_a_hang() {
    let root = one_volume();
    let opts = root.path().join("volumes/data1/opts.json");
    for make in [mkfifo as fn(&Path), mknod_zero] {
        make(&opts);
        for m in [scan(&root), verify_all(&root)] {
            assert_eq!(m.code, Some(1), "{}", m.stdout);
            assert!(m.stdout.contains("opts-blocking"), "{}", m.stdout);
            assert!(m.stdout.contains("opts.json"), "{}", m.stdout);
        }
    }
}

#[test]
fn a_fifo_or_dev_zero_as_metadata_db_is_fatal_not_a_hang() {
    let root = one_volume();
    let db = root.path().join("volumes/metadata.db");
    for make in [mkfifo as fn(&Path), mknod_zero] {
        make(&db);
        let m = scan(&root);
        assert_eq!(m.code, Some(1), "{}", m.stdout);
        let doc = json_of(&m);
        assert!(
            kinds(&doc["findings"]).contains(&"metadata-db-unopenable".to_string()),
            "{doc}"
        );
        verify_all(&root);
    }
}

#[test]
fn a_fifo_or_dev_zero_as_config_v2_json_fails_that_container_only() {
    let mut root = one_volume();
    let path = root.path();
    let other = "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0";
    root.container(other, "db", &[volume_mount("data1", "/d", &path)]);
    for file in ["config.v2.json", "hostconfig.json"] {
        for make in [mkfifo as fn(&Path), mknod_zero] {
            let target = path.join("containers").join(ID).join(file);
            make(&target);
            let m = verify_all(&root);
            assert_eq!(m.code, Some(1), "{}", m.stdout);
            assert!(m.stdout.contains("not a regular file"), "{}", m.stdout);
            let doc = json_of(&m);
            let db = doc["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "db")
                .unwrap_or_else(|| panic!("db not verified: {doc}"));
            assert_eq!(db["ok"], true, "{doc}");
            fs::remove_file(&target).unwrap();
            root.container(ID, "web", &[volume_mount("data1", "/data", &path)]);
        }
    }
}

#[test]
fn a_sparse_1_tib_metadata_db_is_refused_before_it_is_mapped() {
    let root = one_volume();
    let db = root.path().join("volumes/metadata.db");
    fs::remove_file(&db).unwrap();
    fs::File::create(&db).unwrap().set_len(1 << 40).unwrap();
    let m = scan(&root);
    assert!(m.stdout.contains("metadata-db-unchecked"), "{}", m.stdout);
}

#[test]
fn a_huge_opts_json_is_unreadable_not_read_whole() {
    let root = one_volume();
    let opts = root.path().join("volumes/data1/opts.json");
    fs::File::create(&opts).unwrap().set_len(1 << 40).unwrap();
    let m = scan(&root);
    assert!(m.stdout.contains("opts-unreadable"), "{}", m.stdout);
}

#[test]
fn a_0_byte_metadata_db_is_not_fatal() {
    // dockerd 20.10.24 starts on it: bbolt initializes the empty file.
    let root = one_volume();
    fs::write(root.path().join("volumes/metadata.db"), b"").unwrap();
    let m = scan(&root);
    assert_eq!(m.code, Some(0), "{}", m.stdout);
    let doc = json_of(&m);
    assert!(
        kinds(&doc["findings"]).contains(&"metadata-db-empty".to_string()),
        "{doc}"
    );
    let m = verify_all(&root);
    assert_eq!(m.code, Some(0), "{}", m.stdout);
}

#[test]
fn verify_all_does_not_panic_on_a_container_directory_named_a_alpha_x() {
    let root = FakeDataRoot::new();
    let dir = root.path().join("containers/aααααααx");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config.v2.json"), r#"{"ID":"aααααααx"}"#).unwrap();
    for quiet in [false, true] {
        let mut cmd = volmig(&root.path());
        cmd.args(["verify", "--all"]);
        if quiet {
            cmd.arg("-q");
        }
        let m = run(cmd, Duration::from_secs(20));
        m.assert_sane("verify --all");
    }
    let m = verify_all(&root);
    assert!(m.stdout.contains("aααααααx"), "{}", m.stdout);
}

// ---------------------------------------------------------------------
// Hostile bundles: each is refused (import: exit 2, target unchanged;
// inspect --check: exit 1) in bounded memory and time.

use crate::bundle_support::{
    empty_target, export_to, parse_entries, position, reseal, small_source, snapshot,
    write_entries, RawEntry, APP_ID,
};

/// A real bundle of `small_source()`, made by the binary.
fn valid_bundle(dir: &Path) -> Vec<u8> {
    let src = small_source();
    let out = dir.join("valid.volmig");
    export_to(&src, &["app", "db"], &[], &out);
    fs::read(out).unwrap()
}

/// The raw tar of the entries before `path` (no end-of-archive blocks).
fn tar_before(valid: &[u8], path: &[u8]) -> Vec<u8> {
    let entries = parse_entries(valid);
    let at = position(&entries, path);
    let mut tar = write_entries(&entries[..at]);
    tar.truncate(tar.len() - 1024);
    tar
}

fn raw_header(kind: tar::EntryType, name: &[u8], size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Writes `prefix` then `logical` bytes in all, the rest a hole (zeros
/// that cost no disk).
fn write_sparse(path: &Path, prefix: &[u8], logical: u64) {
    fs::write(path, prefix).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(logical)
        .unwrap();
}

/// Imports `bundle` into an empty target and inspects it with --check:
/// both refuse it naming `expected`, within the limits, changing nothing.
fn refused_everywhere(bundle: &Path, expected: &str) -> (Measured, Measured) {
    let target = empty_target();
    let before = snapshot(&target.path());
    let mut cmd = volmig(&target.path());
    cmd.arg("import").arg(bundle);
    let import = run(cmd, Duration::from_secs(30));
    import.assert_sane("import");
    assert_eq!(import.code, Some(2), "import: {}", import.stderr);
    assert!(
        import.stderr.contains(expected),
        "import: {}",
        import.stderr
    );
    crate::bundle_support::assert_unchanged(&target.path(), &before);

    let mut cmd = volmig(&target.path());
    cmd.args(["inspect", "--check"]).arg(bundle);
    let inspect = run(cmd, Duration::from_secs(30));
    inspect.assert_sane("inspect --check");
    assert!(
        matches!(inspect.code, Some(1 | 2)),
        "inspect: {:?}",
        inspect.code
    );
    let said = format!("{}{}", inspect.stdout, inspect.stderr);
    assert!(said.contains(expected), "inspect: {said}");
    (import, inspect)
}

#[test]
fn a_1_gib_pax_record_is_refused_in_bounded_memory() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let mut tar = tar_before(&valid, b"volumes/appdata");
    tar.extend_from_slice(&raw_header(tar::EntryType::XHeader, b"PaxHeader", 1 << 30));
    let bundle = work.path().join("pax.volmig");
    write_sparse(&bundle, &tar, tar.len() as u64 + (1 << 30) + 1024);
    refused_everywhere(&bundle, "a PAX extended header of 1073741824 bytes");
}

#[test]
fn a_1_gib_gnu_long_name_is_refused_in_bounded_memory() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    for kind in [tar::EntryType::GNULongName, tar::EntryType::GNULongLink] {
        let mut tar = tar_before(&valid, b"volumes/appdata");
        tar.extend_from_slice(&raw_header(kind, b"././@LongLink", 1 << 30));
        let bundle = work.path().join("long.volmig");
        write_sparse(&bundle, &tar, tar.len() as u64 + (1 << 30) + 1024);
        refused_everywhere(&bundle, "1073741824 bytes, more than the 1048576 bytes");
    }
}

/// A zstd frame by hand: `data` in raw blocks, then `zeros` zero bytes in
/// RLE blocks (4 bytes per 128 KiB), with the window `2^window_log`.
fn zstd_frame(data: &[u8], zeros: u64, window_log: u8) -> Vec<u8> {
    const BLOCK: usize = 128 << 10;
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, (window_log - 10) << 3];
    let mut blocks: Vec<(u8, usize, Option<&[u8]>)> = data
        .chunks(BLOCK)
        .map(|c| (0u8, c.len(), Some(c)))
        .collect();
    let mut left = zeros;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        blocks.push((1, n, None));
        left -= n as u64;
    }
    let last = blocks.len() - 1;
    for (i, (kind, size, bytes)) in blocks.into_iter().enumerate() {
        let word = ((size as u32) << 3) | ((kind as u32) << 1) | u32::from(i == last);
        out.extend_from_slice(&word.to_le_bytes()[..3]);
        match bytes {
            Some(b) => out.extend_from_slice(b),
            None => out.push(0),
        }
    }
    out
}

#[test]
fn a_99_kb_zstd_bomb_is_refused_in_bounded_memory() {
    // 1 GiB of PAX record inflating from a few dozen KiB: the same header
    // guard stops it after decompression; nothing is buffered on the way.
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let mut tar = tar_before(&valid, b"volumes/appdata");
    tar.extend_from_slice(&raw_header(tar::EntryType::XHeader, b"PaxHeader", 1 << 30));
    let bomb = zstd_frame(&tar, (1 << 30) + 1024, 20);
    assert!(bomb.len() < 100 << 10, "{} bytes", bomb.len());
    let bundle = work.path().join("bomb.volmig.zst");
    fs::write(&bundle, bomb).unwrap();
    refused_everywhere(&bundle, "a PAX extended header of 1073741824 bytes");
}

#[test]
fn a_zstd_frame_asking_for_a_128_mib_window_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let bundle = work.path().join("window.volmig.zst");
    fs::write(&bundle, zstd_frame(&valid, 0, 27)).unwrap();
    refused_everywhere(&bundle, "zstd frames need a window over 16 MiB");
    // The same frame with a small window is a good bundle.
    fs::write(&bundle, zstd_frame(&valid, 0, 20)).unwrap();
    let mut cmd = volmig(work.path());
    cmd.args(["inspect", "--check"]).arg(&bundle);
    let m = run(cmd, Duration::from_secs(30));
    assert_eq!(m.code, Some(0), "{}", m.stderr);
}

#[test]
fn a_1_gib_config_v2_json_in_a_bundle_is_refused_before_reading() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let path = format!("containers/{APP_ID}/config.v2.json");
    let mut tar = tar_before(&valid, path.as_bytes());
    let mut h = tar::Header::new_ustar();
    h.set_path(&path).unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(1 << 30);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    let bundle = work.path().join("config.volmig");
    write_sparse(&bundle, &tar, tar.len() as u64 + (1 << 30) + 1024);
    refused_everywhere(
        &bundle,
        "1073741824 bytes is too large for a config.v2.json",
    );
}

/// `volumes/appdata/_data/a.txt` ("alpha\n") turned into a GNU sparse 1.0
/// file whose data sits after a hole of `hole` bytes.
fn with_hole(valid: &[u8], hole: u64) -> Vec<u8> {
    let mut entries = parse_entries(valid);
    let at = position(&entries, b"volumes/appdata/_data/a.txt");
    let e: &mut RawEntry = &mut entries[at];
    let data = e.data.clone();
    let mut map = format!("1\n{hole}\n{}\n", data.len()).into_bytes();
    map.resize(512, 0);
    map.extend_from_slice(&data);
    e.data = map;
    let real = (hole + data.len() as u64).to_string().into_bytes();
    e.pax.extend([
        ("GNU.sparse.major".to_string(), b"1".to_vec()),
        ("GNU.sparse.minor".to_string(), b"0".to_vec()),
        ("GNU.sparse.name".to_string(), e.path.clone()),
        ("GNU.sparse.realsize".to_string(), real),
    ]);
    write_entries(&entries)
}

#[test]
fn a_1_tib_sparse_hole_is_refused_instead_of_hashed_for_minutes() {
    // Before: import and inspect --check hashed 1 TiB of zeros (12 min).
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let bundle = work.path().join("hole.volmig");
    fs::write(&bundle, with_hole(&valid, 1 << 40)).unwrap();
    let (import, _) = refused_everywhere(&bundle, "bytes of holes up to here, more than");
    // CPU time, not wall time: the bound is on work (hashing the hole took
    // minutes), and wall time also counts whatever shares the 2 cores.
    assert!(import.cpu < Duration::from_secs(10), "{:?}", import.cpu);
}

#[test]
fn a_2_gib_sparse_hole_is_hashed_in_bounded_memory() {
    // Under the limit: the zeros are hashed (from a static buffer) and the
    // digest of the altered file fails as it should.
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let bundle = work.path().join("hole.volmig");
    fs::write(&bundle, with_hole(&valid, 2 << 30)).unwrap();
    refused_everywhere(&bundle, "does not match its digest");
}

#[test]
fn inspect_check_verifies_the_headers_data_claims_against_the_entry() {
    // The header says pgdata's _data is root's 0755; the entry (and so the
    // import) says 999:999 0700. Resealed: every digest matches.
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let mut entries = parse_entries(&valid);
    let mut header: Value = serde_json::from_slice(&entries[0].data).unwrap();
    for v in header["volumes"].as_array_mut().unwrap() {
        if v["name"] == "pgdata" {
            v["data"]["uid"] = 0.into();
            v["data"]["gid"] = 0.into();
            v["data"]["mode"] = "0755".into();
        }
    }
    entries[0].data = serde_json::to_vec_pretty(&header).unwrap();
    reseal(&mut entries);
    let bundle = work.path().join("claims.volmig");
    fs::write(&bundle, write_entries(&entries)).unwrap();
    let (_, inspect) = refused_everywhere(
        &bundle,
        "owner 0:0 in the header, 999:999 in the entry; mode 0755 in the header, 0700 in the entry",
    );
    assert_eq!(inspect.code, Some(1), "a mismatch is a failed check");
    assert!(
        inspect.stdout.contains("volumes/pgdata/_data"),
        "{}",
        inspect.stdout
    );
}

/// A bundle of `n` empty volumes (a directory and its `_data` each), with
/// a compact header and a matching trailer.
fn many_volumes(n: usize) -> Vec<u8> {
    use volmig::bundle::{
        hex, BundleHeader, BundleVolume, DataAttrs, EntryKind, EntryMeta, RunningDigest, Trailer,
        VolumeSummary, FORMAT, HEADER_PATH, SUMS_PATH, TRAILER_PATH,
    };
    let names: Vec<String> = (0..n).map(|i| format!("v{i:06}")).collect();
    let header = BundleHeader {
        format: FORMAT.into(),
        tool: "hostile_limits".into(),
        source_host: "h".into(),
        source_data_root: "/var/lib/docker".into(),
        containers: vec![],
        volumes: names
            .iter()
            .map(|name| BundleVolume {
                name: name.clone(),
                anonymous: false,
                record: None,
                opts_json: false,
                data: DataAttrs {
                    uid: 0,
                    gid: 0,
                    mode: "0755".into(),
                    mtime: 0,
                    mtime_nsec: 0,
                    xattrs: Default::default(),
                },
                device: None,
            })
            .collect(),
        userns: None,
        round: None,
    };
    let header_json = serde_json::to_vec(&header).unwrap();
    let dir = |path: &str| EntryMeta {
        path: path.as_bytes().to_vec(),
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        size: 0,
        link: None,
        rdev_major: 0,
        rdev_minor: 0,
        xattrs: vec![],
        sparse: None,
        delta: None,
    };
    let mut entries = vec![RawEntry::file(HEADER_PATH.as_bytes(), &header_json)];
    let mut all = RunningDigest::default();
    let mut volumes = std::collections::BTreeMap::new();
    for name in &names {
        let mut digest = RunningDigest::default();
        for (path, rel) in [
            (format!("volumes/{name}"), ""),
            (format!("volumes/{name}/_data"), "_data"),
        ] {
            let meta = dir(&path);
            all.update(&meta.describe(&meta.path, None));
            digest.update(&meta.describe(rel.as_bytes(), None));
            entries.push(RawEntry::dir(path.as_bytes()));
        }
        volumes.insert(
            name.clone(),
            VolumeSummary {
                entries: 2,
                files: 0,
                bytes: 0,
                digest: digest.hex(),
            },
        );
    }
    let sha = |b: &[u8]| hex(&<sha2::Sha256 as sha2::Digest>::digest(b));
    let trailer = Trailer {
        format: FORMAT.into(),
        entries: 2 * n as u64,
        files: 0,
        bytes: 0,
        header_sha256: sha(&header_json),
        sums_sha256: sha(b""),
        entries_sha256: all.hex(),
        volumes,
        trees: None,
    };
    entries.push(RawEntry::file(SUMS_PATH.as_bytes(), b""));
    entries.push(RawEntry::file(
        TRAILER_PATH.as_bytes(),
        &serde_json::to_vec(&trailer).unwrap(),
    ));
    write_entries(&entries)
}

#[test]
fn inspect_check_is_linear_in_the_header_volume_count() {
    // Before: each entry was classified by a scan of the header's volumes:
    // 80,000 volumes took 57 s, 40,000 take 17 s (release builds); now
    // 40,000 take 3.6 s in a debug build (12 s of wall time on a loaded
    // machine: the bound is on CPU time).
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("many.volmig");
    fs::write(&bundle, many_volumes(40_000)).unwrap();
    let mut cmd = volmig(work.path());
    cmd.args(["inspect", "--check", "-q"]).arg(&bundle);
    let m = run(cmd, Duration::from_secs(60));
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert!(m.cpu < Duration::from_secs(30), "{:?} CPU", m.cpu);
}

#[test]
fn a_header_just_under_the_json_limit_is_read_in_bounded_memory() {
    // As many volumes as the largest header holds (before the 8 MiB limit:
    // a 16 MiB header of 100,000 volumes took 93 MB), and then the end of
    // the stream: what the header alone costs.
    let work = tempfile::tempdir().unwrap();
    let full = many_volumes(56_000);
    let header = parse_entries_prefix(&full, 1);
    let json = header.len() as u64 - 512 - 1024;
    assert!(
        json > volmig::bundle::limits::MAX_JSON - (1 << 20)
            && json < volmig::bundle::limits::MAX_JSON,
        "{json}"
    );
    let bundle = work.path().join("header.volmig");
    fs::write(&bundle, header).unwrap();
    let mut cmd = volmig(work.path());
    cmd.args(["inspect", "--check"]).arg(&bundle);
    let m = run(cmd, Duration::from_secs(60));
    m.assert_sane("inspect --check");
    assert!(m.stdout.contains("truncated"), "{}", m.stdout);
}

/// The first `n` entries of a raw tar, then the end-of-archive blocks.
fn parse_entries_prefix(bytes: &[u8], n: usize) -> Vec<u8> {
    let mut archive = tar::Archive::new(bytes);
    let end = archive
        .entries()
        .unwrap()
        .nth(n)
        .map(|e| e.unwrap().raw_header_position() as usize)
        .unwrap_or(bytes.len());
    let mut out = bytes[..end].to_vec();
    out.extend_from_slice(&[0u8; 1024]);
    out
}
