//! CPU seconds a bench phase used, this process's and the database backends', read from
//! `/proc`: what the work costs, apart from how much of the machine it got.

use serde::Serialize;

/// CPU seconds a phase used, where they can be read (see [`cpu_seconds`]): what the work costs,
/// apart from how much of the machine it got.
#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    /// This process (the sink or the verifier and its threads).
    pub client_cpu_seconds: Option<f64>,
    /// The database backends doing the work (local databases only).
    pub server_cpu_seconds: Option<f64>,
}

/// CPU use over one phase: this process, and the given database backends.
pub struct Meter {
    pids: Vec<i32>,
    client: Option<f64>,
    server: Option<f64>,
}

impl Meter {
    pub fn start(pids: &[i32]) -> Self {
        Self {
            pids: pids.to_vec(),
            client: cpu_seconds("self"),
            server: backends_cpu(pids),
        }
    }

    pub fn stop(self) -> Cpu {
        let delta = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
        Cpu {
            client_cpu_seconds: delta(self.client, cpu_seconds("self")),
            server_cpu_seconds: delta(self.server, backends_cpu(&self.pids)),
        }
    }
}

pub fn backends_cpu(pids: &[i32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|pid| cpu_seconds(&pid.to_string()))
        .sum::<Option<f64>>()
}

/// User plus system CPU seconds process `pid` (or `self`) has used, from `/proc/<pid>/stat`;
/// `None` where that cannot be read (not Linux, or the process is gone).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command name, is in parentheses and may hold spaces: count after it.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15: the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // In clock ticks, which Linux reports at USER_HZ = 100 whatever the kernel's HZ.
    Some((utime + stime) as f64 / 100.0)
}

/// `client / server` microseconds of CPU per record (`-` where not measured).
pub fn cpu_text(cpu: &Cpu, records: u64) -> String {
    let per = |s: Option<f64>| {
        s.map_or("-".to_string(), |s| {
            format!("{:.1}", s * 1e6 / records.max(1) as f64)
        })
    };
    format!(
        "{} / {}",
        per(cpu.client_cpu_seconds),
        per(cpu.server_cpu_seconds)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu() {
        if std::path::Path::new("/proc/self/stat").exists() {
            let spin: u64 = (0..5_000_000u64).fold(0, |a, x| a.wrapping_add(x * x));
            assert!(spin > 0);
            assert!(cpu_seconds("self").is_some_and(|s| s >= 0.0));
        }
        assert_eq!(cpu_seconds("no-such-process"), None);
        let cpu = Cpu {
            client_cpu_seconds: Some(0.5),
            server_cpu_seconds: None,
        };
        assert_eq!(cpu_text(&cpu, 1000), "500.0 / -");
    }
}
