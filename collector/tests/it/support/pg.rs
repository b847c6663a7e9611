//! One PostgreSQL per test binary: `DATABASE_URL` if set, else a private throwaway server started by the same
//! code `collector serve` uses. Migrated once into a template; each test gets its own database copied from it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use collector::db::embedded_pg::{Durability, EmbeddedPg};

struct Server {
    /// libpq connection string of the admin database, minus `dbname`.
    base: String,
    /// Kept alive for the whole test binary; the server's watchdog stops it when the process exits.
    _pg: Option<EmbeddedPg>,
}

static SERVER: OnceLock<Server> = OnceLock::new();
const TEMPLATE: &str = "collector_template";

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        // Its own thread and runtime: this runs inside whichever test's runtime got here first.
        std::thread::spawn(start)
            .join()
            .expect("starting the test PostgreSQL")
    })
}

/// Earlier test runs' servers are stopped by their watchdogs when those runs end, but their data directories
/// stay: a few hundred MB each, which fill a disk over many runs. Those of processes no longer alive go.
fn remove_stale_servers() {
    for dir in dirs_of_dead_runs("collector-it-") {
        if !dir.join("pg/postmaster.pid").exists() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The directories `<prefix><pid>` in the temporary directory whose test process `pid` is no longer alive.
pub fn dirs_of_dead_runs(prefix: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|entry| entry.path())
        .collect()
}

fn start() -> Server {
    let (base, pg) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            remove_stale_servers();
            let dir = std::env::temp_dir().join(format!("collector-it-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("creating the test data directory");
            let pg = EmbeddedPg::start(&dir.join("pg"), Durability::Throwaway)
                .expect("starting PostgreSQL");
            (pg.connection_string("postgres"), Some(pg))
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let admin = connect(&with_db(&base, "postgres")).await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {TEMPLATE}"))
            .await
            .expect("dropping template");
        admin
            .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
            .await
            .expect("creating template");
        let pool = collector::db::pool(&with_db(&base, TEMPLATE), 1).expect("pool");
        collector::db::migrate::run(&pool)
            .await
            .expect("migrating the template");
        pool.close();
    });
    Server { base, _pg: pg }
}

/// `base` with its database replaced by `db` (libpq key=value strings and URLs both).
pub fn with_db(base: &str, db: &str) -> String {
    if base.starts_with("postgres://") || base.starts_with("postgresql://") {
        let (head, query) = base
            .split_once('?')
            .map_or((base, None), |(h, q)| (h, Some(q)));
        let root = match head.rfind('/') {
            Some(i) if i > head.find("//").map_or(0, |j| j + 1) => &head[..i],
            _ => head,
        };
        match query {
            Some(q) => format!("{root}/{db}?{q}"),
            None => format!("{root}/{db}"),
        }
    } else {
        let kept: Vec<&str> = base
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .collect();
        format!("{} dbname={db}", kept.join(" "))
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connecting to PostgreSQL");
    tokio::spawn(conn);
    client
}

/// A new, migrated database for one test; returns its connection string.
pub async fn fresh_database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let server = server();
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let admin = connect(&with_db(&server.base, "postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
        .await
        .expect("creating the test database");
    with_db(&server.base, &name)
}

/// The migrated template every test database is copied from.
pub fn template_url() -> String {
    with_db(&server().base, TEMPLATE)
}
