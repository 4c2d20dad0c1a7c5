//! Issue 10: an import's refusals are computed once, by the library: a
//! dry run and the real run of the same bundle onto the same target give
//! the same list (`refusals` in `--json`, errors included), exit 2 both,
//! and neither changes the target.

use std::fs;
use std::path::Path;

use crate::bundle_support::{
    assert_unchanged, empty_target, export_to, small_source, snapshot, stderr, write_at,
};
use crate::common::FakeDataRoot;
use serde_json::Value;

/// The refusals of `import ARGS BUNDLE --json` (exit 2 required), from
/// the plan of a dry run or the error document of a real one.
fn refusals(target: &FakeDataRoot, bundle: &Path, args: &[&str]) -> Vec<String> {
    let o = target
        .volmig()
        .arg("--json")
        .arg("import")
        .args(args)
        .arg(bundle)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "import {args:?}: {}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("import {args:?} printed no JSON ({e}): {}", stderr(&o)));
    assert_eq!(doc["ok"], false, "{doc}");
    let list: Vec<String> = doc["refusals"]
        .as_array()
        .unwrap_or_else(|| panic!("import {args:?}: no refusals in {doc}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert!(!list.is_empty(), "import {args:?}: {doc}");
    list
}

/// The dry run and the real run of `policy` refuse alike, changing nothing.
fn same_refusals(target: &FakeDataRoot, bundle: &Path, policy: &[&str]) -> Vec<String> {
    let before = snapshot(&target.path());
    let dry = refusals(target, bundle, &[policy, &["--dry-run"]].concat());
    assert_unchanged(&target.path(), &before);
    let real = refusals(target, bundle, policy);
    assert_unchanged(&target.path(), &before);
    assert_eq!(dry, real, "the dry run and the real run disagree");
    dry
}

fn imported(target: &FakeDataRoot, bundle: &Path) {
    let o = target.volmig().arg("import").arg(bundle).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn volumes_that_exist_are_refused_alike_by_the_dry_run_and_the_import() {
    let src = small_source();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    export_to(&src, &["app", "db"], &[], &bundle);
    let target = empty_target();
    imported(&target, &bundle);
    let why = same_refusals(&target, &bundle, &[]);
    // One per existing volume: appdata, shared, pgdata.
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why.iter().all(|w| w.contains("--on-conflict")), "{why:?}");
}

#[test]
fn a_different_volume_under_skip_identical_is_refused_alike() {
    let src = small_source();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    export_to(&src, &["app"], &[], &bundle);
    let target = empty_target();
    imported(&target, &bundle);
    fs::write(
        target.path().join("volumes/appdata/_data/a.txt"),
        b"the target's own",
    )
    .unwrap();
    let why = same_refusals(&target, &bundle, &["--on-conflict", "skip-identical"]);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].contains("appdata"), "{why:?}");
}

#[test]
fn deltas_out_of_order_or_onto_a_changed_target_are_refused_alike() {
    let src = small_source();
    let dir = tempfile::tempdir().unwrap();
    let m = |n: usize| dir.path().join(format!("m{n}"));
    let b = |n: usize| dir.path().join(format!("b{n}"));
    let data = src.path().join("volumes/appdata/_data");
    export_to(
        &src,
        &["app"],
        &["--manifest-out", m(0).to_str().unwrap()],
        &b(0),
    );
    for n in 1..=2 {
        write_at(
            &data.join("a.txt"),
            format!("round {n}").as_bytes(),
            (1_600_000_000, n as u32),
        );
        let since = m(n - 1);
        let next = m(n);
        export_to(
            &src,
            &["app"],
            &[
                "--since",
                since.to_str().unwrap(),
                "--manifest-out",
                next.to_str().unwrap(),
            ],
            &b(n),
        );
    }
    let target = empty_target();
    imported(&target, &b(0));
    // Round 2 before round 1: every volume says which round it holds.
    let why = same_refusals(&target, &b(2), &[]);
    assert_eq!(why.len(), 2, "{why:?}");
    assert!(
        why.iter().all(|w| w.contains("import the deltas in order")),
        "{why:?}"
    );
    // Round 1 onto a target changed since round 0.
    fs::write(target.path().join("volumes/appdata/_data/new"), b"x").unwrap();
    let why = same_refusals(&target, &b(1), &[]);
    assert!(
        why[0].contains("changed since its round was imported"),
        "{why:?}"
    );
}
