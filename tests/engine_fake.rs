//! The Engine API paths with a fake daemon: live registration on import
//! (and `_data` put back after dockerd's chown/chmod), run state and labels
//! from a running daemon on export.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::common::{volume_mount, FakeDataRoot};
use volmig::dataroot::metadata::VolumeRecord;
use volmig::dataroot::DataRoot;
use volmig::engine::{DaemonInfo, Engine, EngineError, RunState};
use volmig::export::{self, ExportOptions};
use volmig::import::{self, ImportOptions, MetadataOutcome, OnConflict};
use volmig::progress::NoProgress;

/// Behaves like dockerd 20.10 where volmig can tell: creating a volume over
/// an existing directory chowns/chmods `_data` to root:root 0755.
struct FakeDaemon {
    root: std::path::PathBuf,
    state: RunState,
    created: RefCell<Vec<VolumeRecord>>,
    volumes: BTreeMap<String, VolumeRecord>,
}

impl Engine for FakeDaemon {
    fn info(&self) -> Result<DaemonInfo, EngineError> {
        Ok(DaemonInfo {
            version: "20.10.24".into(),
            api_version: "1.41".into(),
            root_dir: self.root.clone(),
        })
    }
    fn create_volume(&self, record: &VolumeRecord) -> Result<(), EngineError> {
        let data = self.root.join("volumes").join(&record.name).join("_data");
        std::os::unix::fs::chown(&data, Some(0), Some(0)).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        self.created.borrow_mut().push(record.clone());
        Ok(())
    }
    fn volume(&self, name: &str) -> Result<Option<VolumeRecord>, EngineError> {
        Ok(self.volumes.get(name).cloned())
    }
    fn container_state(&self, _id: &str) -> Result<RunState, EngineError> {
        Ok(self.state)
    }
    fn pause(&self, _: &str) -> Result<(), EngineError> {
        Ok(())
    }
    fn unpause(&self, _: &str) -> Result<(), EngineError> {
        Ok(())
    }
    fn stop(&self, _: &str) -> Result<(), EngineError> {
        Ok(())
    }
    fn start(&self, _: &str) -> Result<(), EngineError> {
        Ok(())
    }
}

fn id(n: u8) -> String {
    format!("{:0>64}", n)
}

/// A source with one container and a postgres-like volume (999:999 0700).
fn source() -> FakeDataRoot {
    let mut src = FakeDataRoot::new();
    let r = src.path();
    src.volume("pgdata", &[("com.docker.compose.project", "shop")])
        .container(
            &id(1),
            "db",
            &[volume_mount("pgdata", "/var/lib/postgresql/data", &r)],
        )
        .write_db();
    let data = r.join("volumes/pgdata/_data");
    fs::write(data.join("PG_VERSION"), b"15\n").unwrap();
    std::os::unix::fs::chown(&data, Some(999), Some(999)).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    src
}

fn bundle_of(src: &FakeDataRoot, engine: Option<&dyn Engine>) -> Vec<u8> {
    let root = DataRoot::open(&src.path(), None).unwrap();
    let plan = export::plan(
        &root,
        &ExportOptions {
            containers: vec!["db".into()],
            ..Default::default()
        },
        engine,
    )
    .unwrap();
    let out = tempfile::tempfile().unwrap();
    let (_, mut out) = export::write(
        &root,
        &plan,
        out,
        volmig::bundle::writer::Compression::None,
        Default::default(),
        &NoProgress,
    )
    .unwrap();
    use std::io::{Read, Seek};
    out.rewind().unwrap();
    let mut bytes = Vec::new();
    out.read_to_end(&mut bytes).unwrap();
    bytes
}

#[test]
fn a_running_daemon_gets_the_volumes_registered_and_data_keeps_its_owner() {
    let src = source();
    let bundle = bundle_of(&src, None);
    let mut dst = FakeDataRoot::new();
    dst.write_db();
    let db = fs::File::options()
        .read(true)
        .write(true)
        .open(dst.path().join("volumes/metadata.db"))
        .unwrap();
    // The "daemon" holds metadata.db as dockerd does.
    let _lock = nix::fcntl::Flock::lock(db, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let daemon = FakeDaemon {
        root: dst.path(),
        state: RunState::Stopped,
        created: RefCell::new(Vec::new()),
        volumes: BTreeMap::new(),
    };
    let root = DataRoot::open(&dst.path(), None).unwrap();
    let report = import::import(
        &root,
        Box::new(std::io::Cursor::new(bundle)),
        &ImportOptions {
            policy: OnConflict::Fail,
            dry_run: false,
            wait: false,
            map_paths: Vec::new(),
        },
        Some(&daemon),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        report.metadata,
        Some(MetadataOutcome::Registered {
            ok: 1,
            failed: vec![]
        })
    );
    let created = daemon.created.borrow();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].name, "pgdata");
    assert_eq!(
        created[0].labels.as_ref().unwrap()["com.docker.compose.project"],
        "shop"
    );
    let data = fs::metadata(dst.path().join("volumes/pgdata/_data")).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o7777),
        (999, 999, 0o700),
        "_data put back after registration"
    );
    assert!(
        report.rewritten_sources.is_empty(),
        "configs are the running daemon's: left alone"
    );
}

