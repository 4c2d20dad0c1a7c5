//! A migration into a data-root at another path: the stored volume Source
//! paths of the carried containers still name the old root, which 20.10.3
//! to 25.x evaluate for a z/Z mode. Import points them at the new root.

use crate::common::{fixture, fixture_ids, json_run, volmig};

#[test]
fn import_rewrites_stale_sources_so_2010_starts_the_containers() {
    let source = fixture("source");
    let target = fixture("lost-volumes");
    let bundle = tempfile::tempdir().unwrap();
    let file = bundle.path().join("b.tar");
    volmig()
        .arg("--data-root")
        .arg(source.path())
        .args(["export", "named", "zmode", "-o"])
        .arg(&file)
        .assert()
        .success();

    let (code, before) = json_run(volmig().arg("--data-root").arg(target.path()).args([
        "verify",
        "named",
        "zmode",
        "--daemon-version",
        "20.10.24",
    ]));
    assert_eq!(code, 1, "{before:#}");

    let (code, doc) = json_run(
        volmig()
            .arg("--data-root")
            .arg(target.path())
            .args(["import", "--daemon-version", "20.10.24"])
            .arg(&file),
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["rewritten_sources"].as_array().unwrap().len(), 2);

    let id = &fixture_ids("source")["named"];
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            target
                .path()
                .join("containers")
                .join(id)
                .join("config.v2.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let want = std::fs::canonicalize(target.path())
        .unwrap()
        .join("volumes/data1/_data");
    assert_eq!(
        config["MountPoints"]["/data"]["Source"],
        want.display().to_string()
    );
    // Everything else of the config is kept as dockerd wrote it.
    assert_eq!(config["MountPoints"]["/data"]["Relabel"], "z");
    assert_eq!(config["Name"], "/named");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(
        target
            .path()
            .join("containers")
            .join(id)
            .join("config.v2.json"),
    )
    .unwrap()
    .permissions()
    .mode();
    assert_eq!(mode & 0o777, 0o600);

    let (code, after) = json_run(volmig().arg("--data-root").arg(target.path()).args([
        "verify",
        "named",
        "zmode",
        "--daemon-version",
        "20.10.24",
    ]));
    assert_eq!(code, 0, "{after:#}");
}
