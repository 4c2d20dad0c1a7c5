//! The data-root `scripts/bench` times `verify --all` and `scan` on, built
//! the way dockerd lays one out: 1,000 stopped containers of 10 mount points
//! each and 10,000 local volumes with their metadata.db records.
//!
//! Not a timed test, and ignored: timings on a shared machine are noise, so
//! the script measures and prints them, and this only builds the world and
//! checks, through the library, that it is the one the figures claim (every
//! container loads, every volume scans, dockerd would start, and the
//! containers meant to fail do). Run by `scripts/bench` with
//! `VOLMIG_BENCH_DIR=<empty dir>`; without it, a small root in a tempdir.
//! `VOLMIG_BENCH_CONTAINERS` / `VOLMIG_BENCH_VOLUMES` shrink it for profiling.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use volmig::daemon_version::DaemonVersion;
use volmig::dataroot::containers::{self, MountKind};
use volmig::dataroot::metadata::{write_records, VolumeRecord};
use volmig::dataroot::mountinfo::MountTable;
use volmig::dataroot::DataRoot;
use volmig::report::Severity;
use volmig::scan;
use volmig::verify::{self, VerifyOptions, World};

/// Every container has 8 volume mounts, a bind of `/etc` and a tmpfs.
const MOUNTS_PER_CONTAINER: usize = 10;
const VOLUME_MOUNTS_PER_CONTAINER: usize = 8;
/// One container in this many mounts a volume that is not there, so verify
/// has failures to report (and render) like a half-migrated host.
const MISSING_VOLUME_EVERY: usize = 50;
/// One volume in ten of each kind: anonymous (image VOLUME), with tmpfs
/// create options (opts.json), with a file in `_data`.
const ANONYMOUS_EVERY: usize = 10;
const COMPOSE_VERSION: &str = "2.29.7";

/// How big a data-root to build.
struct Shape {
    containers: usize,
    volumes: usize,
}

impl Shape {
    fn from_env(full: bool) -> Shape {
        let (containers, volumes) = if full { (1000, 10_000) } else { (10, 100) };
        let read = |var: &str, default: usize| match std::env::var(var) {
            Ok(v) => v.parse().unwrap_or_else(|e| panic!("{var}={v}: {e}")),
            Err(_) => default,
        };
        Shape {
            containers: read("VOLMIG_BENCH_CONTAINERS", containers),
            volumes: read("VOLMIG_BENCH_VOLUMES", volumes).max(1),
        }
    }

    /// Containers that mount a missing volume (and so fail to start).
    fn failing_containers(&self) -> usize {
        (1..=self.containers)
            .filter(|&c| mounts_missing_volume(c))
            .count()
    }
}

fn mounts_missing_volume(container: usize) -> bool {
    container % MISSING_VOLUME_EVERY == 7
}

