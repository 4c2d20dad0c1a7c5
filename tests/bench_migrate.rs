//! The downtime figure of issue 9 at the bench's size: `volmig migrate` of
//! a running busybox container, writing to its volume all the time,
//! between two private dockerds 20.10 through a private sshd, the final
//! round paused; the volume is the one of `scripts/bench incremental`
//! (8 files of 256 MiB and 100,000 files of 1 KiB in 1,000 directories).
//!
//! Ignored: it moves gigabytes and is a bench, run by `scripts/bench
//! incremental` (`cargo test --release --test bench_migrate -- --ignored
//! --exact bench_migrate_downtime --nocapture`), which reads the
//! `bench_migrate: ` lines it prints: each round's bytes and seconds,
//! `downtime_seconds` from migrate's JSON, and wall times. No figure is
//! asserted (the machine is shared); that the migration worked is: the
//! target runs a container on the volume, holding every file as the
//! source had it at the pause.
//!
//! Environment: `VOLMIG_BENCH_LARGE_FILES` (8), `VOLMIG_BENCH_LARGE_MIB`
//! (256), `VOLMIG_BENCH_SMALL_DIRS` (1000), `VOLMIG_BENCH_SMALL_PER_DIR`
//! (100) give the shape; `VOLMIG_BENCH_MIGRATE_FROM=DIR` copies the data
//! from DIR (the bench's incremental source, of that shape: `file0` ...,
//! `d000/f00` ...) instead of writing it, and checks afterwards that
//! nothing in DIR changed. Without root, dockerd or sshd it fails with
//! the reason, as the e2e tests do.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::e2e::sshd::{require_sshd, LocalSshd};
use crate::e2e::PrivateDaemon;

/// The page the container rewrites in place, as a database would.
const PAGE: u64 = 4096;
const MARKER: &str = "moved by volmig (bench)\n";

/// The bench's data set (scripts/bench: LARGE_FILES, LARGE_MIB,
/// SMALL_DIRS, SMALL_PER_DIR).
struct Shape {
    large_files: u64,
    large_mib: u64,
    small_dirs: u64,
    small_per_dir: u64,
}

impl Shape {
    fn from_env() -> Shape {
        let read = |var: &str, default: u64| match std::env::var(var) {
            Ok(v) => v
                .parse()
                .unwrap_or_else(|e| panic!("{var}=`{v}` is not a number: {e}")),
            Err(_) => default,
        };
        let shape = Shape {
            large_files: read("VOLMIG_BENCH_LARGE_FILES", 8),
            large_mib: read("VOLMIG_BENCH_LARGE_MIB", 256),
            small_dirs: read("VOLMIG_BENCH_SMALL_DIRS", 1000),
            small_per_dir: read("VOLMIG_BENCH_SMALL_PER_DIR", 100),
        };
        assert!(
            shape.large_files >= 1 && shape.large_mib >= 1,
            "VOLMIG_BENCH_LARGE_FILES and VOLMIG_BENCH_LARGE_MIB must be at least 1 (the container writes into file0)"
        );
        assert!(
            shape.small_per_dir <= 100,
            "VOLMIG_BENCH_SMALL_PER_DIR is at most 100 (names f00 ... f99, as the bench's split -a 2)"
        );
        shape
    }

    fn large_bytes(&self) -> u64 {
        self.large_mib << 20
    }

    /// Every file of the data set by relative path, with its size.
    fn files(&self) -> BTreeMap<PathBuf, u64> {
        let mut out = BTreeMap::new();
        for i in 0..self.large_files {
            out.insert(PathBuf::from(format!("file{i}")), self.large_bytes());
        }
        for d in 0..self.small_dirs {
            for f in 0..self.small_per_dir {
                out.insert(PathBuf::from(format!("d{d:03}/f{f:02}")), 1024);
            }
        }
        out
    }
}

