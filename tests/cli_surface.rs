//! What volmig offers around its commands (issue 10), without a daemon:
//! shell completions and the man page generated from the clap
//! definitions, `--version` naming the commit, the docker CLI plugin's
//! metadata and command line, and the errors for bad docker CLI files.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const VOLMIG: &str = env!("CARGO_BIN_EXE_volmig");
/// Every subcommand a user can type; completions and man page name them all.
const SUBCOMMANDS: &[&str] = &[
    "scan",
    "verify",
    "export",
    "import",
    "inspect",
    "recover",
    "migrate",
    "rewrite-sources",
    "install-plugin",
    "completions",
    "man",
];

/// volmig with no daemon or data-root from the environment and a docker
/// configuration of its own (empty unless the test writes one).
fn volmig(cfg: &Path) -> Command {
    let mut cmd = Command::new(VOLMIG);
    cmd.env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("VOLMIG_DATA_ROOT")
        .env("DOCKER_CONFIG", cfg);
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "{cmd:?} exited {}: {stderr}",
        out.status
    );
    stdout
}

fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn bash_completion_is_valid_bash_and_completes_every_subcommand() {
    let cfg = tempfile::tempdir().unwrap();
    let script = run_ok(volmig(cfg.path()).args(["completions", "bash"]));
    let file = cfg.path().join("volmig.bash");
    fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", text(&check).1);
    // Sourced and asked, it offers the subcommands after `volmig `.
    let ask = format!(
        "source {}; COMP_WORDS=(volmig ''); COMP_CWORD=1; _volmig volmig '' volmig; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let offered = run_ok(Command::new("bash").args(["-c", &ask]));
    for sub in SUBCOMMANDS {
        assert!(
            offered.lines().any(|l| l == *sub),
            "bash offers no `{sub}`:\n{offered}"
        );
    }
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    let cfg = tempfile::tempdir().unwrap();
    for shell in ["zsh", "fish"] {
        let script = run_ok(volmig(cfg.path()).args(["completions", shell]));
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completion lacks `{sub}`");
        }
        if has_tool(shell) {
            let file = cfg.path().join(format!("volmig.{shell}"));
            fs::write(&file, &script).unwrap();
            let check = Command::new(shell).arg("-n").arg(&file).output().unwrap();
            assert!(check.status.success(), "{shell} -n: {}", text(&check).1);
        }
    }
}

#[test]
fn the_man_page_renders_and_names_every_command() {
    let cfg = tempfile::tempdir().unwrap();
    let page = run_ok(volmig(cfg.path()).arg("man"));
    assert!(page.contains(".TH volmig 1"), "no .TH header:\n{page}");
    let file = cfg.path().join("volmig.1");
    fs::write(&file, &page).unwrap();
    // man-db's `man -l` through groff, as `man volmig` shows it.
    let out = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man is not installed (Debian package man-db)");
    let (shown, warnings) = text(&out);
    assert!(
        out.status.success(),
        "man -l exited {}: {warnings}",
        out.status
    );
    assert!(!warnings.contains("warning"), "groff warnings: {warnings}");
    assert!(
        shown.contains("NAME") && shown.contains("SUBCOMMANDS"),
        "{shown}"
    );
    for sub in SUBCOMMANDS {
        assert!(
            shown.contains(&format!("volmig-{sub}(1)")),
            "man page lacks `{sub}`:\n{shown}"
        );
    }
}

#[test]
fn man_dir_writes_a_page_per_command_that_man_renders() {
    let cfg = tempfile::tempdir().unwrap();
    let dir = cfg.path().join("man1");
    run_ok(volmig(cfg.path()).arg("man").arg("--dir").arg(&dir));
    let pages = SUBCOMMANDS.iter().map(|s| format!("volmig-{s}"));
    for page in std::iter::once("volmig".to_string()).chain(pages) {
        let file = dir.join(format!("{page}.1"));
        let out = Command::new("man")
            .arg("-l")
            .arg(&file)
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        let (shown, warnings) = text(&out);
        assert!(
            out.status.success() && !warnings.contains("warning"),
            "man -l {}: {warnings}",
            file.display()
        );
        assert!(shown.contains("SYNOPSIS"), "{page}: {shown}");
    }
}

#[test]
fn version_names_the_commit() {
    let cfg = tempfile::tempdir().unwrap();
    let out = run_ok(volmig(cfg.path()).arg("--version"));
    let version = env!("CARGO_PKG_VERSION");
    let line = out.trim();
    assert!(line.starts_with(&format!("volmig {version}")), "{line}");
    // Built from a git checkout (this test runs in one): the commit is the
    // one git describes, `-dirty` or not.
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=7",
            "HEAD",
        ])
        .output()
        .unwrap();
    assert!(head.status.success(), "not built from a git checkout");
    let head = String::from_utf8(head.stdout).unwrap();
    let head = head.trim();
    assert!(
        line == format!("volmig {version} (git {head})")
            || line == format!("volmig {version} (git {head}-dirty)"),
        "`{line}` does not name HEAD {head}"
    );
}

