//! Which daemon to talk to, picked the way the docker CLI picks it: its
//! `-H`, its `--context`, `DOCKER_HOST`, `DOCKER_CONTEXT`, the
//! `currentContext` of `$DOCKER_CONFIG/config.json`, else the default
//! socket. The one home of that rule, for `volmig` and `docker volmig`
//! alike, so that both reach the daemon `docker ps` shows.
//!
//! It only reads the docker CLI's files; it never writes them and never
//! talks to a daemon. A context named in the settings but missing, or a
//! file that cannot be read or parsed, is an error naming the file: going
//! on with the default socket would act on another daemon than the user's.
//! An error that comes from config.json (the file itself, or the context
//! its `currentContext` names) says so (`ConfigFile`, `CurrentContext`),
//! for the CLI to decide whether to go on without it (`cli::daemon`).

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// dockerd's default socket (the docker CLI's `default` context).
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Everything the docker CLI reads to pick its daemon: its global flags
/// and its environment (an empty variable counts as unset, as in the CLI).
#[derive(Debug, Default, Clone)]
pub struct ClientSettings {
    /// `-H HOST` (volmig's own, or the docker CLI's before `volmig`).
    pub host_flag: Option<String>,
    /// `docker --context NAME volmig ...`.
    pub context_flag: Option<String>,
    /// `docker --config DIR volmig ...`.
    pub config_flag: Option<PathBuf>,
    pub docker_host: Option<String>,
    pub docker_context: Option<String>,
    pub docker_config: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl ClientSettings {
    /// The settings of this process's environment, with no flags.
    pub fn from_env() -> ClientSettings {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        ClientSettings {
            docker_host: var("DOCKER_HOST").map(|v| v.to_string_lossy().into_owned()),
            docker_context: var("DOCKER_CONTEXT").map(|v| v.to_string_lossy().into_owned()),
            docker_config: var("DOCKER_CONFIG").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            ..ClientSettings::default()
        }
    }

    /// The docker CLI's configuration directory: `--config`, else
    /// `$DOCKER_CONFIG`, else `~/.docker`; None without any of them.
    pub fn config_dir(&self) -> Option<PathBuf> {
        self.config_flag
            .clone()
            .or_else(|| self.docker_config.clone())
            .or_else(|| self.home.as_ref().map(|h| h.join(".docker")))
    }

    /// `config.json` in the configuration directory.
    fn config_file(&self) -> Option<PathBuf> {
        self.config_dir().map(|d| d.join("config.json"))
    }

    /// No flag or variable names a host or a context: config.json picks.
    fn names_nothing(&self) -> bool {
        self.host_flag.is_none()
            && self.context_flag.is_none()
            && self.docker_host.is_none()
            && self.docker_context.is_none()
    }
}

/// Where the host came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSource {
    Flag,
    /// `$DOCKER_HOST`.
    Environment,
    /// A docker context, with the meta.json that holds its endpoint.
    Context {
        name: String,
        meta: PathBuf,
    },
    /// The `default` context: dockerd's default socket.
    Default,
}

/// The daemon to talk to and why it is that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub source: HostSource,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("conflicting options: -H `{host}` and --context `{context}`: pass only one of them")]
    Conflict { host: String, context: String },
    #[error("cannot read `{}`: {source}: fix its permissions, or pass the daemon with -H unix:///path/docker.sock", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("`{}` is not a valid docker CLI file: {reason}: fix or remove it, or pass the daemon with -H unix:///path/docker.sock", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("docker context `{name}` does not exist (no `{}`): run `docker context ls`, then `docker context use default` or pass -H", meta.display())]
    NoSuchContext { name: String, meta: PathBuf },
    #[error("docker context `{name}` is set but there is no docker configuration directory (neither $DOCKER_CONFIG nor $HOME): set DOCKER_CONFIG or pass -H")]
    NoConfigDir { name: String },
    #[error("docker context `{name}` talks TLS (`{}`), which volmig does not speak: pass a unix socket with -H unix:///path/docker.sock", tls.display())]
    Tls { name: String, tls: PathBuf },
    #[error("{origin} `{host}` is not a daemon address volmig can use: pass -H unix:///path/docker.sock or -H tcp://HOST:PORT")]
    BadHost { host: String, origin: String },
    /// config.json itself cannot be read or parsed (no flag or variable
    /// named a host or context).
    #[error("{inner}")]
    ConfigFile { inner: Box<ContextError> },
    /// The context named by config.json's `currentContext` (no flag or
    /// variable named a host or context) cannot be used.
    #[error("the current context in `{}`: {inner}", config.display())]
    CurrentContext {
        config: PathBuf,
        inner: Box<ContextError>,
    },
}

