//! Certificates the tests make: a CA, a server certificate for 127.0.0.1 signed by it (written
//! where nsqd's `--tls-cert`/`--tls-key`/`--tls-root-ca-file` read them) and a client
//! certificate with a chosen common name, plus rustls configurations using them.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA with a server and a client certificate; the files are removed on drop.
pub struct TestCerts {
    /// Where `cert.pem` and `key.pem` (the server's) are.
    pub dir: PathBuf,
    /// The CA certificate clients trust.
    pub ca: CertificateDer<'static>,
    client_cert: CertificateDer<'static>,
    client_key: PrivateKeyDer<'static>,
}

impl TestCerts {
    /// Makes the certificates; the client certificate's subject CN is `client_cn`.
    pub fn new(client_cn: &str) -> TestCerts {
        let dir = std::env::temp_dir().join(super::unique("nsqd-certs-"));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let mut client_params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, client_cn);
        let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), server.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), server_key.serialize_pem()).unwrap();
        TestCerts {
            dir,
            ca: ca.der().clone(),
            client_cert: client.der().clone(),
            client_key: PrivateKeyDer::try_from(client_key.serialize_der()).unwrap(),
        }
    }

    /// `--tls-cert` and `--tls-key` for the server certificate.
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            format!("--tls-cert={}", self.dir.join("cert.pem").display()),
            format!("--tls-key={}", self.dir.join("key.pem").display()),
        ]
    }

    /// `--tls-root-ca-file` for the CA.
    pub fn root_ca_flag(&self) -> String {
        format!("--tls-root-ca-file={}", self.dir.join("ca.pem").display())
    }

    /// A server (the tests' own) presenting the server certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let cert = CertificateDer::from_pem_file(self.dir.join("cert.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(self.dir.join("key.pem")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        Arc::new(config)
    }

    /// A client trusting the CA, presenting the client certificate when `with_cert`.
    pub fn client_config(&self, with_cert: bool) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_cert {
            builder
                .with_client_auth_cert(vec![self.client_cert.clone()], self.client_key.clone_key())
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