/// Runs build.rs, compiled on its own, for a crate at `manifest_dir`;
/// returns the version it sets.
fn build_script_version(manifest_dir: &Path, work: &Path) -> String {
    let exe = work.join("build-script");
    let build_rs = Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs");
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--edition", "2021", "-o"])
        .arg(&exe)
        .arg(&build_rs)
        .env("CARGO_PKG_VERSION", "9.8.7")
        .output()
        .expect("cannot run rustc");
    assert!(out.status.success(), "rustc build.rs: {}", text(&out).1);
    let out = Command::new(&exe)
        .env("CARGO_MANIFEST_DIR", manifest_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "build.rs: {}", text(&out).1);
    let stdout = text(&out).0;
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("cargo:rustc-env=VOLMIG_VERSION="))
        .unwrap_or_else(|| panic!("no VOLMIG_VERSION in {stdout}"))
        .to_string()
}

#[test]
fn outside_git_the_version_is_the_plain_crate_version() {
    let work = tempfile::tempdir().unwrap();
    // An unpacked crates.io tarball: no .git anywhere above it.
    let tarball = work.path().join("volmig-9.8.7");
    fs::create_dir(&tarball).unwrap();
    assert_eq!(build_script_version(&tarball, work.path()), "9.8.7");
    // The same tarball unpacked inside someone else's git repository: not
    // that repository's commit.
    let outer = work.path().join("outer");
    fs::create_dir(&outer).unwrap();
    run_ok(Command::new("git").arg("init").arg("-q").arg(&outer));
    let inner = outer.join("vendor/volmig-9.8.7");
    fs::create_dir_all(&inner).unwrap();
    assert_eq!(build_script_version(&inner, work.path()), "9.8.7");
}

#[test]
fn as_docker_volmig_it_answers_the_plugin_metadata_and_runs_as_volmig() {
    let cfg = tempfile::tempdir().unwrap();
    let out = run_ok(
        volmig(cfg.path())
            .args(["install-plugin", "--dir"])
            .arg(cfg.path().join("p")),
    );
    let plugin = cfg.path().join("p/docker-volmig");
    assert!(out.contains(&plugin.display().to_string()), "{out}");
    let meta = run_ok(
        volmig(cfg.path())
            .arg0_of(&plugin)
            .arg("docker-cli-plugin-metadata"),
    );
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["SchemaVersion"], "0.1.0");
    assert_eq!(meta["Vendor"], "volmig");
    assert!(meta["Version"]
        .as_str()
        .unwrap()
        .starts_with(env!("CARGO_PKG_VERSION")));
    let help = run_ok(
        volmig(cfg.path())
            .arg0_of(&plugin)
            .args(["volmig", "--help"]),
    );
    assert!(help.contains("Usage: docker volmig"), "{help}");
    // Not started by the docker CLI: exit 2 with what to do.
    let out = volmig(cfg.path())
        .arg0_of(&plugin)
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("run it as `docker volmig"),
        "{}",
        text(&out).1
    );
}

/// Runs the plugin's path (a symlink to volmig) instead of volmig.
trait Arg0 {
    fn arg0_of(&mut self, plugin: &Path) -> &mut Self;
}

impl Arg0 for Command {
    fn arg0_of(&mut self, plugin: &Path) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.arg0(plugin)
    }
}

/// A broken config.json is a warning naming it (tests/docker_context_broken.rs
/// has the whole policy); a context that cannot be used is an error naming
/// its file when it decides the data-root or was named explicitly.
#[test]
fn a_malformed_docker_context_is_an_error_naming_the_file_exit_2() {
    let cfg = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let config = cfg.path().join("config.json");
    fs::write(&config, r#"{"currentContext": "web""#).unwrap();
    let out = volmig(cfg.path())
        .arg("--data-root")
        .arg(root.path())
        .arg("scan")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let err = text(&out).1;
    assert!(
        err.contains(&format!("warning: `{}`", config.display())),
        "{err}"
    );
    assert!(err.contains("-H unix://"), "no fix named: {err}");
    // The context named but missing (deciding the data-root: no
    // --data-root), then its meta.json broken (named by DOCKER_CONTEXT;
    // its directory is the SHA-256 of `web`, as the docker CLI names it).
    fs::write(&config, r#"{"currentContext": "web"}"#).unwrap();
    let out = volmig(cfg.path()).arg("scan").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let err = text(&out).1;
    assert!(err.contains("docker context `web` does not exist"), "{err}");
    assert!(err.contains(&format!("`{}`", config.display())), "{err}");
    let meta = cfg
        .path()
        .join("contexts/meta/4b5e57f6eb2f42b9039b3d1e13929295f231749c510cbe341cd68036d9af97e2");
    fs::create_dir_all(&meta).unwrap();
    fs::write(meta.join("meta.json"), r#"{"Endpoints": {"docker": 7}}"#).unwrap();
    let out = volmig(cfg.path())
        .env("DOCKER_CONTEXT", "web")
        .arg("--data-root")
        .arg(root.path())
        .arg("scan")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let err = text(&out).1;
    assert!(
        err.contains(&format!("`{}`", meta.join("meta.json").display())),
        "{err}"
    );
    // Commands that need no daemon do not read the docker CLI's files.
    run_ok(volmig(cfg.path()).arg("man"));
}
