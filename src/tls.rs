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

/// The subject common name of a DER certificate (the last CN attribute, as Go's
/// `pkix.Name` keeps it), or `None` when the certificate has none or cannot be read.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (certificate, _) = der_element(cert, 0x30)?;
    let (mut tbs, _) = der_element(certificate, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    // serialNumber, signature, issuer, validity; then the subject.
    for tag in [0x02, 0x30, 0x30, 0x30] {
        tbs = der_element(tbs, tag)?.1;
    }
    let (mut rdns, _) = der_element(tbs, 0x30)?;
    let mut name = None;
    while !rdns.is_empty() {
        let (mut set, rest) = der_element(rdns, 0x31)?;
        rdns = rest;
        while !set.is_empty() {
            let (attribute, rest) = der_element(set, 0x30)?;
            set = rest;
            let (oid, value) = der_element(attribute, 0x06)?;
            if oid == [0x55, 0x04, 0x03] {
                let (text, _) = der_any(value)?;
                name = Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    name
}

/// One DER element with tag `tag` at the start of `data`: (its contents, what follows it).
fn der_element(data: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *data.first()? != tag {
        return None;
    }
    der_any(data)
}

/// One DER element of any tag: (its contents, what follows it).
fn der_any(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *data.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = data.get(2..2 + n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((data.get(header..end)?, data.get(end..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_the_subjects_last_cn() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "org");
        dn.push(rcgen::DnType::CommonName, "worker-7");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("worker-7"));
        let mut params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), None);
        assert_eq!(common_name(b"\x30\x03\x02"), None);
        assert_eq!(common_name(&[]), None);
    }
}
