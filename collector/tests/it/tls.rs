//! TLS with certificates generated here: HTTPS on the listener, client certificates (mTLS) naming a producer,
//! a certificate replaced on disk and served without a restart, and PostgreSQL reached over TLS with each
//! `sslmode` checking what libpq's does.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use crate::support::app::KEY;
use crate::support::{binary, spawn_app_with};

/// A CA and what it signs, written as PEM files in `dir`.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), issuer.pem()).unwrap();
        Ca {
            issuer,
            dir: dir.into(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate and key, written as `<file>.crt` and `<file>.key`.
    fn sign(&self, file: &str, cn: &str, names: &[&str], client: bool) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// A client trusting `ca` only, presenting `identity` (PEM certificate + key) when given.
fn client(ca: &Ca, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .use_rustls_tls()
        // A new connection each time: a reloaded certificate is seen on the next handshake.
        .pool_max_idle_per_host(0);
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

const EVENT: &str = r#"[{"src_ip":"10.0.0.1","dst_ip":"10.0.0.2","service":"web","status":200}]"#;

#[tokio::test]
async fn https_with_client_certificates_naming_their_producer() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "test-ca");
    let (cert, key) = ca.sign("server", "collector", &["localhost", "127.0.0.1"], false);
    let (edge_cert, edge_key) = ca.sign("edge", "edge-cert", &[], true);
    let stranger = Ca::new(dir.path(), "other-ca");
    let (odd_cert, odd_key) = stranger.sign("odd", "odd-cert", &[], true);
    let client_ca = dir.path().join("test-ca.pem");
    let app = spawn_app_with(|c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
        c.tls_client_ca = Some(client_ca.clone());
    })
    .await;
    assert!(app.url.starts_with("https://"));

    // A key over HTTPS, verified against the CA.
    let plain = client(&ca, None);
    let r = plain
        .post(format!("{}/ingest", app.url))
        .header("x-api-key", KEY)
        .body(EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // No key and no certificate: 401.
    let r = plain
        .post(format!("{}/ingest", app.url))
        .body(EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A client certificate from the CA ingests without a key, as its common name; it may not read.
    let edge = client(&ca, Some((&edge_cert, &edge_key)));
    let r = edge
        .post(format!("{}/ingest", app.url))
        .body(EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = edge
        .get(format!("{}/api/logs", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A wrong key is refused even with a good certificate: a key, when sent, decides.
    let r = edge
        .post(format!("{}/ingest", app.url))
        .header("x-api-key", "not-a-key-at-all")
        .body(EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.wait_rows(2).await;
    assert_eq!(
        app.texts("SELECT producer FROM comm_logs ORDER BY producer")
            .await,
        ["edge-cert", "producer-a"]
    );
    // A certificate from another CA does not get through the handshake.
    let odd = client(&ca, Some((&odd_cert, &odd_key)));
    assert!(odd
        .post(format!("{}/ingest", app.url))
        .body(EVENT)
        .send()
        .await
        .is_err());
    // Plain HTTP on the TLS port gets no answer.
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", app.url.replace("https", "http")))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());

    // The command line trusts the CA given as SSL_CERT_FILE. (The collector runs on this test's thread: the
    // child is waited for on another.)
    let mut query = Command::new(env!("CARGO_BIN_EXE_collector"));
    query
        .args([
            "query",
            "volume",
            "--json",
            "--url",
            &app.url,
            "--api-key",
            KEY,
        ])
        .env("SSL_CERT_FILE", dir.path().join("test-ca.pem"));
    let out = tokio::task::spawn_blocking(move || query.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"]["events"], 2, "{v}");

    // A new certificate from another CA, written over the files: new connections get it, no restart.
    let next_ca = Ca::new(dir.path(), "next-ca");
    let (next_cert, next_key) =
        next_ca.sign("next", "collector", &["localhost", "127.0.0.1"], false);
    std::fs::rename(&next_key, &key).unwrap();
    std::fs::rename(&next_cert, &cert).unwrap();
    let renewed = client(&next_ca, None);
    let mut served = false;
    for _ in 0..100 {
        if renewed
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the replaced certificate was never served");
    assert!(plain
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .is_err());
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_required_client_certificate_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "test-ca");
    let (cert, key) = ca.sign("server", "collector", &["127.0.0.1"], false);
    let (edge_cert, edge_key) = ca.sign("edge", "edge-cert", &[], true);
    let client_ca = dir.path().join("test-ca.pem");
    let app = spawn_app_with(|c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
        c.tls_client_ca = Some(client_ca.clone());
        c.tls_require_client_cert = true;
    })
    .await;
    assert!(client(&ca, None)
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .is_err());
    let r = client(&ca, Some((&edge_cert, &edge_key)))
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await.unwrap();
}

/// A PostgreSQL of this test's own, listening on 127.0.0.1 with TLS only over TCP; stopped on drop.
struct TlsPostgres {
    data: PathBuf,
    port: u16,
    bin: PathBuf,
    ids: Option<(u32, u32)>,
    _dir: tempfile::TempDir,
}

impl TlsPostgres {
    fn start(cert: &Path, key: &Path) -> TlsPostgres {
        let bin = collector::db::embedded_pg::find_bin_dir().expect("PostgreSQL binaries");
        let dir = tempfile::tempdir().unwrap();
        // As root, the server runs as `postgres`, which must reach its files.
        let ids = is_root().then(|| {
            let id = |flag: &str| {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .unwrap();
                String::from_utf8(out.stdout)
                    .unwrap()
                    .trim()
                    .parse::<u32>()
                    .unwrap()
            };
            (id("-u"), id("-g"))
        });
        let pg = TlsPostgres {
            data: dir.path().join("pg"),
            port: binary::free_port(),
            bin,
            ids,
            _dir: dir,
        };
        if let Some((u, g)) = ids {
            std::os::unix::fs::chown(pg._dir.path(), Some(u), Some(g)).unwrap();
        }
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let to = pg.data.join(to);
            std::fs::copy(from, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some((u, g)) = ids {
                std::os::unix::fs::chown(&to, Some(u), Some(g)).unwrap();
            }
        }
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c ssl=on -c fsync=off",
            pg.port,
            pg._dir.path().display()
        );
        pg.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-D",
                pg.data.to_str().unwrap(),
                "-l",
                pg._dir.path().join("log").to_str().unwrap(),
                "-o",
                &options,
            ],
        );
        pg
    }

    fn run(&self, program: &str, args: &[&str]) {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args);
        if let Some((u, g)) = self.ids {
            cmd.uid(u).gid(g);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap().to_string();
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.args(["stop", "-m", "immediate", "-D", &data]);
        if let Some((u, g)) = self.ids {
            cmd.uid(u).gid(g);
        }
        let _ = cmd.output();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Whether this connection to `url` is encrypted (an error: it could not connect).
async fn encrypted(url: &str) -> Result<bool, String> {
    let pool = collector::db::pool(url, 1).map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| format!("{e:?}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn postgres_over_tls_checks_what_each_sslmode_says() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "db-ca");
    // Named `localhost` only: connecting to 127.0.0.1 is a name mismatch.
    let (cert, key) = ca.sign("db", "db", &["localhost"], false);
    let other = Ca::new(dir.path(), "other-ca");
    let pg = tokio::task::spawn_blocking(move || TlsPostgres::start(&cert, &key))
        .await
        .unwrap();
    let root = dir.path().join("db-ca.pem");
    let wrong = dir.path().join("other-ca.pem");
    let root_q = format!("sslrootcert={}", root.display());
    let wrong_q = format!("sslrootcert={}", wrong.display());
    drop(other);

    assert_eq!(
        encrypted(&pg.url("localhost", &format!("sslmode=verify-full&{root_q}"))).await,
        Ok(true)
    );
    let mismatch = encrypted(&pg.url("127.0.0.1", &format!("sslmode=verify-full&{root_q}"))).await;
    assert!(
        mismatch
            .as_ref()
            .is_err_and(|e| e.contains("NotValidForName")),
        "{mismatch:?}"
    );
    assert_eq!(
        encrypted(&pg.url("127.0.0.1", &format!("sslmode=verify-ca&{root_q}"))).await,
        Ok(true)
    );
    let untrusted =
        encrypted(&pg.url("localhost", &format!("sslmode=verify-full&{wrong_q}"))).await;
    assert!(
        untrusted
            .as_ref()
            .is_err_and(|e| e.contains("UnknownIssuer")),
        "{untrusted:?}"
    );
    assert_eq!(
        encrypted(&pg.url("127.0.0.1", "sslmode=require")).await,
        Ok(true)
    );
    assert_eq!(
        encrypted(&pg.url("127.0.0.1", "")).await,
        Ok(true),
        "prefer is the default"
    );
    assert_eq!(
        encrypted(&pg.url("127.0.0.1", "sslmode=disable")).await,
        Ok(false)
    );

    // The collector itself, every connection verified.
    let url = pg.url("localhost", &format!("sslmode=verify-full&{root_q}"));
    let (child, app_url) = binary::serve(
        &[
            ("DATABASE_URL", url.clone()),
            ("COLLECTOR_API_KEYS", format!("edge:{KEY}")),
        ],
        &[],
    )
    .await;
    let r = reqwest::Client::new()
        .post(format!("{app_url}/ingest"))
        .header("x-api-key", KEY)
        .body(EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let pool = collector::db::pool(&url, 1).unwrap();
    let client = pool.get().await.unwrap();
    let mut stored = 0;
    for _ in 0..100 {
        stored = client
            .query_one("SELECT count(*) FROM comm_logs", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
        if stored == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 1);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = 'postgres' AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap();
    let (tls, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        tls >= 2 && plain == 0,
        "collector connections: {tls} over TLS, {plain} plain"
    );
    binary::terminate(child).await;
    drop(client);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}