/// The part of `config.json` that picks the context.
#[derive(Deserialize)]
struct ConfigJson {
    #[serde(rename = "currentContext", default)]
    current_context: Option<String>,
}

/// The part of a context's `meta.json` that names its daemon.
#[derive(Deserialize)]
struct ContextMeta {
    #[serde(rename = "Endpoints", default)]
    endpoints: Endpoints,
}

#[derive(Deserialize, Default)]
struct Endpoints {
    docker: Option<DockerEndpoint>,
}

#[derive(Deserialize)]
struct DockerEndpoint {
    #[serde(rename = "Host", default)]
    host: Option<String>,
}

/// Picks the daemon by the docker CLI's precedence (docker/cli
/// `resolveContextName`, the same in 20.10 and 28.x): -H, --context,
/// DOCKER_HOST, DOCKER_CONTEXT, config.json's currentContext, `default`.
///
/// The host is checked: volmig speaks unix://, tcp:// and http:// only.
pub fn resolve(s: &ClientSettings) -> Result<Endpoint, ContextError> {
    let endpoint = pick(s)?;
    match checked(&endpoint) {
        Ok(()) => Ok(endpoint),
        Err(e) => match endpoint.source {
            HostSource::Context { .. } if s.names_nothing() => Err(ContextError::CurrentContext {
                config: s.config_file().unwrap_or_default(),
                inner: Box::new(e),
            }),
            _ => Err(e),
        },
    }
}

/// The default endpoint, dockerd's default socket, for a caller going on
/// without the docker CLI's configuration.
pub fn default_endpoint() -> Endpoint {
    Endpoint {
        host: DEFAULT_HOST.to_string(),
        source: HostSource::Default,
    }
}

/// Whether volmig can talk to the host (`engine::DockerEngine::connect`).
fn checked(endpoint: &Endpoint) -> Result<(), ContextError> {
    let host = &endpoint.host;
    let usable = match host.strip_prefix("unix://") {
        Some(path) => path.starts_with('/'),
        None => ["tcp://", "http://"]
            .iter()
            .any(|p| host.len() > p.len() && host.starts_with(p)),
    };
    if usable {
        return Ok(());
    }
    let origin = match &endpoint.source {
        HostSource::Flag => "-H".to_string(),
        HostSource::Environment => "DOCKER_HOST".to_string(),
        HostSource::Context { name, meta } => format!(
            "the endpoint of docker context `{name}` (`{}`)",
            meta.display()
        ),
        HostSource::Default => "the default host".to_string(),
    };
    Err(ContextError::BadHost {
        host: host.clone(),
        origin,
    })
}

/// The endpoint the settings pick, not yet checked.
fn pick(s: &ClientSettings) -> Result<Endpoint, ContextError> {
    if let (Some(host), Some(context)) = (&s.host_flag, &s.context_flag) {
        return Err(ContextError::Conflict {
            host: host.clone(),
            context: context.clone(),
        });
    }
    if let Some(host) = &s.host_flag {
        return Ok(Endpoint {
            host: host.clone(),
            source: HostSource::Flag,
        });
    }
    if let Some(name) = &s.context_flag {
        return from_context(s, name);
    }
    if let Some(host) = &s.docker_host {
        return Ok(Endpoint {
            host: host.clone(),
            source: HostSource::Environment,
        });
    }
    if let Some(name) = &s.docker_context {
        return from_context(s, name);
    }
    let Some(config) = s.config_file() else {
        return Ok(default_endpoint());
    };
    let current = read_json::<ConfigJson>(&config)
        .map_err(|e| ContextError::ConfigFile { inner: Box::new(e) })?
        .and_then(|c| c.current_context)
        .filter(|c| !c.is_empty());
    match current {
        Some(name) => from_context(s, &name).map_err(|e| ContextError::CurrentContext {
            config,
            inner: Box::new(e),
        }),
        None => Ok(default_endpoint()),
    }
}

/// The endpoint of context `name`; `default` is the default socket.
fn from_context(s: &ClientSettings, name: &str) -> Result<Endpoint, ContextError> {
    if name == "default" {
        return Ok(default_endpoint());
    }
    let Some(dir) = s.config_dir() else {
        return Err(ContextError::NoConfigDir {
            name: name.to_string(),
        });
    };
    // The CLI stores a context under the SHA-256 of its name
    // (docker/cli context/store: digest.FromString(name).Encoded()).
    let id = format!("{:x}", Sha256::digest(name.as_bytes()));
    let meta = dir
        .join("contexts")
        .join("meta")
        .join(&id)
        .join("meta.json");
    let Some(parsed) = read_json::<ContextMeta>(&meta)? else {
        return Err(ContextError::NoSuchContext {
            name: name.to_string(),
            meta,
        });
    };
    let tls = dir.join("contexts").join("tls").join(&id).join("docker");
    if tls.exists() {
        return Err(ContextError::Tls {
            name: name.to_string(),
            tls,
        });
    }
    match parsed.endpoints.docker.and_then(|d| d.host) {
        Some(host) if !host.is_empty() => Ok(Endpoint {
            host,
            source: HostSource::Context {
                name: name.to_string(),
                meta,
            },
        }),
        _ => Err(ContextError::Malformed {
            path: meta,
            reason: "no docker endpoint (Endpoints.docker.Host)".to_string(),
        }),
    }
}

