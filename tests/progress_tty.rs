//! Issue 10: export and import show progress (the current volume, bytes,
//! rate, ETA) when stderr is a terminal, and nothing of it when stderr is
//! piped or with `-q`; it never goes to stdout, which may carry the bundle.
//!
//! The binary runs with stderr on a pseudo-terminal of a fixed size (so no
//! line wraps, whatever terminal runs the tests) and stdout on a pipe, as
//! a user's `volmig export ... -o - | ...` has it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::common::pty::Pty;
use crate::common::{volume_mount, FakeDataRoot};

const VOLMIG: &str = env!("CARGO_BIN_EXE_volmig");
const APP_ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// Large enough that the bar (at most ~20 draws a second) is drawn while
/// the volume is read, even on a fast machine; not sparse (holes are not
/// read, so they would not hold the bar on screen).
const BIG: usize = 48 << 20;

/// `volmig --data-root ROOT ARGS`, with no daemon or data-root from the
/// environment, and a terminal type that draws.
fn volmig(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(VOLMIG);
    cmd.env_remove("VOLMIG_DATA_ROOT")
        .env("VOLMIG_DOCKERD", "")
        .env("TERM", "xterm")
        .arg("--data-root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

struct TtyRun {
    status: ExitStatus,
    /// What the terminal showed (stderr).
    screen: String,
    stdout: Vec<u8>,
}

/// Runs `cmd` with stderr on a pseudo-terminal and stdout piped.
fn on_tty(mut cmd: Command) -> TtyRun {
    let pty = Pty::open();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(pty.stderr())
        .spawn()
        .unwrap();
    // The Command holds a copy of the slave end until dropped.
    drop(cmd);
    let out = child.wait_with_output().unwrap();
    TtyRun {
        status: out.status,
        screen: pty.screen(),
        stdout: out.stdout,
    }
}

/// A source data-root: container `app` mounting volume `bigdata`, which
/// holds BIG bytes of data in one file and a few small ones.
fn source() -> (FakeDataRoot, Vec<u8>) {
    let mut src = FakeDataRoot::new();
    let root = src.path();
    src.volume("bigdata", &[])
        .container(APP_ID, "app", &[volume_mount("bigdata", "/data", &root)])
        .write_db();
    let data = root.join("volumes/bigdata/_data");
    let big: Vec<u8> = (0..BIG as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(data.join("blob"), &big).unwrap();
    for i in 0..5 {
        fs::write(data.join(format!("note{i}")), format!("{i}\n")).unwrap();
    }
    (src, big)
}

fn carried(root: &Path) -> Vec<u8> {
    fs::read(root.join("volumes/bigdata/_data/blob")).unwrap()
}

/// The screen shows a drawn bar naming the volume, with bytes, a rate and
/// (the total being known) an ETA, erased at the end; `then` is what the
/// terminal shows after it (the command's report on stderr), nothing of
/// the bar after that.
fn assert_bar_then(screen: &str, then: &str) {
    assert!(
        screen.contains("volume bigdata"),
        "the current volume is not named: {screen:?}"
    );
    assert!(screen.contains("MiB"), "no bytes shown: {screen:?}");
    assert!(screen.contains("MiB/s"), "no rate shown: {screen:?}");
    assert!(screen.contains("ETA "), "no ETA shown: {screen:?}");
    let last_frame = screen.rfind("ETA ").unwrap();
    let erased = screen[last_frame..]
        .find("\x1b[2K")
        .map(|at| last_frame + at + "\x1b[2K".len())
        .unwrap_or_else(|| panic!("the bar is left on screen: {screen:?}"));
    let after = &screen[erased..];
    assert!(
        after.starts_with(then),
        "after the bar, not `{then}`: {after:?}"
    );
    assert!(
        !after.contains('\x1b') && !after.contains("ETA"),
        "progress after the report: {after:?}"
    );
}

/// No trace of a bar: no escape sequence, no rate, no ETA.
fn assert_no_progress(what: &str, text: &str) {
    for sign in ["\x1b[", "iB/s", " B/s", "ETA "] {
        assert!(
            !text.contains(sign),
            "{what} shows progress ({sign:?}): {text:?}"
        );
    }
}

fn export_to(src: &FakeDataRoot, bundle: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["export", "app", "-o", bundle.to_str().unwrap()];
    args.extend_from_slice(extra);
    volmig(&src.path(), &args)
}

#[test]
fn export_and_import_show_the_volume_bytes_rate_and_eta_on_a_terminal() {
    let (src, big) = source();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("app.vmb");

    let export = on_tty(export_to(&src, &bundle, &[]));
    assert!(export.status.success(), "export: {}", export.screen);
    assert_bar_then(&export.screen, "exported 1 container");
    assert_no_progress("export's stdout", &String::from_utf8_lossy(&export.stdout));

    let dst = FakeDataRoot::new();
    let bundle_arg = bundle.to_str().unwrap();
    let import = on_tty(volmig(&dst.path(), &["import", bundle_arg]));
    assert!(import.status.success(), "import: {}", import.screen);
    // The report of an import is on stdout; nothing follows the bar.
    assert_bar_then(&import.screen, "");
    let report = String::from_utf8_lossy(&import.stdout);
    assert!(report.contains("imported into"), "{report}");
    assert_no_progress("import's stdout", &report);
    assert!(carried(&dst.path()) == big, "the volume's data differs");
}

/// `export -o - | import -` on a terminal: both draw on stderr, and the
/// bundle on the pipe between them is intact.
#[test]
fn progress_on_a_terminal_leaves_a_piped_bundle_intact() {
    let (src, big) = source();
    let dst = FakeDataRoot::new();
    let pty = Pty::open();
    let mut export_cmd = volmig(&src.path(), &["export", "app", "-o", "-"]);
    let mut export = export_cmd
        .stdout(Stdio::piped())
        .stderr(pty.stderr())
        .spawn()
        .unwrap();
    drop(export_cmd);
    let mut import_cmd = volmig(&dst.path(), &["import", "-"]);
    let import = import_cmd
        .stdin(Stdio::from(export.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(pty.stderr())
        .spawn()
        .unwrap();
    drop(import_cmd);
    let imported = import.wait_with_output().unwrap();
    let exported = export.wait().unwrap();
    let screen = pty.screen();
    assert!(exported.success(), "export: {screen}");
    assert!(imported.status.success(), "import: {screen}");
    assert!(carried(&dst.path()) == big, "the volume's data differs");
    assert!(
        screen.contains("volume bigdata") && screen.contains("ETA "),
        "export's bar is not drawn: {screen:?}"
    );
    // The import reads stdin, of unknown size: bytes and rate, no ETA.
    assert!(
        screen.contains("importing"),
        "import's progress is not drawn: {screen:?}"
    );
    assert_no_progress(
        "import's stdout",
        &String::from_utf8_lossy(&imported.stdout),
    );
}

#[test]
fn no_progress_when_stderr_is_piped() {
    let (src, _) = source();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("app.vmb");
    let out = export_to(&src, &bundle, &[]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("exported 1 container"), "{text}");
    assert_no_progress("piped export", &text);

    let dst = FakeDataRoot::new();
    let out = volmig(&dst.path(), &["import", bundle.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported into"));
    assert_no_progress("piped import", &String::from_utf8_lossy(&out.stderr));
}

#[test]
fn no_progress_with_quiet_on_a_terminal() {
    let (src, big) = source();
    let dir = tempfile::tempdir().unwrap();
    let bundle: PathBuf = dir.path().join("app.vmb");
    let mut cmd = export_to(&src, &bundle, &[]);
    cmd.arg("-q");
    let export = on_tty(cmd);
    assert!(export.status.success(), "export -q: {}", export.screen);
    assert_no_progress("export -q", &export.screen);

    let dst = FakeDataRoot::new();
    let import = on_tty(volmig(
        &dst.path(),
        &["-q", "import", bundle.to_str().unwrap()],
    ));
    assert!(import.status.success(), "import -q: {}", import.screen);
    assert_no_progress("import -q", &import.screen);
    assert!(carried(&dst.path()) == big, "the volume's data differs");
}
