//! Fetch a relay's NIP-11 information document through the [`Dialer`].
//!
//! `ws://` becomes `http://` and `wss://` becomes `https://` on the same host, port and path; the
//! request carries `Accept: application/nostr+json`; the body is capped at 1 MiB and the whole
//! exchange at the dialer's timeout. Redirects are not followed here (the monitor follows them
//! after re-checking each target against the SSRF policy).

use std::time::Duration;

use tokio_rustls::rustls;

use super::dialer::{DialError, Dialer};
use super::http::{self, GetRequest, HttpError};
use crate::protocol::nip11::{parse_relay_info, RelayInfo, NIP11_ACCEPT, NIP11_MAX_BYTES};
use crate::protocol::url::RelayUrl;

#[derive(Debug, thiserror::Error)]
pub enum Nip11Error {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("{url}: TLS handshake failed: {reason}")]
    Tls { url: String, reason: String },
    #[error("{url}: {source}")]
    Http { url: String, source: HttpError },
    #[error("{url}: invalid NIP-11 document: {reason}")]
    Document { url: String, reason: String },
    #[error("{url}: HTTP status {status}, no NIP-11 document")]
    Status { url: String, status: u16 },
}

pub const USER_AGENT: &str = concat!("bigbrotr/", env!("CARGO_PKG_VERSION"));

/// GET and parse the document; a non-2xx answer is [`Nip11Error::Status`].
pub async fn fetch(
    dialer: &Dialer,
    url: &RelayUrl,
    timeout: Duration,
) -> Result<RelayInfo, Nip11Error> {
    let tcp = dialer.connect(url).await?;
    let host_header = if url.port() == if url.is_secure() { 443 } else { 80 } {
        url.host().to_string()
    } else {
        format!("{}:{}", url.host(), url.port())
    };
    let path = match url
        .as_str()
        .split_once("//")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
    {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => "/".to_string(),
    };
    let req = GetRequest {
        host: &host_header,
        path: &path,
        accept: NIP11_ACCEPT,
        user_agent: USER_AGENT,
    };
    let http_err = |source| Nip11Error::Http {
        url: url.to_string(),
        source,
    };
    let resp = if url.is_secure() {
        let name = rustls::pki_types::ServerName::try_from(
            url.host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| Nip11Error::Tls {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let connector = tokio_rustls::TlsConnector::from(super::tls::client_config());
        let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| Nip11Error::Tls {
                url: url.to_string(),
                reason: format!("timed out after {timeout:?}"),
            })?
            .map_err(|e| Nip11Error::Tls {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        http::get(tls, &req, NIP11_MAX_BYTES, timeout)
            .await
            .map_err(http_err)?
    } else {
        http::get(tcp, &req, NIP11_MAX_BYTES, timeout)
            .await
            .map_err(http_err)?
    };
    if !(200..300).contains(&resp.status) {
        return Err(Nip11Error::Status {
            url: url.to_string(),
            status: resp.status,
        });
    }
    parse_relay_info(&resp.body).map_err(|e| Nip11Error::Document {
        url: url.to_string(),
        reason: e.to_string(),
    })
}
