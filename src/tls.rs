//! TLS configuration from nsqd's flags: certificate and key, client-certificate policy
//! (`require` accepts any certificate the client proves it holds, `require-verify` checks it
//! against `--tls-root-ca-file`), and the minimum version.
//!
//! rustls implements TLS 1.2 and 1.3 only, so `--tls-min-version` of `tls1.0`/`tls1.1` means
//! TLS 1.2: clients that can only speak TLS 1.0/1.1 are refused (a deliberate, documented
//! difference from nsqd, whose default accepts them).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::options::{Options, TlsMinVersion};

/// Builds the server TLS configuration, or `None` when no certificate is configured.
pub fn server_config(o: &Options) -> Result<Option<Arc<ServerConfig>>, String> {
    if o.tls_cert.is_empty() && o.tls_key.is_empty() {
        return Ok(None);
    }
    if o.tls_cert.is_empty() || o.tls_key.is_empty() {
        return Err("--tls-cert and --tls-key must be given together".into());
    }
    let certs = CertificateDer::pem_file_iter(&o.tls_cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("failed to load --tls-cert {}: {e}", o.tls_cert))?;
    if certs.is_empty() {
        return Err(format!("--tls-cert {}: no certificate found", o.tls_cert));
    }
    let key = PrivateKeyDer::from_pem_file(&o.tls_key)
        .map_err(|e| format!("failed to load --tls-key {}: {e}", o.tls_key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match o.tls_min_version {
        TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let verifier: Arc<dyn ClientCertVerifier> = match o.tls_client_auth_policy.as_str() {
        "require" => Arc::new(AnyClientCert {
            provider: provider.clone(),
        }),
        "require-verify" => {
            if o.tls_root_ca_file.is_empty() {
                return Err(
                    "--tls-client-auth-policy=require-verify needs --tls-root-ca-file".into(),
                );
            }
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(&o.tls_root_ca_file)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "failed to load --tls-root-ca-file {}: {e}",
                        o.tls_root_ca_file
                    )
                })?;
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| format!("--tls-root-ca-file: {e}"))?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("--tls-root-ca-file: {e}"))?
        }
        _ => WebPkiClientVerifier::no_client_auth(),
    };
    let config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    Ok(Some(Arc::new(config)))
}

/// nsqd's `require` policy: a client certificate must be presented (and its key proven), but
/// it is not checked against any CA.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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