/// Parses a JSON file; None when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ContextError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ContextError::Unreadable {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ContextError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A config dir with `config.json` (when given) and named contexts.
    fn config_dir(current: Option<&str>, contexts: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(c) = current {
            let doc = serde_json::json!({"auths": {}, "currentContext": c});
            fs::write(dir.path().join("config.json"), doc.to_string()).unwrap();
        }
        for (name, host) in contexts {
            let id = format!("{:x}", Sha256::digest(name.as_bytes()));
            let meta = dir.path().join("contexts/meta").join(id);
            fs::create_dir_all(&meta).unwrap();
            let doc = serde_json::json!({"Name": name, "Metadata": {},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}}});
            fs::write(meta.join("meta.json"), doc.to_string()).unwrap();
        }
        dir
    }

    /// The error under the config.json wrappers.
    fn cause(e: &ContextError) -> &ContextError {
        match e {
            ContextError::ConfigFile { inner } | ContextError::CurrentContext { inner, .. } => {
                inner
            }
            e => e,
        }
    }

    fn settings(dir: &Path) -> ClientSettings {
        ClientSettings {
            docker_config: Some(dir.to_path_buf()),
            ..ClientSettings::default()
        }
    }

    #[test]
    fn a_context_is_found_where_the_docker_cli_writes_it() {
        // `docker context create e2e` (20.10.24) made
        // contexts/meta/6d8749c4.../meta.json.
        let dir = config_dir(None, &[]);
        let meta = dir
            .path()
            .join("contexts/meta/6d8749c4fe00b757c1bc1c376a99f31d1bd38b422d44f5b6aa2d6a6c5e975cba");
        fs::create_dir_all(&meta).unwrap();
        fs::write(
            meta.join("meta.json"),
            r#"{"Name":"e2e","Metadata":{},"Endpoints":{"docker":{"Host":"unix:///tmp/x.sock","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        let s = ClientSettings {
            docker_context: Some("e2e".into()),
            ..settings(dir.path())
        };
        assert_eq!(resolve(&s).unwrap().host, "unix:///tmp/x.sock");
    }

    #[test]
    fn precedence_is_the_docker_clis() {
        let dir = config_dir(
            Some("cur"),
            &[
                ("cur", "unix:///cur.sock"),
                ("env", "unix:///env.sock"),
                ("flag", "unix:///flag.sock"),
            ],
        );
        let mut s = settings(dir.path());
        let host = |s: &ClientSettings| resolve(s).unwrap().host;
        assert_eq!(host(&s), "unix:///cur.sock");
        s.docker_context = Some("env".into());
        assert_eq!(host(&s), "unix:///env.sock");
        s.docker_host = Some("tcp://h:2375".into());
        assert_eq!(host(&s), "tcp://h:2375");
        assert_eq!(resolve(&s).unwrap().source, HostSource::Environment);
        s.context_flag = Some("flag".into());
        assert_eq!(host(&s), "unix:///flag.sock");
        s.context_flag = None;
        s.host_flag = Some("unix:///h.sock".into());
        assert_eq!(host(&s), "unix:///h.sock");
        assert_eq!(resolve(&s).unwrap().source, HostSource::Flag);
        s.context_flag = Some("flag".into());
        assert!(matches!(resolve(&s), Err(ContextError::Conflict { .. })));
    }

    #[test]
    fn default_context_and_no_config_mean_the_default_socket() {
        let dir = config_dir(Some("default"), &[]);
        let got = resolve(&settings(dir.path())).unwrap();
        assert_eq!(got, default_endpoint());
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve(&settings(empty.path())).unwrap().host, DEFAULT_HOST);
        assert_eq!(
            resolve(&ClientSettings::default()).unwrap().host,
            DEFAULT_HOST
        );
    }

    #[test]
    fn config_dir_is_flag_then_env_then_home() {
        let mut s = ClientSettings {
            home: Some("/home/u".into()),
            ..ClientSettings::default()
        };
        assert_eq!(s.config_dir(), Some(PathBuf::from("/home/u/.docker")));
        s.docker_config = Some("/env".into());
        assert_eq!(s.config_dir(), Some(PathBuf::from("/env")));
        s.config_flag = Some("/flag".into());
        assert_eq!(s.config_dir(), Some(PathBuf::from("/flag")));
    }

    #[test]
    fn the_context_names_its_meta_json() {
        let dir = config_dir(Some("web"), &[("web", "unix:///run/web.sock")]);
        let got = resolve(&settings(dir.path())).unwrap();
        let HostSource::Context { name, meta } = got.source else {
            panic!("not from a context: {got:?}");
        };
        assert_eq!(name, "web");
        assert!(meta.ends_with("meta.json") && meta.is_file(), "{meta:?}");
    }

    #[test]
    fn malformed_config_json_is_an_error_naming_the_file() {
        let dir = config_dir(None, &[]);
        let path = dir.path().join("config.json");
        fs::write(&path, "{ not json").unwrap();
        let err = resolve(&settings(dir.path())).unwrap_err();
        assert!(matches!(err, ContextError::ConfigFile { .. }), "{err}");
        assert!(
            matches!(cause(&err), ContextError::Malformed { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("`{}`", path.display())),
            "{err}"
        );
    }

    #[test]
    fn malformed_or_hostless_meta_json_is_an_error_naming_the_file() {
        let dir = config_dir(Some("web"), &[("web", "unix:///x")]);
        let id = format!("{:x}", Sha256::digest(b"web"));
        let meta = dir.path().join("contexts/meta").join(id).join("meta.json");
        for bad in [
            "[1, 2",
            r#"{"Name":"web","Endpoints":{}}"#,
            r#"{"Endpoints":{"docker":{"Host":""}}}"#,
        ] {
            fs::write(&meta, bad).unwrap();
            let err = resolve(&settings(dir.path())).unwrap_err();
            assert!(
                matches!(err, ContextError::CurrentContext { .. }),
                "{bad}: {err}"
            );
            assert!(
                matches!(cause(&err), ContextError::Malformed { .. }),
                "{bad}: {err}"
            );
            assert!(
                err.to_string().contains(&meta.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn a_missing_context_is_an_error_not_the_default_socket() {
        let dir = config_dir(Some("gone"), &[]);
        let err = resolve(&settings(dir.path())).unwrap_err();
        assert!(
            matches!(cause(&err), ContextError::NoSuchContext { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("docker context ls"), "{err}");
        assert!(err.to_string().contains("config.json`"), "{err}");
        // Named by DOCKER_CONTEXT, it is not config.json's doing.
        let s = ClientSettings {
            docker_context: Some("gone".into()),
            ..settings(dir.path())
        };
        let err = resolve(&s).unwrap_err();
        assert!(matches!(err, ContextError::NoSuchContext { .. }), "{err}");
    }

    #[test]
    fn an_unreadable_config_json_is_an_error_naming_the_file() {
        let dir = config_dir(None, &[]);
        // A directory where the file should be: read fails with EISDIR
        // even as root (a chmod 000 file would not stop root).
        fs::create_dir(dir.path().join("config.json")).unwrap();
        let err = resolve(&settings(dir.path())).unwrap_err();
        assert!(
            matches!(cause(&err), ContextError::Unreadable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("config.json`"), "{err}");
    }

    #[test]
    fn a_tls_context_is_refused() {
        let dir = config_dir(Some("remote"), &[("remote", "tcp://h:2376")]);
        let id = format!("{:x}", Sha256::digest(b"remote"));
        fs::create_dir_all(dir.path().join("contexts/tls").join(id).join("docker")).unwrap();
        let err = resolve(&settings(dir.path())).unwrap_err();
        assert!(matches!(cause(&err), ContextError::Tls { .. }), "{err}");
    }

    #[test]
    fn a_host_volmig_cannot_reach_is_an_error_naming_where_it_came_from() {
        let dir = config_dir(Some("remote"), &[("remote", "ssh://u@h")]);
        let err = resolve(&settings(dir.path())).unwrap_err();
        assert!(matches!(err, ContextError::CurrentContext { .. }), "{err}");
        assert!(err.to_string().contains("`ssh://u@h`"), "{err}");
        for (host, flag) in [
            ("bogus", true),
            ("unix://rel.sock", false),
            ("tcp://", true),
        ] {
            let s = ClientSettings {
                host_flag: flag.then(|| host.to_string()),
                docker_host: (!flag).then(|| host.to_string()),
                ..settings(dir.path())
            };
            let err = resolve(&s).unwrap_err();
            let origin = if flag { "-H" } else { "DOCKER_HOST" };
            assert!(
                matches!(&err, ContextError::BadHost { origin: o, .. } if o == origin),
                "{host}: {err}"
            );
        }
        for host in ["unix:///run/d.sock", "tcp://h:2375", "http://h:2375"] {
            let s = ClientSettings {
                host_flag: Some(host.into()),
                ..settings(dir.path())
            };
            assert_eq!(resolve(&s).unwrap().host, host);
        }
    }
}
