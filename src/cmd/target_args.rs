//! `--target`: which enforcement layer a run talks to, shared by `preflight probe` and
//! `preflight agent run`, turned into a [`TargetKind`] before anything starts.
//!
//! `builtin` (default); a target profile `FILE.yaml`; or a shorthand that uses the default profile
//! (our contract's tool names and shapes): `mcp-stdio -- CMD ARGS…`, `mcp-http URL`, `http URL`.

use std::path::Path;
use std::sync::Arc;

use clap::Args;
use preflight_probes::target::TargetKind;
use preflight_targets::profile::{self, Profile, Transport};

use crate::error::CliError;

#[derive(Args, Debug, Default)]
pub struct TargetArgs {
    /// The enforcement layer: `builtin`, a target profile `FILE.yaml`, `mcp-stdio` (the command
    /// after `--`), `mcp-http URL` or `http URL`.
    #[arg(long, num_args = 1..=2, value_names = ["TARGET", "URL"], default_value = "builtin")]
    pub target: Vec<String>,

    /// The command of an `mcp-stdio` target and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl TargetArgs {
    pub fn to_kind(&self) -> Result<TargetKind, CliError> {
        let words: Vec<&str> = self.target.iter().map(String::as_str).collect();
        let shorthand = |transport: Transport| {
            Ok(TargetKind::Remote {
                profile: Arc::new(Profile::default_for(transport)),
                profile_dir: std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| ".".to_string()),
            })
        };
        let no_command = |what: &str| -> Result<(), CliError> {
            if self.command.is_empty() {
                Ok(())
            } else {
                Err(CliError::config(format!(
                    "--target {what}: a command after `--` is only for `--target mcp-stdio`"
                )))
            }
        };
        match words.as_slice() {
            [] | ["builtin"] => {
                no_command("builtin")?;
                Ok(TargetKind::Builtin)
            }
            ["mcp-stdio"] => {
                let Some((command, args)) = self.command.split_first() else {
                    return Err(CliError::config(
                        "--target mcp-stdio needs the server's command after `--`, e.g. `--target mcp-stdio -- python3 server.py`",
                    ));
                };
                shorthand(Transport::McpStdio {
                    command: command.clone(),
                    args: args.to_vec(),
                    env: Default::default(),
                })
            }
            [kind @ ("mcp-http" | "http")] => Err(CliError::config(format!(
                "--target {kind} needs a URL, e.g. `--target {kind} http://127.0.0.1:8080/mcp`"
            ))),
            [kind @ ("mcp-http" | "http"), url] => {
                no_command(kind)?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(CliError::config(format!(
                        "--target {kind}: expected an http:// or https:// URL, found `{url}`"
                    )));
                }
                shorthand(if *kind == "http" {
                    Transport::Http {
                        url: url.to_string(),
                    }
                } else {
                    Transport::McpHttp {
                        url: url.to_string(),
                    }
                })
            }
            [file] if file.ends_with(".yaml") || file.ends_with(".yml") => {
                no_command("FILE.yaml")?;
                let path = Path::new(file);
                let profile = profile::load(path).map_err(CliError::config)?;
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let dir = dir.canonicalize().map_err(|e| {
                    CliError::config(format!("{}: cannot resolve its folder: {e}", path.display()))
                })?;
                Ok(TargetKind::Remote {
                    profile: Arc::new(profile),
                    profile_dir: dir.display().to_string(),
                })
            }
            other => Err(CliError::config(format!(
                "--target: expected `builtin`, a profile `FILE.yaml`, `mcp-stdio -- CMD…`, `mcp-http URL` or `http URL`, found `{}`",
                other.join(" ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        t: TargetArgs,
    }

    fn kind(args: &[&str]) -> Result<TargetKind, CliError> {
        let mut all = vec!["test"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("flags parse").t.to_kind()
    }

    #[test]
    fn every_form_of_target() {
        assert!(matches!(kind(&[]).unwrap(), TargetKind::Builtin));
        assert!(matches!(
            kind(&["--target", "builtin"]).unwrap(),
            TargetKind::Builtin
        ));
        let k = kind(&["--target", "mcp-stdio", "--", "python3", "server.py", "--x"]).unwrap();
        let TargetKind::Remote { profile, .. } = k else {
            panic!("remote expected")
        };
        assert_eq!(
            profile.transport,
            Transport::McpStdio {
                command: "python3".into(),
                args: vec!["server.py".into(), "--x".into()],
                env: Default::default()
            }
        );
        let k = kind(&["--target", "mcp-http", "http://127.0.0.1:9/mcp"]).unwrap();
        assert!(
            matches!(k, TargetKind::Remote { ref profile, .. } if profile.transport.kind() == "mcp-http")
        );
        let k = kind(&["--target", "http", "http://127.0.0.1:9"]).unwrap();
        assert!(
            matches!(k, TargetKind::Remote { ref profile, .. } if profile.transport.kind() == "http")
        );
    }

    #[test]
    fn malformed_targets_are_usage_errors() {
        for (args, want) in [
            (vec!["--target", "mcp-stdio"], "needs the server's command"),
            (vec!["--target", "mcp-http"], "needs a URL"),
            (vec!["--target", "http", "ftp://x"], "expected an http://"),
            (vec!["--target", "nope"], "expected `builtin`"),
            (
                vec!["--target", "builtin", "--", "x"],
                "only for `--target mcp-stdio`",
            ),
            (
                vec!["--target", "/nonexistent/p.yaml"],
                "cannot read the target profile",
            ),
        ] {
            let e = kind(&args).unwrap_err();
            assert!(
                matches!(e, CliError::Config(_)) && e.to_string().contains(want),
                "{args:?}: {e}"
            );
        }
    }
}
