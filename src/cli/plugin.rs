//! The command line of `docker volmig ...`: the same binary, run by the
//! docker CLI as `docker-volmig [docker's global options] volmig ARGS`
//! (seen with the 20.10 and 28.x CLIs: the options typed before `volmig`
//! come first, then the plugin's name, then its arguments), or as
//! `docker-volmig docker-cli-plugin-metadata` when the CLI lists plugins.
//!
//! Of docker's global options, `-H`, `--context` and `--config` choose the
//! daemon (`engine::context`); `-D` and `--log-level` are accepted and
//! mean nothing here; the TLS options are refused (volmig speaks no TLS).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::docker_plugin::{PLUGIN_FILE, PLUGIN_NAME};

/// The docker CLI's global options that choose the daemon.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DockerGlobals {
    pub host: Option<String>,
    pub context: Option<String>,
    pub config: Option<PathBuf>,
}

/// How this process was started.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// `volmig ARGS`: the arguments as they are.
    Standalone(Vec<OsString>),
    /// `docker-volmig docker-cli-plugin-metadata`.
    Metadata,
    /// `docker volmig ARGS`: `volmig ARGS` and docker's global options.
    Plugin {
        args: Vec<OsString>,
        docker: DockerGlobals,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PluginArgsError {
    #[error("docker option `{0}` needs a value")]
    MissingValue(String),
    #[error("docker option `{0}`: volmig does not speak TLS to the daemon; use a unix socket (-H unix:///path/docker.sock)")]
    Tls(String),
    #[error("unknown docker option `{0}` before `volmig`: put volmig's options after it (docker volmig --help)")]
    UnknownOption(String),
    #[error("`{PLUGIN_FILE}` is a docker CLI plugin: run it as `docker volmig ...` (expected `volmig` as its first argument, got `{0}`)")]
    NotFromDocker(String),
}

/// Sorts the process's arguments into an invocation: a plugin when the
/// executable is named `docker-volmig`, else the arguments as they are.
pub fn classify(argv: Vec<OsString>) -> Result<Invocation, PluginArgsError> {
    let is_plugin = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == OsStr::new(PLUGIN_FILE));
    if !is_plugin {
        return Ok(Invocation::Standalone(argv));
    }
    if argv
        .get(1)
        .is_some_and(|a| a == "docker-cli-plugin-metadata")
    {
        return Ok(Invocation::Metadata);
    }
    let mut docker = DockerGlobals::default();
    let mut rest = argv.into_iter().skip(1);
    while let Some(arg) = rest.next() {
        if arg == PLUGIN_NAME {
            let mut args = vec![OsString::from(PLUGIN_NAME)];
            args.extend(rest);
            return Ok(Invocation::Plugin { args, docker });
        }
        let text = arg.to_string_lossy().into_owned();
        take_option(&text, &mut rest, &mut docker)?;
    }
    Err(PluginArgsError::NotFromDocker("nothing".into()))
}

/// One docker global option (`--name value`, `--name=value`, `-H value`,
/// `-Hvalue`) into `docker`.
fn take_option(
    arg: &str,
    rest: &mut impl Iterator<Item = OsString>,
    docker: &mut DockerGlobals,
) -> Result<(), PluginArgsError> {
    let (name, inline) = match arg.strip_prefix("--") {
        Some(long) => match long.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (long.to_string(), None),
        },
        None => match arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            Some(short) => {
                let (n, v) = short.split_at(1);
                let v = v.strip_prefix('=').unwrap_or(v);
                (n.to_string(), (!v.is_empty()).then(|| v.to_string()))
            }
            None => return Err(PluginArgsError::NotFromDocker(arg.to_string())),
        },
    };
    let mut value = || {
        inline
            .clone()
            .or_else(|| rest.next().map(|v| v.to_string_lossy().into_owned()))
            .ok_or_else(|| PluginArgsError::MissingValue(arg.to_string()))
    };
    match name.as_str() {
        "H" | "host" => docker.host = Some(value()?),
        "c" | "context" => docker.context = Some(value()?),
        "config" => docker.config = Some(PathBuf::from(value()?)),
        "l" | "log-level" => drop(value()?),
        "D" | "debug" => {}
        "tls" | "tlsverify" | "tlscacert" | "tlscert" | "tlskey" => {
            return Err(PluginArgsError::Tls(arg.to_string()))
        }
        _ => return Err(PluginArgsError::UnknownOption(arg.to_string())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn volmig_by_its_own_name_is_left_alone() {
        let a = argv(&["/usr/bin/volmig", "docker-cli-plugin-metadata"]);
        assert_eq!(classify(a.clone()).unwrap(), Invocation::Standalone(a));
    }

    #[test]
    fn the_docker_cli_asks_for_metadata() {
        let a = argv(&[
            "/root/.docker/cli-plugins/docker-volmig",
            "docker-cli-plugin-metadata",
        ]);
        assert_eq!(classify(a).unwrap(), Invocation::Metadata);
    }

    #[test]
    fn docker_options_before_the_plugin_name_choose_the_daemon() {
        let a = argv(&[
            "docker-volmig",
            "-H",
            "unix:///s",
            "--log-level=error",
            "-D",
            "--config",
            "/cfg",
            "volmig",
            "-H",
            "x",
            "verify",
            "--all",
        ]);
        let Invocation::Plugin { args, docker } = classify(a).unwrap() else {
            panic!("not a plugin run");
        };
        assert_eq!(args, argv(&["volmig", "-H", "x", "verify", "--all"]));
        assert_eq!(docker.host.as_deref(), Some("unix:///s"));
        assert_eq!(docker.config.as_deref(), Some(Path::new("/cfg")));
        let a = argv(&["docker-volmig", "-cweb", "volmig", "scan"]);
        let Invocation::Plugin { docker, .. } = classify(a).unwrap() else {
            panic!("not a plugin run");
        };
        assert_eq!(docker.context.as_deref(), Some("web"));
    }

    #[test]
    fn bad_plugin_command_lines_say_what_to_do() {
        let err = |a: &[&str]| classify(argv(a)).unwrap_err().to_string();
        assert!(err(&["docker-volmig", "verify"]).contains("run it as `docker volmig"));
        assert!(err(&["docker-volmig"]).contains("run it as `docker volmig"));
        assert!(err(&["docker-volmig", "--tlsverify", "volmig"]).contains("TLS"));
        assert!(err(&["docker-volmig", "--context"]).contains("needs a value"));
        assert!(err(&["docker-volmig", "--nope", "volmig"]).contains("unknown docker option"));
    }
}