/// A stable 64-hex ID, like the random ones dockerd makes.
fn hex_id(seed: &str) -> String {
    Sha256::digest(seed.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Volume `index`: a compose volume `app0042_vol03`, or one in ten an
/// anonymous volume named by 64 hex digits.
fn volume_name(index: usize) -> String {
    if index % ANONYMOUS_EVERY == ANONYMOUS_EVERY - 1 {
        hex_id(&format!("volume-{index}"))
    } else {
        format!("app{:04}_vol{:02}", index / 10, index % 10)
    }
}

fn has_tmpfs_opts(index: usize) -> bool {
    index % 10 == 3
}

fn has_data_file(index: usize) -> bool {
    index % 10 == 5
}

fn mkdir(path: &Path, mode: u32) {
    DirBuilder::new().mode(mode).create(path).unwrap();
    // The umask may have taken bits off; dockerd's modes are exact.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn write_file(path: &Path, mode: u32, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `volumes/<name>/{_data,opts.json}` for every volume, then metadata.db.
fn write_volumes(root: &Path, shape: &Shape) {
    let volumes = root.join("volumes");
    mkdir(&volumes, 0o701);
    let mut records = Vec::with_capacity(shape.volumes);
    for index in 0..shape.volumes {
        let name = volume_name(index);
        let dir = volumes.join(&name);
        mkdir(&dir, 0o701);
        mkdir(&dir.join("_data"), 0o755);
        let mut options = None;
        if has_tmpfs_opts(index) {
            write_file(
                &dir.join("opts.json"),
                0o600,
                br#"{"MountType":"tmpfs","MountOpts":"size=1m","MountDevice":"tmpfs","Quota":{"Size":0}}"#,
            );
            // dockerd keeps the create options (`--opt`) in the record too.
            options = Some(BTreeMap::from([
                ("device".to_string(), "tmpfs".to_string()),
                ("o".to_string(), "size=1m".to_string()),
                ("type".to_string(), "tmpfs".to_string()),
            ]));
        }
        if has_data_file(index) {
            let text = format!("volume {name}: some application state\n");
            write_file(&dir.join("_data").join("state.txt"), 0o644, text.as_bytes());
        }
        let labels = if name.len() == 64 {
            // v23+ labels the volumes it makes for an image VOLUME.
            BTreeMap::from([("com.docker.volume.anonymous".to_string(), String::new())])
        } else {
            let (project, volume) = name.split_once('_').unwrap();
            BTreeMap::from([
                (
                    "com.docker.compose.project".to_string(),
                    project.to_string(),
                ),
                (
                    "com.docker.compose.version".to_string(),
                    COMPOSE_VERSION.to_string(),
                ),
                ("com.docker.compose.volume".to_string(), volume.to_string()),
            ])
        };
        records.push(VolumeRecord {
            name,
            driver: "local".into(),
            labels: Some(labels),
            options,
        });
    }
    write_records(&volumes.join("metadata.db"), &records).unwrap();
    fs::set_permissions(
        volumes.join("metadata.db"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// A volume mount point of a stopped container, as 20.10+ writes it
/// (named: `-v name:/dst`, mode `z`; anonymous: image VOLUME, no Source).
fn volume_mount(root: &Path, name: &str, destination: &str) -> Value {
    if name.len() == 64 {
        return json!({
            "Source": "", "Destination": destination, "RW": true, "Name": name,
            "Driver": "local", "Type": "volume", "Spec": {}, "SkipMountpointCreation": false
        });
    }
    json!({
        "Source": root.join("volumes").join(name).join("_data"),
        "Destination": destination, "RW": true, "Name": name, "Driver": "local",
        "Type": "volume", "Relabel": "z",
        "Spec": {"Type": "volume", "Source": name, "Target": destination},
        "SkipMountpointCreation": false
    })
}

/// The 10 mount points of container `number` (1-based), and its `-v` binds.
fn mount_points(
    root: &Path,
    number: usize,
    shape: &Shape,
) -> (BTreeMap<String, Value>, Vec<String>) {
    let mut points = BTreeMap::new();
    let mut binds = Vec::new();
    for slot in 0..VOLUME_MOUNTS_PER_CONTAINER {
        let destination = format!("/m{slot}");
        let name = if slot == 3 && mounts_missing_volume(number) {
            format!("gone{number:04}_vol{slot}")
        } else {
            volume_name(((number - 1) * VOLUME_MOUNTS_PER_CONTAINER + slot) % shape.volumes)
        };
        if name.len() != 64 {
            binds.push(format!("{name}:{destination}"));
        }
        points.insert(destination.clone(), volume_mount(root, &name, &destination));
    }
    points.insert(
        "/host-etc".into(),
        json!({
            "Source": "/etc", "Destination": "/host-etc", "RW": false, "Name": "", "Driver": "",
            "Type": "bind", "Relabel": "ro", "Propagation": "rprivate",
            "Spec": {"Type": "bind", "Source": "/etc", "Target": "/host-etc", "ReadOnly": true},
            "SkipMountpointCreation": false
        }),
    );
    binds.push("/etc:/host-etc:ro".into());
    points.insert(
        "/scratch".into(),
        json!({
            "Source": "", "Destination": "/scratch", "RW": true, "Name": "", "Driver": "",
            "Type": "tmpfs", "Spec": {"Type": "tmpfs", "Target": "/scratch"},
            "SkipMountpointCreation": false
        }),
    );
    assert_eq!(points.len(), MOUNTS_PER_CONTAINER);
    (points, binds)
}

/// `containers/<id>/` with config.v2.json, hostconfig.json and the files
/// dockerd keeps beside them, for every container.
fn write_containers(root: &Path, shape: &Shape) {
    let containers = root.join("containers");
    mkdir(&containers, 0o710);
    for number in 1..=shape.containers {
        let id = hex_id(&format!("container-{number}"));
        let dir = containers.join(&id);
        mkdir(&dir, 0o755);
        mkdir(&dir.join("checkpoints"), 0o700);
        let project = format!("app{:04}", (number - 1) / 2);
        let (points, binds) = mount_points(root, number, shape);
        let file = |name: &str| dir.join(name);
        let config = json!({
            "StreamConfig": {},
            "State": {
                "Running": false, "Paused": false, "Restarting": false, "OOMKilled": false,
                "RemovalInProgress": false, "Dead": false, "Pid": 0, "ExitCode": 0, "Error": "",
                "StartedAt": "2026-01-12T09:14:03.118202947Z",
                "FinishedAt": "2026-01-12T17:40:51.90411263Z", "Health": null
            },
            "ID": id,
            "Created": "2026-01-12T09:14:02.551873193Z",
            "Managed": false,
            "Path": "docker-entrypoint.sh",
            "Args": ["serve"],
            "Config": {
                "Hostname": &id[..12], "Domainname": "", "User": "",
                "AttachStdin": false, "AttachStdout": true, "AttachStderr": true, "Tty": false,
                "OpenStdin": false, "StdinOnce": false,
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", format!("APP_NAME={project}")],
                "Cmd": ["serve"], "Image": format!("registry.example.com/{project}:1.4.2"),
                "Volumes": null, "WorkingDir": "/srv", "Entrypoint": ["docker-entrypoint.sh"],
                "OnBuild": null,
                "Labels": {
                    "com.docker.compose.project": project,
                    "com.docker.compose.service": format!("svc{}", number % 2),
                    "com.docker.compose.container-number": "1",
                    "com.docker.compose.version": COMPOSE_VERSION
                }
            },
            "Image": format!("sha256:{}", hex_id(&format!("image-{project}"))),
            "NetworkSettings": {
                "Bridge": "", "SandboxID": "", "HairpinMode": false, "Networks": {
                    format!("{project}_default"): {
                        "IPAMConfig": null, "Links": null, "Aliases": [format!("svc{}", number % 2)],
                        "NetworkID": hex_id(&format!("network-{project}")), "EndpointID": "",
                        "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": "",
                        "DriverOpts": null
                    }
                },
                "Service": null, "Ports": null, "SandboxKey": "",
                "IsAnonymousEndpoint": false, "HasSwarmEndpoint": false
            },
            "LogPath": file(&format!("{id}-json.log")),
            "Name": format!("/c{number:04}"),
            "Driver": "overlay2",
            "OS": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "RestartCount": 0,
            "HasBeenStartedBefore": true,
            "HasBeenManuallyStopped": true,
            "MountPoints": points,
            "SecretReferences": null,
            "ConfigReferences": null,
            "AppArmorProfile": "docker-default",
            "HostnamePath": file("hostname"),
            "HostsPath": file("hosts"),
            "ShmPath": "",
            "ResolvConfPath": file("resolv.conf"),
            "SeccompProfile": "",
            "NoNewPrivileges": false,
            "LocalLogCacheMeta": {"HaveNotifyEnabled": false}
        });
        let host_config = json!({
            "Binds": binds,
            "ContainerIDFile": "",
            "LogConfig": {"Type": "json-file", "Config": {}},
            "NetworkMode": format!("{project}_default"),
            "PortBindings": {},
            "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
            "AutoRemove": false,
            "VolumeDriver": "",
            "VolumesFrom": null,
            "CgroupnsMode": "private",
            "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": [],
            "IpcMode": "private", "Privileged": false, "ReadonlyRootfs": false,
            "Runtime": "runc", "ShmSize": 67108864, "Memory": 0, "NanoCpus": 0,
            "Mounts": [{"Type": "tmpfs", "Target": "/scratch"}],
            "MaskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "ReadonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        });
        write_file(
            &file("config.v2.json"),
            0o600,
            &serde_json::to_vec(&config).unwrap(),
        );
        write_file(
            &file("hostconfig.json"),
            0o644,
            &serde_json::to_vec(&host_config).unwrap(),
        );
        write_file(
            &file("hostname"),
            0o644,
            format!("{}\n", &id[..12]).as_bytes(),
        );
        write_file(
            &file("hosts"),
            0o644,
            b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
        write_file(
            &file("resolv.conf"),
            0o644,
            b"nameserver 127.0.0.11\noptions ndots:0\n",
        );
        write_file(&file(&format!("{id}-json.log")), 0o640, b"");
    }
}

/// Builds the data-root in `root` (which must be empty or absent).
fn generate(root: &Path, shape: &Shape) -> PathBuf {
    fs::create_dir_all(root).unwrap();
    let root = fs::canonicalize(root).unwrap();
    assert!(
        fs::read_dir(&root).unwrap().next().is_none(),
        "`{}` is not empty: give VOLMIG_BENCH_DIR a fresh directory",
        root.display()
    );
    // Paths stored in config.v2.json embed R; canonical, so verify sees no move.
    write_volumes(&root, shape);
    write_containers(&root, shape);
    root
}

/// Opens the data-root with the library and checks it is the one promised.
fn check(root: &Path, shape: &Shape) {
    let data_root = DataRoot::open(root, None).unwrap();
    let slots = containers::load_all(&data_root).unwrap();
    assert_eq!(slots.len(), shape.containers);
    let mut mount_points = 0;
    for slot in &slots {
        let container = slot.loaded.as_ref().unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<MountKind> = container
            .mount_points()
            .map(|(_, m)| m.mount_kind())
            .collect();
        assert_eq!(kinds.len(), MOUNTS_PER_CONTAINER, "{}", container.name);
        assert_eq!(
            kinds.iter().filter(|k| **k == MountKind::Volume).count(),
            VOLUME_MOUNTS_PER_CONTAINER
        );
        mount_points += kinds.len();
    }

    let mounts = MountTable::default();
    let scan = scan::scan(&data_root, &mounts, DaemonVersion::CURRENT);
    let fatal: Vec<_> = scan
        .all_findings()
        .filter(|f| f.severity == Severity::Fatal)
        .collect();
    assert!(fatal.is_empty(), "{fatal:#?}");
    assert_eq!(scan.volumes.len(), shape.volumes);
    let store = scan.store.as_ref().expect("metadata.db reads");
    assert_eq!(store.records.len(), shape.volumes);
    assert!(store.undecodable.is_empty());
    let with_opts = scan
        .volumes
        .values()
        .filter(|v| v.options.is_some())
        .count();
    assert_eq!(
        with_opts,
        (0..shape.volumes).filter(|&i| has_tmpfs_opts(i)).count()
    );
    // Nothing but the missing volumes is wrong with it.
    let findings: Vec<_> = scan.all_findings().collect();
    assert!(findings.is_empty(), "{findings:#?}");

    let world = World {
        root: &data_root,
        scan: &scan,
        mounts: &mounts,
        containers: &slots,
    };
    let opts = VerifyOptions::default();
    let reports: Vec<_> = slots
        .iter()
        .map(|s| verify::verify_container(&world, s, &opts))
        .collect();
    let failing: Vec<&str> = reports
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(failing.len(), shape.failing_containers(), "{failing:?}");
    for report in &reports {
        let kinds: Vec<&str> = report.all_findings().map(|f| f.kind.as_str()).collect();
        let expected: &[&str] = if report.ok { &[] } else { &["volume-missing"] };
        assert_eq!(kinds, expected, "{}", report.name);
    }
    println!(
        "bench data-root {}: {} containers, {mount_points} mount points, {} volumes ({} with opts.json), {} containers fail to start by design",
        root.display(),
        slots.len(),
        scan.volumes.len(),
        with_opts,
        failing.len()
    );
}

#[test]
#[ignore = "builds the scripts/bench data-root; run by scripts/bench"]
fn generate_bench_dataroot() {
    match std::env::var_os("VOLMIG_BENCH_DIR") {
        Some(dir) => {
            let shape = Shape::from_env(true);
            let root = generate(Path::new(&dir), &shape);
            check(&root, &shape);
        }
        None => {
            let shape = Shape::from_env(false);
            let tmp = tempfile::tempdir().unwrap();
            let root = generate(&tmp.path().join("docker"), &shape);
            check(&root, &shape);
        }
    }
}
