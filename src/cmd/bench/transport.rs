//! `preflight bench gateway --transport in-process|mcp-stdio|mcp-http|all`: what reaching the
//! built-in layer over MCP costs, per call, against calling it in this process.
//!
//! Every transport runs the SAME layer on the SAME database and policy file: in-process it is
//! `preflight_serve::Layer` (what `preflight serve` runs); over stdio a `preflight serve --mcp
//! stdio` child, over streamable HTTP a `preflight serve --mcp http` child on a loopback port
//! with a bearer JWT — both reached through preflight's own MCP client
//! (`preflight_targets::RemoteGateway`), as `preflight probe --target` reaches them. Calls are
//! sequential from one client, interleaved round by round with the transports' order rotating,
//! so a slow phase of the machine hits every transport alike. Calls per second is one client's
//! (1000 / mean ms), not a server's capacity.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight_enforcer::{CallContext, Gateway, Principal};
use preflight_serve::{Layer, LayerConfig};
use preflight_targets::{Connection, RemoteGateway};
use serde_json::{json, Value};

use super::error_chain;
use super::gateway::{chrono_day, stats, Lcg, TENANT};
use super::summary::{Better, Line};
use crate::error::CliError;

/// One way of reaching the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    InProcess,
    McpStdio,
    McpHttp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::InProcess => "in-process",
            Transport::McpStdio => "mcp-stdio",
            Transport::McpHttp => "mcp-http",
        }
    }

    /// `--transport` values (each may be a comma-separated list, or `all`), in-process first.
    pub fn parse_all(values: &[String]) -> Result<Vec<Transport>, CliError> {
        let mut out = Vec::new();
        for v in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
            let add: &[Transport] = match v {
                "in-process" => &[Transport::InProcess],
                "mcp-stdio" => &[Transport::McpStdio],
                "mcp-http" => &[Transport::McpHttp],
                "all" => &[
                    Transport::InProcess,
                    Transport::McpStdio,
                    Transport::McpHttp,
                ],
                other => {
                    return Err(CliError::config(format!(
                    "--transport: expected in-process, mcp-stdio, mcp-http or all, found `{other}`"
                )))
                }
            };
            out.extend_from_slice(add);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// The orders-only policy every transport runs when `--policy` names none: the shop's `orders`
/// fields (shipping address masked), `db_get` and `db_query` only, the production preset's
/// budgets with its per-tenant quotas lifted (a benchmark makes thousands of calls an hour), no
/// audit sink.
const BENCH_POLICY: &str = r#"version: 1
name: bench-transport
extends: prod
tenant:
  setting: app.tenant_id
  column: tenant_id
models:
  orders:
    tools: [db_query, db_get]
    fields:
      id: allow
      customer_id: allow
      carrier_id: allow
      status: allow
      total: allow
      created_at: allow
      shipping_address: mask
quotas:
  calls_per_hour: 1000000000
  rows_per_hour: 1000000000
"#;

/// The layer behind every transport, and the server processes to stop.
pub struct Transports {
    pub gateways: Vec<(Transport, Arc<dyn Gateway>)>,
    remote: Vec<Arc<RemoteGateway>>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Transports {
    /// Starts `transports` over the agent login `agent_url` with the policy file `policy` (the
    /// bench policy when `None`).
    pub async fn start(
        transports: &[Transport],
        policy: Option<&Path>,
        agent_url: &str,
    ) -> Result<Transports, CliError> {
        let dir = tempfile::tempdir()
            .map_err(|e| CliError::infra(format!("cannot make a temporary folder: {e}")))?;
        let policy: PathBuf = match policy {
            Some(p) => p.to_path_buf(),
            None => {
                let p = dir.path().join("bench-policy.yaml");
                std::fs::write(&p, BENCH_POLICY)
                    .map_err(|e| CliError::infra(format!("cannot write the bench policy: {e}")))?;
                p
            }
        };
        let exe = std::env::current_exe()
            .map_err(|e| CliError::infra(format!("cannot find preflight's own binary: {e}")))?;
        let principal = principal();
        let mut out = Transports {
            gateways: Vec::new(),
            remote: Vec::new(),
            children: Vec::new(),
            _dir: dir,
        };
        for t in transports {
            let gw: Arc<dyn Gateway> = match t {
                Transport::InProcess => {
                    let layer = Layer::start(&LayerConfig {
                        policy_path: policy.clone(),
                        database_url: agent_url.to_string(),
                        secret_key: None,
                        faults: Default::default(),
                        instance: None,
                    })
                    .await
                    .map_err(|e| CliError::infra(error_chain(&e)))?;
                    layer.gateway.clone()
                }
                Transport::McpStdio => {
                    let text = format!(
                        "name: bench mcp-stdio\ntransport:\n  stdio:\n    command: {}\n    args: [\"serve\", \"--mcp\", \"stdio\", \"--policy\", {}]\ntimeout: 30s\nprincipal:\n  env: {{PREFLIGHT_TENANT: \"{{tenant}}\", PREFLIGHT_USER: \"{{user}}\", PREFLIGHT_ROLES: \"{{roles}}\"}}\ntools: {{db_query: {{}}, db_get: {{}}}}\n",
                        quoted(&exe),
                        quoted(&policy)
                    );
                    let g = out.connect(&text, agent_url, &principal).await?;
                    out.remote.push(Arc::clone(&g));
                    g
                }
                Transport::McpHttp => {
                    let port = std::net::TcpListener::bind("127.0.0.1:0")
                        .and_then(|l| l.local_addr())
                        .map(|a| a.port())
                        .map_err(|e| CliError::infra(format!("no free port: {e}")))?;
                    let key = hex::encode(rand_key());
                    let child = Command::new(&exe)
                        .args(["serve", "--mcp", "http", "--listen"])
                        .arg(format!("127.0.0.1:{port}"))
                        .arg("--policy")
                        .arg(&policy)
                        .args(["--jwt-hs256-key-env", "PREFLIGHT_BENCH_JWT_KEY"])
                        .env("DATABASE_URL", agent_url)
                        .env("PREFLIGHT_BENCH_JWT_KEY", &key)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .map_err(|e| {
                            CliError::infra(format!("cannot start preflight serve: {e}"))
                        })?;
                    out.children.push(child);
                    wait_listening(port).await?;
                    let text = format!(
                        "name: bench mcp-http\ntransport: {{url: \"http://127.0.0.1:{port}/mcp\", protocol: mcp}}\ntimeout: 30s\nprincipal:\n  jwt: {{alg: HS256, key: \"{key}\", claims: {{tenant: tenant, user: sub, roles: roles}}}}\ntools: {{db_query: {{}}, db_get: {{}}}}\n"
                    );
                    let g = out.connect(&text, agent_url, &principal).await?;
                    out.remote.push(Arc::clone(&g));
                    g
                }
            };
            out.gateways.push((*t, gw));
        }
        Ok(out)
    }

    async fn connect(
        &self,
        profile_text: &str,
        agent_url: &str,
        who: &Principal,
    ) -> Result<Arc<RemoteGateway>, CliError> {
        let profile = preflight_targets::profile::load_str(profile_text, "<bench profile>")
            .map_err(|e| CliError::infra(format!("the bench's own profile is invalid: {e}")))?;
        let conn = Connection::new(Arc::new(profile), agent_url.to_string(), ".".to_string())
            .map_err(|e| CliError::infra(format!("cannot make a run folder: {e}")))?;
        RemoteGateway::connect(conn, who)
            .await
            .map(Arc::new)
            .map_err(|e| CliError::infra(format!("cannot reach the served layer: {e}")))
    }

    /// Ends every MCP session and server process.
    pub async fn stop(mut self) {
        for g in &self.remote {
            g.shutdown().await;
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Transports {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn quoted(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap_or_default()
}

fn rand_key() -> [u8; 32] {
    // The bench's own JWT key: per run, never shown.
    let mut k = [0u8; 32];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let seed = now ^ u64::from(std::process::id()).rotate_left(32);
    let mut l = Lcg(seed ^ 0x9e37_79b9_7f4a_7c15);
    for b in &mut k {
        *b = l.next() as u8;
    }
    k
}

async fn wait_listening(port: u16) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(CliError::infra(format!(
                "preflight serve did not listen on port {port} within 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub fn principal() -> Principal {
    Principal {
        tenant: TENANT.to_string(),
        user: "bench".to_string(),
        roles: Vec::new(),
    }
}

/// What an MCP transport may add to the in-process p50 (issue 15's goal for stdio, `db_get`;
/// applied to both workloads and both transports).
const GOAL_ADDED_MS: f64 = 0.3;

/// Times `db_get` and `db_query` on every transport, prints them side by side and returns the
/// summary lines: each MCP transport's p50 against the in-process p50 (the floor) plus
/// [`GOAL_ADDED_MS`]. Without in-process among the transports there is no floor and no line.
pub async fn compare(
    transports: &Transports,
    ids: &[i64],
    warmup: u32,
    iterations: u32,
) -> Result<Vec<Line>, CliError> {
    let ctx = CallContext::new(principal());
    let gws = &transports.gateways;
    let mut rng = Lcg(0x5eed_1234_abcd_ef01);
    eprintln!("timing db_get on {} transport(s) ...", gws.len());
    let get = measure(gws.len(), warmup, iterations, &mut rng, |rng, i| {
        let id = ids[(rng.next() % ids.len() as u64) as usize];
        call(
            &gws[i].1,
            &ctx,
            "db_get",
            json!({"model": "orders", "id": id}),
        )
    })
    .await?;
    eprintln!(
        "timing a filtered db_query on {} transport(s) ...",
        gws.len()
    );
    let query = measure(gws.len(), warmup, iterations, &mut rng, |rng, i| {
        let day = rng.next() % 1800;
        let (from, to) = (chrono_day(day), chrono_day(day + 1));
        call(
            &gws[i].1,
            &ctx,
            "db_query",
            json!({"model": "orders",
                   "where": [{"field": "created_at", "op": "gte", "value": from},
                             {"field": "created_at", "op": "lt", "value": to}],
                   "limit": 100}),
        )
    })
    .await?;
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "workload / transport", "p50 ms", "p99 ms", "mean ms", "calls/s", "p50 vs in-proc"
    );
    let mut stdio_added = None;
    let mut lines = Vec::new();
    for (name, samples) in [
        ("db_get (primary key)", &get),
        ("db_query (1 day, <=100 rows)", &query),
    ] {
        let base = gws
            .iter()
            .position(|(t, _)| *t == Transport::InProcess)
            .map(|i| stats(&samples[i]).p50);
        for (i, (t, _)) in gws.iter().enumerate() {
            let st = stats(&samples[i]);
            let added = base.map(|b| st.p50 - b);
            if *t == Transport::McpStdio && name.starts_with("db_get") {
                stdio_added = added;
            }
            if let (Some(b), true) = (base, *t != Transport::InProcess) {
                let workload = name.split(' ').next().unwrap_or(name);
                lines.push(
                    Line::new(
                        format!("{workload} p50 via {}", t.as_str()),
                        "ms",
                        Better::Lower,
                        b + GOAL_ADDED_MS,
                        st.p50,
                    )
                    .floor(b)
                    .basis(format!(
                        "the in-process p50 (the floor) + {GOAL_ADDED_MS} ms; figure {:+.3} ms",
                        st.p50 - b
                    )),
                );
            }
            println!(
                "{:<40} {:>9.3} {:>9.3} {:>9.3} {:>9.0} {:>12}",
                format!("{name}: {}", t.as_str()),
                st.p50,
                st.p99,
                st.mean,
                1000.0 / st.mean,
                added
                    .map(|a| format!("{a:+.3} ms"))
                    .unwrap_or_else(|| "-".to_string())
            );
        }
    }
    if let Some(added) = stdio_added {
        println!();
        println!(
            "goal: mcp-stdio adds < 0.3 ms p50 over in-process (db_get): {} ({added:+.3} ms)",
            if added < GOAL_ADDED_MS {
                "met"
            } else {
                "not met"
            }
        );
    }
    if gws.iter().all(|(t, _)| *t != Transport::InProcess) {
        println!("no summary lines: in-process, the floor, was not among the transports");
    }
    Ok(lines)
}

async fn call(
    gw: &Arc<dyn Gateway>,
    ctx: &CallContext,
    tool: &str,
    args: Value,
) -> Result<(), String> {
    gw.call(ctx, tool, args)
        .await
        .map(|_| ())
        .map_err(|e| e.to_json().to_string())
}

/// `warmup` untimed and `iterations` timed rounds; each round calls every transport with the
/// same input, in an order that rotates.
async fn measure<F, Fut>(
    n: usize,
    warmup: u32,
    iterations: u32,
    rng: &mut Lcg,
    mut call: F,
) -> Result<Vec<Vec<Duration>>, CliError>
where
    F: FnMut(&mut Lcg, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut out = vec![Vec::new(); n];
    for round in 0..(warmup + iterations) {
        let seed = rng.0;
        for k in 0..n {
            let i = (round as usize + k) % n;
            rng.0 = seed;
            let start = Instant::now();
            call(rng, i)
                .await
                .map_err(|e| CliError::infra(format!("a benchmark call failed: {e}")))?;
            if round >= warmup {
                out[i].push(start.elapsed());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_with_all_and_lists() {
        let p =
            |v: &[&str]| Transport::parse_all(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            p(&["all"]).unwrap(),
            [
                Transport::InProcess,
                Transport::McpStdio,
                Transport::McpHttp
            ]
        );
        assert_eq!(
            p(&["mcp-http,in-process", "mcp-http"]).unwrap(),
            [Transport::InProcess, Transport::McpHttp]
        );
        let e = p(&["grpc"]).unwrap_err().to_string();
        assert!(
            e.contains("expected in-process, mcp-stdio, mcp-http or all"),
            "{e}"
        );
    }
}