/// What a file or directory looks like, down to its inode and ctime: any
/// write to it, or a move of it, shows.
type Listing = BTreeMap<PathBuf, (bool, u64, u32, u64, i64, i64, i64, i64)>;

/// Every path below `root`, relative; panics on anything but a regular
/// file or a directory (the data set has nothing else).
fn list(root: &Path) -> Listing {
    let mut out = Listing::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let path = rel.join(entry.file_name());
            let m = fs::symlink_metadata(root.join(&path)).unwrap();
            let dir = m.is_dir();
            assert!(
                dir || m.is_file(),
                "{}: neither a file nor a directory",
                root.join(&path).display()
            );
            if dir {
                todo.push(path.clone());
            }
            let stat = (
                dir,
                if dir { 0 } else { m.len() },
                m.mode(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            );
            out.insert(path, stat);
        }
    }
    out
}

/// The regular files of a listing, with their sizes.
fn files_of(listing: &Listing) -> BTreeMap<PathBuf, u64> {
    listing
        .iter()
        .filter(|(_, s)| !s.0)
        .map(|(p, s)| (p.clone(), s.1))
        .collect()
}

/// Copies the data set from `from` (checked to be of `shape`) into `data`:
/// copies, never links or moves, so the container's writes stay ours.
fn copy_data(from: &Path, data: &Path, shape: &Shape) -> Listing {
    let before = list(from);
    let found = files_of(&before);
    let want = shape.files();
    if found != want {
        let missing = want.keys().find(|p| found.get(*p) != want.get(*p));
        let extra = found.keys().find(|p| !want.contains_key(*p));
        panic!(
            "VOLMIG_BENCH_MIGRATE_FROM={}: not the bench's data set of {} x {} MiB and {} x {} files of 1 KiB \
             (first missing or of another size: {missing:?}; first extra: {extra:?}); \
             set VOLMIG_BENCH_LARGE_MIB/VOLMIG_BENCH_SMALL_DIRS to its shape, or unset VOLMIG_BENCH_MIGRATE_FROM",
            from.display(),
            shape.large_files,
            shape.large_mib,
            shape.small_dirs,
            shape.small_per_dir
        );
    }
    // Directories first (a BTreeMap lists a parent before its children).
    for (rel, (dir, ..)) in &before {
        if *dir {
            fs::create_dir(data.join(rel)).unwrap();
        } else {
            fs::copy(from.join(rel), data.join(rel)).unwrap();
        }
    }
    before
}

/// Writes the data set into `data`: incompressible bytes (xorshift), the
/// names of the bench's generator.
fn write_data(data: &Path, shape: &Shape) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut fill = |buf: &mut [u8]| {
        for word in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    for (rel, size) in shape.files() {
        let path = data.join(&rel);
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(data.join(parent)).unwrap();
        }
        let mut f = File::create(&path).unwrap();
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..n]);
            f.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
    }
}

/// True when the two files hold the same bytes.
fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        if n != m || ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]).unwrap() {
            0 => break,
            n => got += n,
        }
    }
    got
}

/// The page numbers where two files of one size differ.
fn differing_pages(a: &Path, b: &Path) -> BTreeSet<u64> {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut out = BTreeSet::new();
    let mut at = 0u64;
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        assert_eq!(n, m, "{} and {} differ in size", a.display(), b.display());
        if n == 0 {
            return out;
        }
        for (k, (pa, pb)) in ba[..n]
            .chunks(PAGE as usize)
            .zip(bb[..n].chunks(PAGE as usize))
            .enumerate()
        {
            if pa != pb {
                out.insert(at / PAGE + k as u64);
            }
        }
        at += n as u64;
    }
}

