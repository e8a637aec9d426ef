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
        let after = dialer.timeout_for(url.network());
        let (stream, _resp) = tokio::time::timeout(after, handshake)
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
