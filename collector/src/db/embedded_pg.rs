//! A private PostgreSQL server run from the system's binaries: `collector serve` without `DATABASE_URL`, the
//! benchmark, and the test harness all start their server here, so there is one code path for all three.
//!
//! The server listens only on a unix socket in a directory of its own (no TCP port to collide on), runs as the
//! unprivileged `postgres` user when we are root (PostgreSQL refuses root), and is stopped when the handle is
//! dropped, or by a small watchdog process if this process dies without dropping it.
//!
//! One process owns the server of a data directory (a lock beside it). A server found running with the lock
//! free was left by a process that died, whose watchdog is about to stop it: it is restarted, never adopted.
//! A process that finds the lock taken (a CLI command beside `collector serve`) uses the running server and
//! leaves it running.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the server is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Crash-safe defaults: for `collector serve`.
    Durable,
    /// fsync off: for throwaway test servers, where a crash loses nothing of value.
    Throwaway,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error(
        "no PostgreSQL server binaries found (looked at `pg_config --bindir` and /usr/lib/postgresql/*/bin); \
         install them (Debian: `apt-get install postgresql`, or run scripts/setup.sh) or set DATABASE_URL"
    )]
    NoBinaries,
    #[error("the user `postgres` does not exist; PostgreSQL cannot run as root (install Debian's postgresql package)")]
    NoPostgresUser,
    // The cause is in the message, not chained: `{:#}` would print it twice.
    #[error("{what}: {error}")]
    Io { what: String, error: io::Error },
    #[error("{command} failed ({status}); its output:\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("PostgreSQL did not accept connections within {0:?}; see {1}")]
    Timeout(Duration, PathBuf),
    #[error(
        "the `postgres` user cannot enter {blocking}, so PostgreSQL cannot use the data directory {data_dir} \
         that already holds a database; move it under a directory that user can reach and set \
         COLLECTOR_DATA_DIR (or --data-dir) there, or let it in with `chmod o+x {blocking}`"
    )]
    Unreachable {
        data_dir: PathBuf,
        blocking: PathBuf,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedPgError {
    let what = what.into();
    move |error| EmbeddedPgError::Io { what, error }
}

/// A running private server. Dropping it stops the server, if this process owns it.
#[derive(Debug)]
pub struct EmbeddedPg {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    stopped: bool,
    /// The data directory's owner lock (`<data dir>.lock`), held for the life of the process; `None` when
    /// another live process owns the server and this one only uses it (a CLI command beside `serve`).
    owner: Option<fs::File>,
}

/// Port number in the socket file name only (`.s.PGSQL.<port>`): nothing listens on TCP.
const PORT: u16 = 5432;
const SUPERUSER: &str = "postgres";

impl EmbeddedPg {
    /// Initialises `data_dir` if it is new, starts the server (or adopts one already running on it), and waits
    /// until it accepts connections.
    pub fn start(data_dir: &Path, durability: Durability) -> Result<EmbeddedPg, EmbeddedPgError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedPgError::NoBinaries)?;
        let run_as = if is_root() {
            Some(postgres_ids().ok_or(EmbeddedPgError::NoPostgresUser)?)
        } else {
            None
        };
        if let Some(ids) = run_as {
            keep_reachable(data_dir, ids)?;
        }
        fs::create_dir_all(data_dir).map_err(io_err(format!("creating {}", data_dir.display())))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", data_dir.display())))?;
        let socket_dir = socket_dir_for(&data_dir);
        fs::create_dir_all(&socket_dir)
            .map_err(io_err(format!("creating {}", socket_dir.display())))?;
        if let Some((uid, gid)) = run_as {
            for dir in [&data_dir, &socket_dir] {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                    .map_err(io_err(format!("chown {}", dir.display())))?;
            }
        }
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("chmod {}", data_dir.display())))?;

        let owner = take_owner_lock(&data_dir)?;
        let mut pg = EmbeddedPg {
            bin_dir,
            data_dir,
            socket_dir,
            run_as,
            stopped: false,
            owner,
        };
        if pg.owner.is_none() {
            // Another live process owns the server: use it as it is, and leave it running.
            pg.stopped = true;
            pg.wait_ready(Duration::from_secs(60))?;
            return Ok(pg);
        }
        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        pg.write_settings(durability)?;
        if pg.is_running() {
            // Left by a process that died (kill -9): its watchdog stops that server at any moment, so it is
            // stopped now (a fast shutdown, or waiting for the one under way) and started again as ours.
            tracing::warn!(
                data_dir = %pg.data_dir.display(),
                "A PostgreSQL left by a collector that died runs on the data directory: restarting it"
            );
            let _ = pg.run(
                "pg_ctl",
                &[
                    "stop",
                    "-w",
                    "-t",
                    "120",
                    "-s",
                    "-m",
                    "fast",
                    "-D",
                    path_str(&pg.data_dir),
                ],
            );
        }
        if !pg.is_running() {
            let log = pg.data_dir.join("server.log");
            pg.run(
                "pg_ctl",
                &[
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-s",
                    "-D",
                    path_str(&pg.data_dir),
                    "-l",
                    path_str(&log),
                ],
            )?;
        }
        pg.wait_ready(Duration::from_secs(60))?;
        pg.spawn_watchdog();
        Ok(pg)
    }

    /// libpq-style connection string for `dbname` on this server's socket.
    pub fn connection_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={PORT} user={SUPERUSER} dbname={dbname}",
            self.socket_dir.display()
        )
    }

    /// Stops the server (fast shutdown: open transactions are rolled back, committed data is safe).
    pub fn stop(&mut self) -> Result<(), EmbeddedPgError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.run(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-s",
                "-m",
                "fast",
                "-D",
                path_str(&self.data_dir),
            ],
        )
        .map(|_| ())
    }

    /// Server version, e.g. `15.18`.
    pub fn version(&self) -> Option<String> {
        let out = Command::new(self.bin_dir.join("postgres"))
            .arg("--version")
            .output()
            .ok()?;
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .map(str::to_string)
    }

    fn initdb(&self) -> Result<(), EmbeddedPgError> {
        self.run(
            "initdb",
            &[
                "-D",
                path_str(&self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        )
        .map(|_| ())
    }

    /// Settings appended through `postgresql.auto.conf`'s sibling include so a restart picks up a changed
    /// durability without re-initialising.
    fn write_settings(&self, durability: Durability) -> Result<(), EmbeddedPgError> {
        let mut conf = format!(
            "# Written by the collector at every start.\n\
             port = {PORT}\n\
             unix_socket_directories = '{}'\n\
             listen_addresses = ''\n\
             unix_socket_permissions = 0700\n\
             max_connections = 100\n\
             shared_buffers = 256MB\n\
             max_wal_size = 4GB\n\
             checkpoint_timeout = 15min\n\
             wal_compression = on\n",
            self.socket_dir.display()
        );
        if durability == Durability::Throwaway {
            // And a small WAL: test runs create hundreds of databases, and their disk is not ours.
            conf.push_str(
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_wal_size = 256MB\n",
            );
        }
        let path = self.data_dir.join("collector.conf");
        fs::write(&path, conf).map_err(io_err(format!("writing {}", path.display())))?;
        let main = self.data_dir.join("postgresql.conf");
        let text =
            fs::read_to_string(&main).map_err(io_err(format!("reading {}", main.display())))?;
        if !text.contains("include_if_exists = 'collector.conf'") {
            fs::write(
                &main,
                format!("{text}\ninclude_if_exists = 'collector.conf'\n"),
            )
            .map_err(io_err(format!("writing {}", main.display())))?;
        }
        if let Some((uid, gid)) = self.run_as {
            for p in [&path, &main] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(io_err(format!("chown {}", p.display())))?;
            }
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .args(["status", "-D", path_str(&self.data_dir)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), EmbeddedPgError> {
        let deadline = Instant::now() + limit;
        loop {
            let ok = Command::new(self.bin_dir.join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    path_str(&self.socket_dir),
                    "-p",
                    &PORT.to_string(),
                    "-U",
                    SUPERUSER,
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmbeddedPgError::Timeout(
                    limit,
                    self.data_dir.join("server.log"),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A detached shell that sends the postmaster SIGINT (fast shutdown) once this process is gone, so a crash or
    /// a test binary's exit never leaves a server behind. Only the postmaster running now: the watchdog looks once
    /// a second, and by then a collector restarted at once may have started a new server on the same directory.
    fn spawn_watchdog(&self) {
        let postmaster = fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok());
        let Some(postmaster) = postmaster else {
            tracing::warn!(
                data_dir = %self.data_dir.display(),
                "No postmaster.pid to watch: the private PostgreSQL will outlive a crash of this process"
            );
            return;
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             p=$(head -n 1 '{dir}/postmaster.pid' 2>/dev/null) && [ \"$p\" = {postmaster} ] && \
             kill -INT {postmaster} 2>/dev/null; exit 0",
            pid = std::process::id(),
            dir = self.data_dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            // The postgres user cannot read root's working directory; give it one it can.
            cmd.current_dir(&self.data_dir);
        }
        cmd.env("LC_ALL", "C");
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<String, EmbeddedPgError> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("running {program}")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            let log = fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(EmbeddedPgError::Command {
                command: format!("{program} {}", args.join(" ")),
                status: out.status.to_string(),
                output: format!("{text}\nserver.log (last lines):\n{}", tail.join("\n")),
            })
        }
    }
}

impl Drop for EmbeddedPg {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "Stopping the private PostgreSQL failed");
        }
    }
}

/// Locks `<data dir>.lock` for this process: `None` when another live process holds it.
fn take_owner_lock(data_dir: &Path) -> Result<Option<fs::File>, EmbeddedPgError> {
    let name = data_dir
        .file_name()
        .map_or_else(|| "pg".into(), |n| n.to_string_lossy().into_owned());
    let path = data_dir.with_file_name(format!(".{name}.lock"));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(EmbeddedPgError::Io {
            what: format!("locking {}", path.display()),
            error: e,
        }),
    }
}

/// Where the private server's files go when the `postgres` user cannot reach the data directory asked for (a
/// clone under /root or a `mktemp -d` folder, as root): a directory of their own here, linked from there.
pub const RELOCATED_ROOT: &str = "/var/lib/server-logger";

/// Makes sure the `postgres` user can reach `data_dir`. A new data directory under a folder it cannot enter is
/// created in [`RELOCATED_ROOT`] instead and `data_dir` becomes a link to it, so the quick start works wherever
/// the clone is; an existing database there is an error naming the folder that blocks it and the fixes.
fn keep_reachable(data_dir: &Path, (uid, gid): (u32, u32)) -> Result<(), EmbeddedPgError> {
    if fs::symlink_metadata(data_dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(());
    }
    let absolute = std::path::absolute(data_dir)
        .map_err(io_err(format!("resolving {}", data_dir.display())))?;
    let Some(blocking) = first_unreachable(&absolute, uid, gid) else {
        return Ok(());
    };
    if absolute.join("PG_VERSION").exists() {
        return Err(EmbeddedPgError::Unreachable {
            data_dir: absolute,
            blocking,
        });
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    absolute.hash(&mut h);
    let name = absolute
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("pg");
    let target = Path::new(RELOCATED_ROOT).join(format!("{name}-{:016x}", h.finish()));
    fs::create_dir_all(&target).map_err(io_err(format!("creating {}", target.display())))?;
    // An empty directory left from an earlier attempt gives way to the link.
    if absolute.is_dir() {
        fs::remove_dir(&absolute).map_err(io_err(format!(
            "replacing the empty {} with a link",
            absolute.display()
        )))?;
    }
    if let Some(parent) = absolute.parent() {
        fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    }
    std::os::unix::fs::symlink(&target, &absolute).map_err(io_err(format!(
        "linking {} to {}",
        absolute.display(),
        target.display()
    )))?;
    tracing::warn!(
        blocking = %blocking.display(),
        data_dir = %absolute.display(),
        kept_in = %target.display(),
        "The postgres user cannot enter a parent of the data directory: the private PostgreSQL keeps its files \
         elsewhere, linked from the data directory"
    );
    Ok(())
}

/// The first existing ancestor of `path` (outermost first) that the user `uid:gid` cannot enter, asked of the
/// system itself (a shell run as that user), so ACLs and supplementary groups count as they will for the server.
fn first_unreachable(path: &Path, uid: u32, gid: u32) -> Option<PathBuf> {
    let mut ancestors: Vec<&Path> = path.ancestors().filter(|p| p.is_dir()).collect();
    ancestors.reverse();
    ancestors.into_iter().find_map(|dir| {
        let entered = Command::new("sh")
            .args(["-c", "cd -- \"$1\"", "sh"])
            .arg(dir)
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        (!entered).then(|| dir.to_path_buf())
    })
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Unix socket paths are limited to ~107 bytes: use the data directory when it is short enough, else a
/// directory under /tmp named after it.
fn socket_dir_for(data_dir: &Path) -> PathBuf {
    if data_dir.as_os_str().len() + ".s.PGSQL.5432".len() + 2 < 100 {
        return data_dir.to_path_buf();
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    std::env::temp_dir().join(format!("collector-pg-{:016x}", h.finish()))
}

/// The server binaries: `pg_config --bindir` when it has `postgres` beside it, else the newest
/// /usr/lib/postgresql/<version>/bin.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("postgres").exists() && dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn is_root() -> bool {
    // The owner of /proc/self is this process's effective uid.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == "postgres").then_some(())?;
        let _pw = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}