#[test]
fn without_an_engine_a_running_daemon_is_reported() {
    let src = source();
    let bundle = bundle_of(&src, None);
    let mut dst = FakeDataRoot::new();
    dst.write_db();
    let db = fs::File::options()
        .read(true)
        .write(true)
        .open(dst.path().join("volumes/metadata.db"))
        .unwrap();
    let _lock = nix::fcntl::Flock::lock(db, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let root = DataRoot::open(&dst.path(), None).unwrap();
    let report = import::import(
        &root,
        Box::new(std::io::Cursor::new(bundle)),
        &ImportOptions {
            policy: OnConflict::Fail,
            dry_run: false,
            wait: false,
            map_paths: Vec::new(),
        },
        None,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(report.metadata, Some(MetadataOutcome::DaemonRunning));
}

#[test]
fn export_asks_the_daemon_for_state_and_labels() {
    let src = source();
    let root = DataRoot::open(&src.path(), None).unwrap();
    // config.v2.json says stopped, the daemon says running: refused.
    let running = FakeDaemon {
        root: src.path(),
        state: RunState::Running,
        created: RefCell::new(Vec::new()),
        volumes: BTreeMap::new(),
    };
    let err = export::plan(
        &root,
        &ExportOptions {
            containers: vec!["db".into()],
            ..Default::default()
        },
        Some(&running),
    )
    .unwrap_err();
    assert!(err.to_string().contains("container db is running"), "{err}");
    // Paused for the export by volmig itself: allowed.
    let paused = FakeDaemon {
        state: RunState::Paused,
        ..running
    };
    let opts = ExportOptions {
        containers: vec!["db".into()],
        paused_is_quiet: true,
        ..Default::default()
    };
    assert!(export::plan(&root, &opts, Some(&paused)).is_ok());

    // metadata.db held by the daemon: labels come from the Engine API.
    let db = fs::File::options()
        .read(true)
        .write(true)
        .open(src.path().join("volumes/metadata.db"))
        .unwrap();
    let _lock = nix::fcntl::Flock::lock(db, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let refused = export::plan(
        &root,
        &ExportOptions {
            containers: vec!["db".into()],
            ..Default::default()
        },
        None,
    )
    .unwrap_err();
    assert!(refused.to_string().contains("is locked"), "{refused}");
    let mut volumes = BTreeMap::new();
    volumes.insert(
        "pgdata".to_string(),
        VolumeRecord {
            name: "pgdata".into(),
            driver: "local".into(),
            labels: Some([("from".to_string(), "api".to_string())].into()),
            options: Some(BTreeMap::new()),
        },
    );
    let daemon = FakeDaemon {
        root: src.path(),
        state: RunState::Stopped,
        created: RefCell::new(Vec::new()),
        volumes,
    };
    let plan = export::plan(
        &root,
        &ExportOptions {
            containers: vec!["db".into()],
            ..Default::default()
        },
        Some(&daemon),
    )
    .unwrap();
    assert_eq!(
        plan.header.volumes[0]
            .record
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap()["from"],
        "api"
    );
}

/// Records what volmig asks of the daemon; `failing` makes one call fail.
struct Recorder {
    states: RefCell<BTreeMap<String, RunState>>,
    calls: RefCell<Vec<String>>,
    failing: Option<&'static str>,
}

impl Recorder {
    fn new(states: &[(&str, RunState)], failing: Option<&'static str>) -> Recorder {
        Recorder {
            states: RefCell::new(states.iter().map(|(id, s)| (id.to_string(), *s)).collect()),
            calls: RefCell::new(Vec::new()),
            failing,
        }
    }
    fn act(&self, verb: &str, id: &str, then: RunState) -> Result<(), EngineError> {
        let call = format!("{verb} {id}");
        self.calls.borrow_mut().push(call.clone());
        if self.failing == Some(verb) {
            return Err(EngineError::Daemon {
                what: call,
                message: "refused".into(),
            });
        }
        self.states.borrow_mut().insert(id.to_string(), then);
        Ok(())
    }
}

impl Engine for Recorder {
    fn info(&self) -> Result<DaemonInfo, EngineError> {
        unimplemented!("not used")
    }
    fn create_volume(&self, _: &VolumeRecord) -> Result<(), EngineError> {
        unimplemented!("not used")
    }
    fn volume(&self, _: &str) -> Result<Option<VolumeRecord>, EngineError> {
        Ok(None)
    }
    fn container_state(&self, id: &str) -> Result<RunState, EngineError> {
        Ok(self.states.borrow()[id])
    }
    fn pause(&self, id: &str) -> Result<(), EngineError> {
        self.act("pause", id, RunState::Paused)
    }
    fn unpause(&self, id: &str) -> Result<(), EngineError> {
        self.act("unpause", id, RunState::Running)
    }
    fn stop(&self, id: &str) -> Result<(), EngineError> {
        self.act("stop", id, RunState::Stopped)
    }
    fn start(&self, id: &str) -> Result<(), EngineError> {
        self.act("start", id, RunState::Running)
    }
}

#[test]
fn quiesced_containers_are_put_back_as_they_were_even_on_early_return() {
    use volmig::engine::Quiesce;
    let daemon = Recorder::new(
        &[
            ("a", RunState::Running),
            ("b", RunState::Paused),
            ("c", RunState::Stopped),
        ],
        None,
    );
    {
        let mut q = Quiesce::new(&daemon);
        for id in ["a", "b", "c"] {
            q.quiet(id, true).unwrap();
        }
        // Dropped without restore (an error or a panic in between).
    }
    assert_eq!(
        *daemon.calls.borrow(),
        vec!["pause a", "unpause a"],
        "only the running one is touched"
    );
    assert_eq!(
        daemon.states.borrow()["b"],
        RunState::Paused,
        "a paused container stays paused"
    );

    let daemon = Recorder::new(&[("a", RunState::Running), ("b", RunState::Running)], None);
    let mut q = Quiesce::new(&daemon);
    q.quiet("a", false).unwrap();
    q.quiet("b", false).unwrap();
    q.restore().unwrap();
    drop(q);
    assert_eq!(
        *daemon.calls.borrow(),
        vec!["stop a", "stop b", "start b", "start a"],
        "restored once, in reverse"
    );
}

#[test]
fn a_failed_restore_is_reported_with_the_fix_after_trying_every_container() {
    use volmig::engine::Quiesce;
    let daemon = Recorder::new(
        &[("a", RunState::Running), ("b", RunState::Running)],
        Some("unpause"),
    );
    let mut q = Quiesce::new(&daemon);
    q.quiet("a", true).unwrap();
    q.quiet("b", true).unwrap();
    let err = q.restore().unwrap_err().to_string();
    assert!(err.contains("docker unpause b"), "{err}");
    assert_eq!(
        *daemon.calls.borrow(),
        vec!["pause a", "pause b", "unpause b", "unpause a"],
        "both were tried"
    );
}

/// A live import of a bind-type volume: `_data` is the empty mountpoint
/// dockerd binds the device over (0755, the volume directory's owner), and
/// the bundle's `_data` attributes are the device directory's. Putting
/// `_data` back after registration gave the mountpoint the device's mode
/// and owner (0750, 999:999), unlike the same import with dockerd stopped.
#[test]
fn a_live_import_of_a_bind_volume_gave_the_mountpoint_the_devices_attributes() {
    let host = tempfile::tempdir().unwrap();
    let device = host.path().join("srv/app");
    fs::create_dir_all(&device).unwrap();
    fs::write(device.join("index.html"), b"hi\n").unwrap();
    std::os::unix::fs::chown(&device, Some(999), Some(999)).unwrap();
    fs::set_permissions(&device, fs::Permissions::from_mode(0o750)).unwrap();
    let mut src = FakeDataRoot::new();
    let r = src.path();
    src.volume("app", &[])
        .opts_json(
            "app",
            &format!(
                r#"{{"MountType":"none","MountOpts":"bind","MountDevice":"{}"}}"#,
                device.display()
            ),
        )
        .container(&id(1), "db", &[volume_mount("app", "/srv", &r)])
        .write_db();
    let bundle = bundle_of(&src, None);
    let mut dst = FakeDataRoot::new();
    dst.write_db();
    let db = fs::File::options()
        .read(true)
        .write(true)
        .open(dst.path().join("volumes/metadata.db"))
        .unwrap();
    let _lock = nix::fcntl::Flock::lock(db, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let daemon = FakeDaemon {
        root: dst.path(),
        state: RunState::Stopped,
        created: RefCell::new(Vec::new()),
        volumes: BTreeMap::new(),
    };
    let new = host.path().join("new/app");
    let root = DataRoot::open(&dst.path(), None).unwrap();
    let report = import::import(
        &root,
        Box::new(std::io::Cursor::new(bundle)),
        &ImportOptions {
            policy: OnConflict::Fail,
            dry_run: false,
            wait: false,
            map_paths: vec![(device.clone(), new.clone())],
        },
        Some(&daemon),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        report.metadata,
        Some(MetadataOutcome::Registered {
            ok: 1,
            failed: vec![]
        })
    );
    let dev = fs::metadata(&new).unwrap();
    assert_eq!((dev.uid(), dev.mode() & 0o7777), (999, 0o750), "the data");
    let vol = fs::metadata(dst.path().join("volumes/app")).unwrap();
    let data = fs::metadata(dst.path().join("volumes/app/_data")).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o7777),
        (vol.uid(), vol.gid(), 0o755),
        "the mountpoint, as with dockerd stopped"
    );
}
