//! Certificates for the TLS tests, made fresh by each test with `rcgen`: a server CA and a
//! server certificate for `localhost` and 127.0.0.1, a client CA with a client certificate,
//! and a client certificate from a CA the server does not trust.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// The key (PKCS#8).
    pub key: String,
    /// The certificate's DER.
    pub der: Vec<u8>,
}

/// Everything a TLS test needs.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA that signed the server certificate.
    pub server_ca: Pem,
    /// The server's certificate (for `localhost` and 127.0.0.1).
    pub server: Pem,
    /// The CA of client certificates the server trusts.
    pub client_ca: Pem,
    /// A client certificate signed by `client_ca`.
    pub client: Pem,
    /// A client certificate signed by a CA the server does not know.
    pub stranger: Pem,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, Pem) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-signed CA");
    let pem = Pem { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().to_vec() };
    (params, key, pem)
}

fn leaf(names: &[&str], purpose: ExtendedKeyUsagePurpose, ca: &(CertificateParams, KeyPair, Pem)) -> Pem {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![purpose];
    let issuer = Issuer::from_params(&ca.0, &ca.1);
    let cert = params.signed_by(&key, &issuer).expect("signed certificate");
    Pem { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().to_vec() }
}

/// Makes a fresh set of certificates.
pub fn pki() -> Pki {
    let server_ca = ca("epass test server CA");
    let client_ca = ca("epass test client CA");
    let other_ca = ca("someone else's CA");
    Pki {
        server: leaf(&["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, &server_ca),
        client: leaf(&["gate-7"], ExtendedKeyUsagePurpose::ClientAuth, &client_ca),
        stranger: leaf(&["stranger"], ExtendedKeyUsagePurpose::ClientAuth, &other_ca),
        server_ca: server_ca.2,
        client_ca: client_ca.2,
    }
}

impl Pki {
    /// The server's TLS settings, with mTLS on.
    pub fn server_settings(&self) -> epass::config::TlsSettings {
        epass::config::TlsSettings {
            cert_pem: self.server.cert.clone().into_bytes(),
            key_pem: self.server.key.clone().into_bytes(),
            client_ca_pem: Some(self.client_ca.cert.clone().into_bytes()),
        }
    }

    /// Writes the files a configuration names into `dir`: `server.pem`, `server.key`,
    /// `client-ca.pem` and `server-ca.pem`; returns `dir`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("certificate directory");
        for (name, text) in [
            ("server.pem", &self.server.cert),
            ("server.key", &self.server.key),
            ("client-ca.pem", &self.client_ca.cert),
            ("server-ca.pem", &self.server_ca.cert),
            ("client.pem", &self.client.cert),
            ("client.key", &self.client.key),
        ] {
            std::fs::write(dir.join(name), text).expect("write certificate");
        }
        dir.to_owned()
    }

    /// A TLS endpoint for the server at `addr` that trusts the server CA, presenting `identity`.
    pub fn endpoint(&self, addr: SocketAddr, identity: Option<&Pem>) -> Endpoint {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.server_ca.cert)).domain_name("localhost");
        if let Some(pem) = identity {
            tls = tls.identity(Identity::from_pem(&pem.cert, &pem.key));
        }
        Endpoint::from_shared(format!("https://{addr}")).expect("endpoint").tls_config(tls).expect("client TLS")
    }

    /// Connects over TLS, presenting `identity`.
    pub async fn connect(&self, addr: SocketAddr, identity: Option<&Pem>) -> Channel {
        self.endpoint(addr, identity).connect().await.expect("TLS connection")
    }
}
