//! TLS for the target connection on rustls (pure Rust, nothing to install; the crypto
//! provider is aws-lc-rs, which the AWS SDK already builds): libpq's `sslmode` checks
//! as rustls verifiers — none (`prefer`, `require`: encrypted, the server not checked),
//! the chain only (`verify-ca`), the chain and the host name (`verify-full`) — against a
//! PEM file or the system's roots.
//!
//! Input: the resolved roots and mode. Output: a connector for tokio-postgres (built once
//! per setting and shared by every connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::libpq::Roots;

/// The TLS settings built so far, by (roots, host checked).
type Configs = HashMap<(Roots, bool), Arc<rustls::ClientConfig>>;

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The connector for `roots` (checking the host name when `check_host`), built once.
///
/// # Errors
/// The root file cannot be read or holds no certificate, naming it.
pub fn connector(roots: &Roots, check_host: bool) -> Result<MakeRustlsConnect, String> {
    static MADE: OnceLock<Mutex<Configs>> = OnceLock::new();
    let made = MADE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (roots.clone(), check_host);
    if let Some(c) = made.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(MakeRustlsConnect::new((*c).clone()));
    }
    let config = Arc::new(client_config(roots, check_host)?);
    if let Ok(mut m) = made.lock() {
        m.insert(key, config.clone());
    }
    Ok(MakeRustlsConnect::new((*config).clone()))
}

fn client_config(roots: &Roots, check_host: bool) -> Result<rustls::ClientConfig, String> {
    let p = provider();
    let store = match roots {
        Roots::Unchecked => None,
        Roots::File(path) => {
            let mut store = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                store
                    .add(c)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
            if store.is_empty() {
                return Err(format!(
                    "sslrootcert {} holds no PEM certificate",
                    path.display()
                ));
            }
            Some(store)
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "sslrootcert=system: the system's certificate store holds no certificate"
                        .into(),
                );
            }
            Some(store)
        }
    };
    let chain = match store {
        None => None,
        Some(store) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), p.clone())
                .build()
                .map_err(|e| e.to_string())?,
        ),
    };
    let verifier = Arc::new(Verifier {
        chain,
        check_host,
        provider: p.clone(),
    });
    Ok(rustls::ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// libpq's checks of the server's certificate. The handshake's signatures are always
/// checked; then, by mode: nothing more (`prefer`, `require` without a root: libpq
/// encrypts without verifying), the chain up to a trusted root (`verify-ca`: the chain is
/// checked before the name, so a name error means the chain held), or the chain and the
/// host name (`verify-full`).
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_host: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_host => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a failed TLS handshake means, in words, from the error chain's text.
#[must_use]
pub fn explain(reason: &str, mode: &str, host: &str) -> Option<String> {
    let r = reason.to_ascii_lowercase();
    // A bad signature on the chain: a CA of the same name, but not the one that signed.
    if r.contains("unknownissuer") || r.contains("unknown issuer") || r.contains("badsignature") {
        Some(format!("the server's certificate is not signed by a CA in sslrootcert (sslmode={mode} checks the certificate chain): use the CA bundle of this server (for RDS, the global bundle)"))
    } else if r.contains("notvalidforname") || r.contains("not valid for name") {
        Some(format!("the server's certificate is not for host {host} (sslmode=verify-full checks the host name; connect by the name the certificate gives, or use verify-ca)"))
    } else if r.contains("expired") {
        Some(format!(
            "the server's certificate has expired (sslmode={mode})"
        ))
    } else {
        None
    }
}
