//! TLS to PostgreSQL, with libpq's `sslmode` meanings (the driver itself knows only disable, prefer and
//! require, and no `sslrootcert`):
//! - `disable`: plain; `allow`/`prefer` (the default over TCP): TLS when the server offers it, unverified;
//! - `require`: TLS or no connection, unverified (verified as `verify-ca` when `sslrootcert` is given);
//! - `verify-ca`: the server's chain must lead to `sslrootcert`; `verify-full`: and name the host connected to.
//!
//! `sslrootcert` is a PEM file, or `system` for the system's roots; unset, `~/.postgresql/root.crt` when it
//! exists, else the system's roots. A Unix-socket connection is never encrypted (as with libpq).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::DbError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The driver's configuration for `url`, and the TLS connector when the connection may be encrypted.
pub fn configure(
    url: &str,
) -> Result<(tokio_postgres::Config, Option<MakeRustlsConnect>), DbError> {
    let (rest, sslmode, rootcert) = take_tls_options(url);
    let mut config: tokio_postgres::Config = rest.parse().map_err(DbError::Config)?;
    let over_tcp = config.get_hosts().iter().any(|h| matches!(h, Host::Tcp(_)));
    let mode = match sslmode.as_deref() {
        None if over_tcp => Mode::Prefer,
        None | Some("disable") => Mode::Disable,
        Some("allow" | "prefer") => Mode::Prefer,
        Some("require") if rootcert.is_some() => Mode::VerifyCa,
        Some("require") => Mode::Require,
        Some("verify-ca") => Mode::VerifyCa,
        Some("verify-full") => Mode::VerifyFull,
        Some(other) => {
            return Err(DbError::Tls(format!(
            "sslmode={other:?}; accepted: disable, allow, prefer, require, verify-ca, verify-full"
        )))
        }
    };
    if mode == Mode::Disable || !over_tcp {
        config.ssl_mode(SslMode::Disable);
        return Ok((config, None));
    }
    config.ssl_mode(if mode == Mode::Prefer {
        SslMode::Prefer
    } else {
        SslMode::Require
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        Mode::VerifyCa | Mode::VerifyFull => {
            let roots = roots(rootcert.as_deref())?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| DbError::Tls(e.to_string()))?;
            Arc::new(Verified {
                inner: webpki,
                check_name: mode == Mode::VerifyFull,
            })
        }
        _ => Arc::new(Unverified(provider.clone())),
    };
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((config, Some(MakeRustlsConnect::new(tls))))
}

/// Removes `sslmode` and `sslrootcert` from a URL's query or a key=value string.
fn take_tls_options(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |k: &str, v: String| match k {
        "sslmode" => {
            mode = Some(v);
            true
        }
        "sslrootcert" => {
            root = Some(v);
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        !take(k, percent_decode(v))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        url.split_whitespace()
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                !take(k.trim(), v.trim_matches('\'').to_string())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root)
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn roots(rootcert: Option<&str>) -> Result<RootCertStore, DbError> {
    let mut roots = RootCertStore::empty();
    let file = match rootcert {
        Some("system") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
            .filter(|p| p.exists()),
    };
    match file {
        Some(path) => {
            let pem = std::fs::read(&path)
                .map_err(|e| DbError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| DbError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| DbError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(DbError::Tls(
            "no root certificate to verify the server with (sslrootcert)".into(),
        ));
    }
    Ok(roots)
}

/// `verify-ca` and `verify-full`: the chain must lead to a root; the host name only for `verify-full`.
#[derive(Debug)]
struct Verified {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `prefer` and `require`: encrypted, the server's certificate not checked (libpq's meaning; the handshake's
/// signatures still are, except under an X.509 version 1 certificate, which the verifier cannot read: Citus makes
/// one for each of its nodes, and libpq connects to them. With the certificate itself unchecked, that signature
/// proves nothing more about the server).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

/// Whether `der` is an X.509 version 1 certificate: its TBSCertificate starts with the serial number, without
/// the explicit `[0]` version field.
fn is_v1_certificate(der: &[u8]) -> bool {
    /// The contents of the DER SEQUENCE at the start of `b`.
    fn sequence(b: &[u8]) -> Option<&[u8]> {
        let (&tag, rest) = b.split_first()?;
        let (&first, rest) = rest.split_first()?;
        if tag != 0x30 {
            return None;
        }
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        rest.get(..len)
    }
    sequence(der)
        .and_then(sequence)
        .and_then(|tbs| tbs.first())
        .is_some_and(|&tag| tag == 0x02)
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if is_v1_certificate(cert) {
            return Ok(HandshakeSignatureValid::assertion());
        }
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if is_v1_certificate(cert) {
            return Ok(HandshakeSignatureValid::assertion());
        }
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_certificate_is_told_from_a_version_3_one() {
        // The first bytes of each: SEQUENCE, SEQUENCE (TBSCertificate), then the serial number (v1) or the
        // explicit version field (v3).
        let v1 = [
            0x30, 0x81, 0x08, 0x30, 0x06, 0x02, 0x01, 0x05, 0x30, 0x01, 0x00,
        ];
        let v3 = [
            0x30, 0x0a, 0x30, 0x08, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x05,
        ];
        assert!(is_v1_certificate(&v1));
        assert!(!is_v1_certificate(&v3));
        assert!(!is_v1_certificate(&[0x30]));
        assert!(!is_v1_certificate(&[]));
    }

    #[test]
    fn tls_options_are_taken_out_of_both_forms() {
        assert_eq!(
            take_tls_options(
                "postgres://u:p@db:5432/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=c"
            ),
            (
                "postgres://u:p@db:5432/x?application_name=c".to_string(),
                Some("verify-full".into()),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            take_tls_options("postgresql://db/x?sslmode=require"),
            (
                "postgresql://db/x".to_string(),
                Some("require".into()),
                None
            )
        );
        assert_eq!(
            take_tls_options("host=db dbname=x sslmode=verify-ca sslrootcert='/ca.pem'"),
            (
                "host=db dbname=x".to_string(),
                Some("verify-ca".into()),
                Some("/ca.pem".into())
            )
        );
        assert_eq!(
            take_tls_options("host=/run/pg dbname=x"),
            ("host=/run/pg dbname=x".to_string(), None, None)
        );
    }

    #[test]
    fn modes_follow_libpq() {
        let tls = |url: &str| configure(url).map(|(_, t)| t.is_some());
        assert!(tls("postgres://db/x").unwrap());
        assert!(!tls("postgres://db/x?sslmode=disable").unwrap());
        // A Unix socket is never encrypted.
        assert!(!tls("host=/run/postgresql dbname=x sslmode=require").unwrap());
        assert!(matches!(
            configure("postgres://db/x?sslmode=verify"),
            Err(DbError::Tls(m)) if m.contains("accepted: disable")
        ));
        assert!(matches!(
            configure("postgres://db/x?sslmode=verify-full&sslrootcert=/nonexistent.pem"),
            Err(DbError::Tls(m)) if m.contains("/nonexistent.pem")
        ));
    }
}
