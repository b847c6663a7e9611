//! The collector under measurement: in this process or as its own `collector serve`, and what /proc says of its
//! CPU and memory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use collector::app;
use collector::auth::ApiKeys;
use collector::config::{Durability, ServeConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::args::KEY;

/// A collector on a loopback port, without rate limiting, with the bench's key: in this process (queries), or
/// the real binary as a child process (ingest), so that its own CPU and memory can be read from /proc.
pub(crate) struct Collector {
    pub addr: std::net::SocketAddr,
    inner: Running,
}

enum Running {
    InProcess {
        shutdown: CancellationToken,
        server: tokio::task::JoinHandle<Result<(), app::AppError>>,
    },
    Child(tokio::process::Child),
}

impl Collector {
    pub async fn start(cfg: &ServeConfig, url: &str) -> anyhow::Result<Collector> {
        let mut cfg = cfg.clone();
        cfg.rate_limit_per_sec = 0;
        if cfg.spool_dir.is_none() {
            let dir = std::env::temp_dir().join(format!(
                "collector-bench-{}/spool-in-process",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            cfg.spool_dir = Some(dir);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let keys = ApiKeys::parse(&format!("bench:{KEY}"))?;
        let server = {
            let (url, shutdown) = (url.to_string(), shutdown.clone());
            tokio::spawn(async move { app::run(&cfg, &url, keys, listener, shutdown).await })
        };
        wait_healthy(addr).await;
        Ok(Collector {
            addr,
            inner: Running::InProcess { shutdown, server },
        })
    }

    /// `collector serve` (the release binary beside this one, or `COLLECTOR_BIN`) against `url`, with default
    /// settings but the durability, and its spool (emptied first) in `spool_dir`.
    pub async fn start_process(
        url: &str,
        durability: Durability,
        spool_dir: &std::path::Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Collector> {
        use tokio::io::AsyncBufReadExt;
        let _ = std::fs::remove_dir_all(spool_dir);
        let bin = match std::env::var_os("COLLECTOR_BIN") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe()?.with_file_name("collector"),
        };
        let mut child = tokio::process::Command::new(&bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                url,
                "--rate-limit-per-sec",
                "0",
            ])
            .args(["--api-keys", &format!("bench:{KEY}")])
            .args(["--durability", durability_arg(durability)])
            .arg("--spool-dir")
            .arg(spool_dir)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} serve", bin.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut addr = None;
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("Collector listening on http://") {
                addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                break;
            }
        }
        let addr = addr.context("collector serve did not say where it listens")?;
        wait_healthy(addr).await;
        Ok(Collector {
            addr,
            inner: Running::Child(child),
        })
    }

    /// The child's pid, when the collector is a child process.
    pub fn pid(&self) -> Option<u32> {
        match &self.inner {
            Running::Child(c) => c.id(),
            Running::InProcess { .. } => None,
        }
    }

    /// Graceful shutdown (SIGTERM for the child): drains the queue into PostgreSQL.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self.inner {
            Running::InProcess { shutdown, server } => {
                shutdown.cancel();
                server.await??;
            }
            Running::Child(mut child) => {
                if let Some(pid) = child.id() {
                    std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()?;
                }
                let status = child.wait().await?;
                anyhow::ensure!(status.success(), "collector serve exited with {status}");
            }
        }
        Ok(())
    }
}

pub(crate) async fn wait_healthy(addr: std::net::SocketAddr) {
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Puts PostgreSQL (the postmaster whose data directory is `pg_data`, and every process it has started; those
/// it starts later inherit it) on core 0, and this process with every thread on core 1: children started from
/// here (the collector) inherit core 1.
pub(crate) fn pin(pg_data: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2,
        "--pinned needs two cores"
    );
    let pid = std::fs::read_to_string(pg_data.join("postmaster.pid"))?
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let children = std::process::Command::new("pgrep")
        .args(["-P", &pid])
        .output()?;
    let mut postgres = vec![pid];
    postgres.extend(
        String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_string),
    );
    let me = std::process::id().to_string();
    for (core, pids) in [("0", postgres), ("1", vec![me])] {
        for p in pids {
            let ok = std::process::Command::new("taskset")
                .args(["-a", "-p", "-c", core, &p])
                .stdout(std::process::Stdio::null())
                .status()?
                .success();
            anyhow::ensure!(ok, "taskset -a -p -c {core} {p} failed");
        }
    }
    Ok(())
}

/// CPU seconds a process (`self` or a pid) has used, user + system, from /proc.
pub(crate) fn process_cpu_secs(pid: &str) -> f64 {
    let ticks = clock_ticks();
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0)
}

/// CPU seconds PostgreSQL has used: its postmaster with the children it has reaped, and every live child
/// (backends, checkpointer, WAL writer, autovacuum).
pub(crate) fn pg_cpu_secs(pg_data: &std::path::Path) -> f64 {
    let Some(postmaster) = std::fs::read_to_string(pg_data.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok())
    else {
        return 0.0;
    };
    let ticks = clock_ticks();
    // (ppid, own + reaped children's ticks) of a process.
    let stat = |pid: &str| -> Option<(u32, f64)> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Some((f.get(1)?.parse().ok()?, n(11) + n(12) + n(13) + n(14)))
    };
    let mut total = stat(&postmaster.to_string()).map_or(0.0, |(_, t)| t);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some((ppid, t)) = stat(pid) {
            if ppid == postmaster {
                total += t;
            }
        }
    }
    total / ticks
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0)
}

/// Peak resident memory of a process (`self` or a pid), MiB.
pub(crate) fn peak_rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn durability_arg(d: Durability) -> &'static str {
    match d {
        Durability::Spool => "spool",
        Durability::Memory => "memory",
    }
}
