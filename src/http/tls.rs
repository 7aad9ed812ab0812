//! TLS for the HTTP tracker's `[[http.tls]]` listeners (rustls, TLS 1.2 and 1.3): loading a
//! listener's certificate chain and private key from PEM files, and the acceptor that serves
//! them. Each listener's certificate sits behind a swappable pointer, so a reload (SIGHUP) gives
//! new handshakes the new certificate while connections already open keep theirs, and a reload
//! whose files are bad keeps the old one. At start, bad files are fatal, naming the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One `[[http.tls]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    pub address: SocketAddr,
    /// PEM file of the certificate chain, the server's own certificate first.
    pub tls_certificate: PathBuf,
    /// PEM file of its private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_private_key: PathBuf,
}

/// Why a listener's certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {file} ([[http.tls]] tls_certificate): {why}")]
    Certificate { file: PathBuf, why: String },
    #[error("cannot read the TLS private key {file} ([[http.tls]] tls_private_key): {why}")]
    Key { file: PathBuf, why: String },
    #[error("the TLS private key {key} does not belong to the certificate {certificate}: {why}")]
    Mismatch {
        certificate: PathBuf,
        key: PathBuf,
        why: String,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The chain and key of `c`, checked to belong together.
pub fn load(c: &TlsListenerConfig) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_error = |why: String| TlsError::Certificate {
        file: c.tls_certificate.clone(),
        why,
    };
    let key_error = |why: String| TlsError::Key {
        file: c.tls_private_key.clone(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(&c.tls_certificate)
        .map_err(|e| cert_error(pem_why(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(pem_why(&e)))?;
    if chain.is_empty() {
        return Err(cert_error("it holds no PEM CERTIFICATE block".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&c.tls_private_key).map_err(|e| key_error(pem_why(&e)))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::Mismatch {
        certificate: c.tls_certificate.clone(),
        key: c.tls_private_key.clone(),
        why: e.to_string(),
    })?;
    Ok(Arc::new(certified))
}

fn pem_why(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "it holds no PEM block of that kind".into(),
        e => format!("not valid PEM: {e:?}"),
    }
}

/// A listener's certificate as served now; swapped by a reload.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// A TLS listener's certificate: what the acceptor serves, and the handle that reloads it.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub config: TlsListenerConfig,
    current: Arc<Current>,
}

impl Certificate {
    /// Loads `config`'s files (at start: an error is fatal).
    pub fn new(config: &TlsListenerConfig) -> Result<Self, TlsError> {
        Ok(Self {
            config: config.clone(),
            current: Arc::new(Current(ArcSwap::new(load(config)?))),
        })
    }

    /// Reads the files of `config` (the listener's entry in the reloaded configuration) and
    /// serves them from the next handshake on; on an error the certificate in force stays.
    pub fn reload(&self, config: &TlsListenerConfig) -> Result<(), TlsError> {
        self.current.0.store(load(config)?);
        Ok(())
    }

    /// The acceptor for this listener's connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.current.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(server))
    }
}
