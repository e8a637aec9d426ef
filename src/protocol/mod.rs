//! The Nostr protocol layer: pure types and parsing, no I/O.
//!
//! Everything here takes bytes or strings that came from the network and returns typed values or
//! a [`ProtocolError`]; nothing here opens a socket, reads a file or looks at the clock, so it is
//! unit-tested exhaustively and reused by every service.

pub mod event;
pub mod filter;
pub mod message;
pub mod nip11;
pub mod text;
pub mod url;

pub use event::{Event, EventLimits, ParsedEvent};
pub use filter::Filter;
pub use message::{ClientMessage, RelayMessage};

/// Why a message or event from a relay was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} exceeds its size cap")]
    TooLarge(&'static str),
    #[error("invalid event: {0}")]
    InvalidEvent(&'static str),
}
