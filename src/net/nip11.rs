//! Fetch a relay's NIP-11 information document through the [`Dialer`].
//!
//! `ws://` becomes `http://` and `wss://` becomes `https://` on the same host, port and path; the
//! request carries `Accept: application/nostr+json`; the body is capped at 1 MiB and the whole
//! exchange at the dialer's timeout. [`fetch`] does not follow redirects; [`fetch_following`]
//! follows at most [`MAX_REDIRECTS`], re-checking every target against the SSRF policy before
//! anything is dialed.

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
    #[error("{url}: redirect to {to:?} refused: {reason}")]
    Redirect {
        url: String,
        to: String,
        reason: String,
    },
}

/// Redirects [`fetch_following`] follows.
pub const MAX_REDIRECTS: usize = 3;

pub const USER_AGENT: &str = concat!("bigbrotr/", env!("CARGO_PKG_VERSION"));

/// GET and parse the document; a non-2xx answer is [`Nip11Error::Status`].
pub async fn fetch(
    dialer: &Dialer,
    url: &RelayUrl,
    timeout: Duration,
) -> Result<RelayInfo, Nip11Error> {
    let resp = get(dialer, url, timeout).await?;
    document(url, &resp)
}

/// Like [`fetch`], following up to [`MAX_REDIRECTS`] redirects. Each `Location` is resolved
/// against the current URL, mapped back to ws/wss, and must pass the dialer's SSRF policy
/// before it is dialed; a refused or non-HTTP target is [`Nip11Error::Redirect`].
pub async fn fetch_following(
    dialer: &Dialer,
    url: &RelayUrl,
    timeout: Duration,
) -> Result<RelayInfo, Nip11Error> {
    let mut current = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let resp = get(dialer, &current, timeout).await?;
        let Some(location) = resp.redirect_location() else {
            return document(&current, &resp);
        };
        let refused = |reason: String| Nip11Error::Redirect {
            url: current.to_string(),
            to: location.chars().take(200).collect(),
            reason,
        };
        let mut base =
            url::Url::parse(current.as_str()).map_err(|e| refused(format!("current URL: {e}")))?;
        let _ = base.set_scheme(if current.is_secure() { "https" } else { "http" });
        let target = base
            .join(location)
            .map_err(|e| refused(format!("not a URL: {e}")))?;
        let ws = match target.scheme() {
            "https" => target.as_str().replacen("https://", "wss://", 1),
            "http" => target.as_str().replacen("http://", "ws://", 1),
            other => return Err(refused(format!("scheme {other:?} is not http(s)"))),
        };
        let next = crate::protocol::url::parse_relay_url(&ws, dialer.policy())
            .map_err(|e| refused(e.to_string()))?;
        // A target the default policy refuses is reachable only because this node allows local
        // or listed hosts: a relay must not steer us to other ports or hosts there (port
        // scanning, LAN services). Only the same host and port are followed.
        let public = crate::protocol::url::parse_relay_url(&ws, &Default::default()).is_ok();
        if !public && (next.host() != current.host() || next.port() != current.port()) {
            return Err(refused(
                "a local or allow-listed target must keep the same host and port".into(),
            ));
        }
        current = next;
    }
    Err(Nip11Error::Redirect {
        url: url.to_string(),
        to: current.to_string(),
        reason: format!("more than {MAX_REDIRECTS} redirects"),
    })
}

fn document(url: &RelayUrl, resp: &http::HttpResponse) -> Result<RelayInfo, Nip11Error> {
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

/// One GET of the document URL for `url`, whatever the status.
async fn get(
    dialer: &Dialer,
    url: &RelayUrl,
    timeout: Duration,
) -> Result<http::HttpResponse, Nip11Error> {
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
    Ok(resp)
}