/// The container's loop: a counter appended to `log`, and the counter
/// written in place at the start of page `i` of `file0` (wrapping). It
/// exits on SIGTERM, as a real service does (a shell as PID 1 ignores
/// it otherwise: migrate's stop of the source would wait out docker's
/// 10 s timeout, outside the downtime but in the wall time).
fn writer_script(shape: &Shape) -> String {
    format!(
        "trap 'exit 0' TERM; i=0; while true; do echo $i >> /data/log; \
         echo $i | dd of=/data/file0 bs=1 seek=$((i * {PAGE} % {})) conv=notrunc 2>/dev/null; \
         i=$((i+1)); sleep 0.05; done",
        shape.large_bytes()
    )
}

/// The page of `file0` write `i` goes to.
fn page_of(i: u64, shape: &Shape) -> u64 {
    i * PAGE % shape.large_bytes() / PAGE
}

/// `volmig --json migrate app` from `src` to `dst` through `sshd`, the
/// final round paused: its JSON document and its wall time.
fn migrate(src: &PrivateDaemon, dst: &PrivateDaemon, sshd: &LocalSshd) -> (serde_json::Value, f64) {
    let t0 = Instant::now();
    let out = crate::e2e::migrate_command(src, dst, &sshd.ssh_command())
        .output()
        .unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    assert_eq!(out.status.code(), Some(0), "migrate failed:\n{stderr}");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "migrate --json printed no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (doc, wall)
}

/// The figures, one `bench_migrate: key=value ...` line each (what
/// scripts/bench parses), and the checks on the rounds themselves.
fn print_rounds(doc: &serde_json::Value, wall: f64) {
    let rounds = doc["rounds"].as_array().unwrap();
    for r in rounds {
        println!(
            "bench_migrate: round={} kind={} bytes={} seconds={:.3}",
            r["round"],
            r["kind"].as_str().unwrap(),
            r["bytes"].as_u64().unwrap(),
            r["seconds"].as_f64().unwrap()
        );
    }
    let downtime = doc["downtime_seconds"].as_f64().unwrap();
    println!("bench_migrate: downtime_seconds={downtime:.3}");
    println!("bench_migrate: migrate_wall_seconds={wall:.3}");
    println!(
        "bench_migrate: stop_rule={}",
        doc["stop_rule"].as_str().unwrap()
    );
    assert_eq!(doc["ok"], true, "{doc}");
    assert!(rounds.len() >= 2, "{doc}");
    assert_eq!(rounds[0]["kind"], "full");
    assert_eq!(rounds.last().unwrap()["kind"], "final");
    let first = rounds[0]["bytes"].as_u64().unwrap();
    let last = rounds.last().unwrap()["bytes"].as_u64().unwrap();
    // Not a timing: the last round was a small delta, not a full copy
    // with the container paused.
    assert!(
        last * 10 < first,
        "the final round carried {last} bytes of {first}"
    );
}

/// The target's volume is the source's at the pause: the same files;
/// each with the source's bytes (the source is stopped now), but for
/// `log`, a prefix of the source's, and `file0`, whose pages differ only
/// where the container wrote after the pause, and which holds the writes
/// before it.
fn check_target_data(src: &Path, dst: &Path, shape: &Shape) {
    let (ours, theirs) = (files_of(&list(src)), files_of(&list(dst)));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the target's volume has other files than the source's"
    );
    for rel in ours.keys() {
        if rel == Path::new("log") || rel == Path::new("file0") {
            continue;
        }
        assert!(
            same_content(&src.join(rel), &dst.join(rel)),
            "{} differs on the target",
            rel.display()
        );
    }
    let our_log = fs::read_to_string(src.join("log")).unwrap();
    let their_log = fs::read_to_string(dst.join("log")).unwrap();
    assert!(
        !their_log.is_empty() && our_log.starts_with(&their_log),
        "the target's log is not a prefix of the source's"
    );
    for (i, line) in their_log.lines().enumerate() {
        assert_eq!(line, i.to_string(), "line {i} of the target's log");
    }
    // Write i went in after line i of the log: the target has lines
    // 0..n, so writes 0..n-1 came before the pause, and n-1..m (m: the
    // source's count) may have come after.
    let n = their_log.lines().count() as u64;
    let m = our_log.lines().count() as u64;
    let late: BTreeSet<u64> = (n - 1..m).map(|i| page_of(i, shape)).collect();
    let differ = differing_pages(&src.join("file0"), &dst.join("file0"));
    let unexplained: Vec<_> = differ.difference(&late).collect();
    assert!(
        unexplained.is_empty(),
        "file0 differs on the target at pages no write after the pause went to: {unexplained:?}"
    );
    let f0 = File::open(dst.join("file0")).unwrap();
    for i in n.saturating_sub(100)..n - 1 {
        if late.contains(&page_of(i, shape)) {
            continue; // written again since
        }
        let mut page = vec![0u8; PAGE as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f0, &mut page, page_of(i, shape) * PAGE)
            .unwrap();
        let want = format!("{i}\n");
        assert!(
            page.starts_with(want.as_bytes()),
            "write {i} (before the pause) is missing from the target's file0"
        );
    }
    println!(
        "bench_migrate: checked target_log_lines={n} source_log_lines={m} file0_pages_differing={}",
        differ.len()
    );
}

