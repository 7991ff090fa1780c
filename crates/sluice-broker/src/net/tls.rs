//! TLS for the SSL and SASL_SSL listeners: rustls (ring) from PEM files,
//! client certificates when asked for, the certificate's subject as the
//! principal, and reloading the files on SIGHUP without dropping a
//! connection (new handshakes use the new files; open ones keep theirs).
//!
//! Kernel TLS: after the handshake the session keys can be handed to the
//! kernel (`net/ktls.rs`) so Fetch keeps using sendfile. Whether this
//! kernel has it is probed once (`sluice_io::ktls`); where it does
//! not (`CONFIG_TLS` unset, as on the machines this was built on) records
//! are encrypted in user space and the file regions of a Fetch are read
//! into memory first. The metrics say which path the bytes took.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, TlsFiles};
use crate::security::Principal;

/// The acceptor every TLS listener uses, swappable on SIGHUP.
pub struct Tls {
    files: TlsFiles,
    /// Sessions' keys may be taken out for the kernel (kTLS).
    extractable: bool,
    acceptor: ArcSwap<TlsAcceptor>,
}

impl Tls {
    /// `extractable`: allow the kernel offload to take the session keys
    /// (only asked for where it can happen).
    pub fn load(files: &TlsFiles, extractable: bool) -> Result<Tls, String> {
        let config = server_config(files, extractable)?;
        Ok(Tls {
            files: files.clone(),
            extractable,
            acceptor: ArcSwap::from_pointee(TlsAcceptor::from(Arc::new(config))),
        })
    }

    /// Re-reads the PEM files; on any error the old ones stay in use.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.files, self.extractable)?;
        self.acceptor
            .store(Arc::new(TlsAcceptor::from(Arc::new(config))));
        Ok(())
    }

    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.acceptor.load_full()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

fn server_config(files: &TlsFiles, extractable: bool) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match (files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(
                "client certificates are asked for but no CA is given (--tls-client-ca)".into(),
            );
        }
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
    // Kafka clients speak the Kafka protocol straight after the handshake.
    config.alpn_protocols.clear();
    config.enable_secret_extraction = extractable;
    Ok(config)
}

/// The principal of a verified client certificate: `User:` and its
/// subject as RFC 4514 writes it (most specific first: `CN=…,O=…`), which
/// is what Kafka's default `ssl.principal.mapping.rules` gives.
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<Principal> {
    use x509_cert::der::Decode;
    let parsed = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    Some(Principal::user(&parsed.tbs_certificate.subject.to_string()))
}
