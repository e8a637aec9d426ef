//! The TLS fact of a NIP-66 check: the certificate a wss relay presents (issuer, subject,
//! names, validity) and whether it verifies against the webpki roots for the relay's name.
//!
//! The probe is its own handshake whose verifier RECORDS the chain and the verdict and then
//! lets the handshake finish, so an expired or self-signed certificate is still described
//! (that is the fact worth knowing). Nothing is ever sent over this connection: it is closed
//! right after the handshake. Relay sessions and NIP-11 use the normal verifying configuration.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use x509_cert::der::Decode;

use crate::net::dialer::Dialer;
use crate::protocol::url::RelayUrl;

#[derive(Debug, Clone, Default, Serialize)]
pub struct TlsFacts {
    /// The chain verifies for the relay's name against the webpki roots.
    pub verified: bool,
    /// Why it does not (e.g. `invalid peer certificate: UnknownIssuer`).
    pub verify_error: Option<String>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    /// Unix seconds.
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub names: Vec<String>,
    pub handshake_ms: Option<u64>,
    /// The handshake itself failed (no certificate to describe, or a protocol error).
    pub error: Option<String>,
}

static VERIFIER: LazyLock<Option<Arc<WebPkiServerVerifier>>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .ok()
});

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The leaf certificate (DER) a server presented and the webpki verdict on its chain.
type Seen = (Vec<u8>, Result<(), String>);

#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<Seen>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ())
            .map_err(|e| e.to_string());
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((end_entity.to_vec(), verdict));
        }
        Ok(ServerCertVerified::assertion())
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

/// Describe the certificate of a `wss://` relay; `None` for `ws://`.
pub async fn probe(dialer: &Dialer, url: &RelayUrl, timeout: Duration) -> Option<TlsFacts> {
    if !url.is_secure() {
        return None;
    }
    let mut facts = TlsFacts::default();
    let Some(inner) = VERIFIER.clone() else {
        facts.error = Some("no TLS verifier could be built".into());
        return Some(facts);
    };
    let host = url.host().trim_start_matches('[').trim_end_matches(']');
    let name = match ServerName::try_from(host.to_string()) {
        Ok(n) => n,
        Err(e) => {
            facts.error = Some(format!("not a TLS server name: {e}"));
            return Some(facts);
        }
    };
    let recording = Arc::new(Recording {
        inner,
        seen: Mutex::new(None),
    });
    let config = match rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(recording.clone())
            .with_no_client_auth(),
        Err(e) => {
            facts.error = Some(e.to_string());
            return Some(facts);
        }
    };
    let t = Instant::now();
    let handshake = async {
        let tcp = dialer.connect(url).await.map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(_stream)) => facts.handshake_ms = Some(t.elapsed().as_millis() as u64),
        Ok(Err(e)) => facts.error = Some(e),
        Err(_) => facts.error = Some(format!("no handshake within {} s", timeout.as_secs())),
    }
    let seen = recording.seen.lock().ok().and_then(|mut s| s.take());
    if let Some((der, verdict)) = seen {
        facts.verified = verdict.is_ok();
        facts.verify_error = verdict.err();
        describe(&der, &mut facts);
    }
    Some(facts)
}

/// Fill subject, issuer, validity and names from a DER certificate (unparsable: left empty,
/// with the reason in `error`).
pub fn describe(der: &[u8], facts: &mut TlsFacts) {
    let cert = match x509_cert::Certificate::from_der(der) {
        Ok(c) => c,
        Err(e) => {
            facts.error = Some(format!("unparsable certificate: {e}"));
            return;
        }
    };
    let tbs = &cert.tbs_certificate;
    let cap = |s: String| s.chars().take(500).collect::<String>();
    facts.subject = Some(cap(tbs.subject.to_string()));
    facts.issuer = Some(cap(tbs.issuer.to_string()));
    facts.not_before = Some(tbs.validity.not_before.to_unix_duration().as_secs() as i64);
    facts.not_after = Some(tbs.validity.not_after.to_unix_duration().as_secs() as i64);
    if let Ok(Some((_, san))) = tbs.get::<x509_cert::ext::pkix::SubjectAltName>() {
        use x509_cert::ext::pkix::name::GeneralName;
        for n in san.0.iter().take(100) {
            match n {
                GeneralName::DnsName(d) => facts.names.push(cap(d.to_string())),
                GeneralName::IpAddress(ip) => {
                    let b = ip.as_bytes();
                    let addr = match b.len() {
                        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(a) = addr {
                        facts.names.push(a.to_string());
                    }
                }
                _ => {}
            }
        }
    }
}