#[test]
#[ignore = "a bench: moves the scripts/bench volume (2 GiB) between two private dockerds; run by scripts/bench incremental"]
fn bench_migrate_downtime() {
    require_sshd();
    let _e2e = crate::e2e::serial();
    let t0 = Instant::now();
    let shape = Shape::from_env();
    let from = std::env::var_os("VOLMIG_BENCH_MIGRATE_FROM").map(PathBuf::from);
    let src = PrivateDaemon::start("bmsrc");
    let dst = PrivateDaemon::start("bmdst");
    let sshd = LocalSshd::start("bmssh");
    src.load_busybox_image("benchmig", None);
    dst.load_busybox_image("benchmig", None);
    src.dk(&["volume", "create", "--label", "bench=migrate", "inc"]);
    let data = src.root.join("volumes/inc/_data");
    let copied_from = from.as_deref().map(|f| copy_data(f, &data, &shape));
    if copied_from.is_none() {
        write_data(&data, &shape);
    }
    fs::write(data.join("marker"), MARKER).unwrap();
    // No writeback of the fresh copy during the rounds.
    unsafe { libc::sync() };
    let bytes: u64 = shape.files().values().sum();
    println!(
        "bench_migrate: data bytes={bytes} files={} source={} setup_seconds={:.1}",
        shape.files().len(),
        from.as_deref().map_or("generated".to_string(), |f| format!(
            "copied from {}",
            f.display()
        )),
        t0.elapsed().as_secs_f64()
    );
    src.dk(&[
        "run",
        "-d",
        "--name",
        "app",
        "-v",
        "inc:/data",
        "benchmig",
        "sh",
        "-c",
        &writer_script(&shape),
    ]);
    let t_run = Instant::now();
    while !fs::read_to_string(data.join("log")).is_ok_and(|l| l.lines().count() >= 2) {
        assert!(
            t_run.elapsed() < Duration::from_secs(30),
            "the container wrote nothing to its volume in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (doc, wall) = migrate(&src, &dst, &sshd);
    print_rounds(&doc, wall);

    // The source container is stopped; the target has the volume with
    // its label and data, and a container there runs on it.
    crate::e2e::assert_migrated(
        &src,
        &dst,
        "inc",
        "\"bench\":\"migrate\"",
        "benchmig",
        MARKER,
    );
    check_target_data(&data, &dst.root.join("volumes/inc/_data"), &shape);
    if let (Some(from), Some(before)) = (&from, &copied_from) {
        let after = list(from);
        assert!(
            before == &after,
            "{} changed during the bench (it is only copied from)",
            from.display()
        );
    }
    println!(
        "bench_migrate: wall_seconds={:.1}",
        t0.elapsed().as_secs_f64()
    );
}
