//! Network access: the [`dialer::Dialer`] that every connection goes through, websocket sessions
//! with relays ([`ws`]), and the size-capped HTTP GET used for NIP-11 documents ([`http`]).

pub mod dialer;
pub mod http;
pub mod nip11;
pub mod resolve;
pub mod socks;
pub mod tls;
#[cfg(feature = "tor")]
pub mod tor;
pub mod ws;
