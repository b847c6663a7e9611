//! One local Citus cluster (a coordinator and two workers) per test binary, started by `scripts/citus.sh`, the
//! script the README gives users; each test gets databases of its own on it. Without Citus installed the
//! Citus tests say so and pass, unless `COLLECTOR_REQUIRE_CITUS` is set (`.ci/run` sets it when it built
//! Citus), where that is a failure.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/citus.sh").to_string()
}

/// Whether the system's PostgreSQL has Citus (`citus.so` in its library directory); when it has not, says the
/// tests are skipped, or fails where `COLLECTOR_REQUIRE_CITUS` is set.
fn available() -> bool {
    let installed = std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|dirs| {
        dirs.flatten()
            .any(|d| d.path().join("lib/citus.so").exists())
    });
    if !installed {
        assert!(
            std::env::var_os("COLLECTOR_REQUIRE_CITUS").is_none(),
            "COLLECTOR_REQUIRE_CITUS is set but Citus is not installed"
        );
        eprintln!(
            "Skipped: Citus is not installed in the system's PostgreSQL (install its packages)"
        );
    }
    installed
}

/// Three consecutive free TCP ports on 127.0.0.1.
fn free_ports() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + (rand::random::<u16>() % 30_000);
        let free = (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no three free consecutive ports");
}

/// A cluster in a directory of its own, on three free ports: the one the tests share, or a test's own (to stop
/// a node). Stopped when dropped.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    /// Starts one in `dir`; `None` without Citus.
    pub fn start(dir: &std::path::Path) -> Option<Cluster> {
        if !available() {
            return None;
        }
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            port: free_ports(),
        };
        cluster.run(&["start"]);
        Some(cluster)
    }

    /// `scripts/citus.sh start <dir> <port>` or `<command> <dir> [args]`; its output.
    fn run(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg(args[0]).arg(&self.dir);
        if args[0] == "start" {
            cmd.arg(self.port.to_string()).env("CITUS_FSYNC", "off");
        }
        cmd.args(&args[1..]);
        let out = cmd.output().expect("running scripts/citus.sh");
        assert!(
            out.status.success(),
            "scripts/citus.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The coordinator's `collector` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=collector",
            self.port
        )
    }

    /// Stops node `n` (0 the coordinator, 1 and 2 the workers).
    pub fn stop_node(&self, n: u8) {
        self.run(&["stop", &n.to_string()]);
    }

    /// Starts every stopped node again.
    pub fn start_again(&self) {
        self.run(&["start"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// The cluster the tests share, in the temporary directory; clusters of earlier runs whose process is gone are
/// stopped and removed first.
fn shared() -> Option<Cluster> {
    for dir in super::pg::dirs_of_dead_runs("collector-citus-it-") {
        let _ = Command::new("bash")
            .args([&script(), "stop"])
            .arg(&dir)
            .status();
        let _ = std::fs::remove_dir_all(dir);
    }
    let dir = std::env::temp_dir().join(format!("collector-citus-it-{}", std::process::id()));
    let cluster = Cluster::start(&dir)?;
    // Stopped and removed when this test process ends, however it ends (statics are never dropped).
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; bash '{script}' stop '{dir}'; rm -rf '{dir}'",
        pid = std::process::id(),
        script = script(),
        dir = dir.display(),
    );
    // `setsid --fork` returns at once, the watchdog left running in a session of its own.
    let started = Command::new("setsid")
        .args(["--fork", "sh", "-c", &watchdog])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("starting the cluster's watchdog");
    assert!(started.success(), "setsid: {started}");
    Some(cluster)
}

/// A new database on the cluster (Citus in it on every node, the workers added), migrated and laid out for
/// Citus (db/citus.sql); `None`, with a message, when Citus is not installed.
pub fn fresh_database() -> Option<String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let cluster = CLUSTER
        .get_or_init(|| std::thread::spawn(shared).join().expect("starting Citus"))
        .as_ref()?;
    let name = format!(
        "c_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    // Adding the workers syncs roles to them, a shared catalog that another database's tables being
    // distributed at the same moment may touch ("tuple concurrently updated"): the script is idempotent, and run
    // again.
    let mut tries = 0;
    loop {
        let out = Command::new("bash")
            .args([&script(), "database", &name])
            .arg(&cluster.dir)
            .arg(cluster.port.to_string())
            .output()
            .expect("running scripts/citus.sh");
        if out.status.success() {
            let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let migrate = url.clone();
            // Its own thread and runtime: this runs inside a test's runtime.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().expect("runtime");
                rt.block_on(async {
                    let pool = collector::db::pool(&migrate, 1).expect("pool");
                    collector::db::migrate::run(&pool)
                        .await
                        .expect("migrating on Citus");
                    collector::db::migrate::citus_layout(&pool)
                        .await
                        .expect("the Citus layout");
                    pool.close();
                });
            })
            .join()
            .expect("migrating the Citus database");
            return Some(url);
        }
        tries += 1;
        assert!(
            tries < 5,
            "scripts/citus.sh database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
