//! Build-time settings.
//!
//! `VOLMIG_SKIP_E2E=1` (the tests that start a private dockerd are not
//! wanted, e.g. on a machine without one) sets `cfg(volmig_skip_e2e)`:
//! those tests are then `#[ignore]`d, so the test run counts them as
//! skipped, never as passed.
//!
//! `volmig --version` names the commit (VOLMIG_VERSION): `0.1.0 (git
//! d25d315)`, with `-dirty` for uncommitted changes; plain `0.1.0` when
//! built outside a git checkout (a crates.io tarball) or without git.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(volmig_skip_e2e)");
    println!("cargo::rerun-if-env-changed=VOLMIG_SKIP_E2E");
    if std::env::var("VOLMIG_SKIP_E2E").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=volmig_skip_e2e");
    }
    embed_version();
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn embed_version() {
    let version = env!("CARGO_PKG_VERSION");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    // Only this crate's own checkout: a tarball unpacked inside some other
    // repository must not take that repository's commit.
    let toplevel = git(&["-C", &manifest_dir, "rev-parse", "--show-toplevel"]);
    let ours = toplevel.is_some_and(|t| Path::new(&t) == Path::new(&manifest_dir));
    let describe = ours
        .then(|| {
            git(&[
                "-C",
                &manifest_dir,
                "describe",
                "--always",
                "--dirty",
                "--abbrev=7",
            ])
        })
        .flatten();
    let full = match &describe {
        Some(d) => format!("{version} (git {d})"),
        None => version.to_string(),
    };
    println!("cargo:rustc-env=VOLMIG_VERSION={full}");
    println!("cargo:rerun-if-changed=build.rs");
    if describe.is_some() {
        // A new commit, a checkout or an edit changes the description.
        for path in ["HEAD", "index", "refs", "packed-refs"] {
            if let Some(p) = git(&["-C", &manifest_dir, "rev-parse", "--git-path", path]) {
                let p = Path::new(&manifest_dir).join(p);
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
        println!("cargo:rerun-if-changed=src");
        println!("cargo:rerun-if-changed=Cargo.toml");
    }
}
