//! A websocket session with one relay: connect through the [`Dialer`], send client messages,
//! receive relay text frames with a deadline on every wait.
//!
//! Frames are capped (`network.max_message_bytes`) by tungstenite itself, before they are
//! buffered whole; read and write buffers are kept small because a node may hold hundreds of
//! these at once on a 1 GiB Pi.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::dialer::{DialError, Dialer, RelayStream};
use crate::protocol::url::RelayUrl;
use crate::protocol::ClientMessage;

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("{url}: websocket handshake failed: {reason}")]
    Handshake { url: String, reason: String },
    #[error("{url}: websocket handshake timed out after {after:?}")]
    HandshakeTimeout { url: String, after: Duration },
    #[error("relay closed the connection")]
    Closed,
    #[error("websocket error: {0}")]
    Protocol(String),
    /// A message over `network.max_message_bytes`: the connection cannot go on.
    #[error("message from the relay over the size limit ({0})")]
    TooLarge(String),
    #[error("no message from the relay within {0:?}")]
    Timeout(Duration),
}

pub struct WsConnection {
    stream: WebSocketStream<MaybeTlsStream<RelayStream>>,
}

impl WsConnection {
    pub async fn connect(
        dialer: &Dialer,
        url: &RelayUrl,
        max_message_bytes: usize,
    ) -> Result<WsConnection, WsError> {
        // One limit for the whole opening (docs/CONFIG.md: TCP + TLS + websocket handshake):
        // the handshake gets what the dial left of it.
        let after = dialer.timeout_for(url.network());
        let deadline = tokio::time::Instant::now() + after;
        let tcp = dialer.connect(url).await?;
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .write_buffer_size(0)
            .max_write_buffer_size(1 << 20)
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes));
        let handshake = tokio_tungstenite::client_async_tls_with_config(
            url.as_str(),
            tcp,
            Some(config),
            Some(Connector::Rustls(super::tls::client_config())),
        );
        let (stream, _resp) = tokio::time::timeout_at(deadline, handshake)
            .await
            .map_err(|_| WsError::HandshakeTimeout {
                url: url.to_string(),
                after,
            })?
            .map_err(|e| WsError::Handshake {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(WsConnection { stream })
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), WsError> {
        self.send_text(msg.to_json()).await
    }

    pub async fn send_text(&mut self, text: String) -> Result<(), WsError> {
        tokio::time::timeout(
            Duration::from_secs(30),
            self.stream.send(Message::text(text)),
        )
        .await
        .map_err(|_| WsError::Timeout(Duration::from_secs(30)))?
        .map_err(|e| WsError::Protocol(e.to_string()))
    }

    /// The next text frame, waiting at most `timeout`. Pings are answered by tungstenite; binary
    /// frames are ignored (Nostr is text-only).
    pub async fn recv(&mut self, timeout: Duration) -> Result<String, WsError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| WsError::Timeout(timeout))?;
            match next {
                None => return Err(WsError::Closed),
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                    return Err(WsError::TooLarge(e.to_string()))
                }
                Some(Err(e)) => return Err(WsError::Protocol(e.to_string())),
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
                Some(Ok(Message::Close(_))) => return Err(WsError::Closed),
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn ping(&mut self) -> Result<(), WsError> {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.stream.send(Message::Ping(Vec::new().into())),
        )
        .await
        .map_err(|_| WsError::Timeout(Duration::from_secs(10)))?
        .map_err(|e| WsError::Protocol(e.to_string()))
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.close(None)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dialer::Routes;
    use crate::protocol::url::{parse_relay_url, UrlPolicy};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A slow dial (a SOCKS5 proxy that takes 3 s to answer, as a Tor circuit can) to a relay
    /// that never answers the websocket upgrade: the opening fails when the one connect limit
    /// (4 s) is spent, not after the dial's 3 s plus a fresh 4 s for the handshake. The proxy
    /// is a mock: no real one stalls on demand.
    #[tokio::test]
    async fn one_limit_covers_the_dial_and_the_handshake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await; // method greeting
            tokio::time::sleep(Duration::from_millis(3000)).await;
            s.write_all(&[5, 0]).await.unwrap();
            let _ = s.read(&mut buf).await; // CONNECT
            s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 80])
                .await
                .unwrap();
            // Read the upgrade request and never answer it.
            while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let dialer =
            Dialer::new(UrlPolicy::default(), Duration::from_secs(15)).with_routes(Routes {
                tor: Some(proxy),
                overlay_timeout: Some(Duration::from_secs(4)),
                ..Routes::default()
            });
        let url = parse_relay_url(
            &format!("ws://{}.onion", "b".repeat(56)),
            &UrlPolicy::default(),
        )
        .unwrap();
        let t = std::time::Instant::now();
        let err = WsConnection::connect(&dialer, &url, 1 << 20)
            .await
            .err()
            .expect("the relay never answers");
        let took = t.elapsed();
        assert!(matches!(err, WsError::HandshakeTimeout { .. }), "{err}");
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_millis(6000),
            "took {took:?} (a fresh limit for the handshake would make it 7 s)"
        );
    }
}
