//! Minimal HTTP/1.1 client for fetching a relay's NIP-11 information document.
//!
//! This is a deliberately small, hand-rolled `GET` that runs over *any*
//! `AsyncRead + AsyncWrite` stream handed to it. The project has exactly one
//! dialer, and it alone decides the transport (clearnet TCP, TLS, Tor, SOCKS
//! proxy, ...). This module therefore never opens a connection and never
//! resolves a name: it writes one request on the stream it is given, reads one
//! response, and drops the stream (the request says `Connection: close`).
//!
//! Nothing the peer sends is trusted:
//!
//! * the status line plus all header lines are capped at
//!   [`MAX_HEADER_BYTES`] (16 KiB) and [`MAX_HEADERS`] (100) fields;
//! * the body is capped at the caller's `max_body`, for `Content-Length`,
//!   `chunked` and read-to-EOF framing alike. A declared `Content-Length` or
//!   chunk size above the cap is refused before any of that body is read, and
//!   buffers never grow past `max_body` plus a small constant because of what
//!   the peer *claims*;
//! * the whole exchange (write + read) runs under [`tokio::time::timeout`].
//!
//! Redirects are **not** followed here. A 3xx response is returned as is and
//! [`HttpResponse::redirect_location`] exposes its `Location`, so the caller can
//! resolve it and re-check the target against its SSRF policy before dialing
//! it (through the dialer) and calling [`get`] again.
//!
//! The second half of the file is the NIP-11 document type, [`RelayInfo`],
//! parsed leniently by [`parse_relay_info`]: relays publish all kinds of
//! slightly-wrong documents, and a wrong field must not lose the rest.

use std::io;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Number, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// `Accept` value for NIP-11 requests.
pub const NIP11_ACCEPT: &str = "application/nostr+json";
/// Suggested `max_body` when fetching a NIP-11 document.
pub const NIP11_MAX_BYTES: usize = 1024 * 1024;
/// Cap on the status line plus all header lines of a response (including any
/// skipped `1xx` interim responses), line terminators included. Chunked
/// trailers get a separate budget of the same size.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Cap on the number of header fields of a response (and of chunked trailers).
pub const MAX_HEADERS: usize = 100;

/// Cap on one chunk-size line (size plus ignored extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Read buffer of the response reader.
const READ_BUF_BYTES: usize = 8 * 1024;
/// Largest up-front allocation for a body, whatever `Content-Length` says.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;
/// Longest string kept in a typed [`RelayInfo`] field.
const MAX_INFO_STRING_BYTES: usize = 4 * 1024;

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code of the final (non-`1xx`) response.
    pub status: u16,
    /// Header fields in the order received; names are lowercased, values are
    /// trimmed and decoded lossily as UTF-8. Repeated fields stay repeated.
    pub headers: Vec<(String, String)>,
    /// The body with the transfer coding (`chunked`) removed. A
    /// `Content-Encoding` is *not* undone (the request asks for `identity`).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Value of the first header field called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Location` of a 301, 302, 303, 307 or 308 response, exactly as sent
    /// (it may be relative). `None` for any other status or an empty/missing
    /// `Location`. The caller must resolve it against the request URL and vet
    /// the target before following it.
    pub fn redirect_location(&self) -> Option<&str> {
        match self.status {
            301 | 302 | 303 | 307 | 308 => self.header("location").filter(|v| !v.is_empty()),
            _ => None,
        }
    }
}

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The caller's request fields cannot be sent safely (checked before
    /// anything is written to the stream).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Reading from or writing to the stream failed (reset, broken pipe, ...).
    #[error("I/O error talking to the relay: {0}")]
    Io(#[from] io::Error),
    /// The whole exchange did not finish in time.
    #[error("relay did not complete the HTTP exchange within {after:?}")]
    Timeout { after: Duration },
    /// Status line plus headers (or the chunked trailers) exceed the cap.
    #[error("response header section exceeds the {limit}-byte limit")]
    HeadersTooLarge { limit: usize },
    /// More header (or trailer) fields than allowed.
    #[error("response has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    /// The body is, or is declared to be, larger than the caller's cap.
    #[error("response body exceeds the {limit}-byte limit")]
    BodyTooLarge { limit: usize },
    /// The peer closed the connection in the middle of the response.
    #[error("relay closed the connection before the {while_reading} was complete")]
    UnexpectedEof { while_reading: &'static str },
    /// The peer closed the connection before sending `Content-Length` bytes.
    #[error(
        "relay closed the connection after {received} of {expected} body bytes (Content-Length)"
    )]
    IncompleteBody { expected: u64, received: u64 },
    /// A `Transfer-Encoding` other than `chunked` (e.g. `gzip`), which this
    /// client cannot decode.
    #[error("unsupported Transfer-Encoding {0:?} (only chunked is supported)")]
    UnsupportedTransferEncoding(String),
    /// The response does not follow HTTP/1.x syntax.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

/// What to request. All fields are validated before anything is sent: no
/// control characters (so no header injection), host and path printable ASCII.
#[derive(Debug, Clone, Copy)]
pub struct GetRequest<'a> {
    /// `Host` header value, including `:port` when it is not the scheme's
    /// default (IPv6 literals in brackets). No scheme, path or userinfo.
    pub host: &'a str,
    /// Origin-form request target (`/path?query`); `""` means `"/"`.
    pub path: &'a str,
    /// `Accept` header value (omitted when empty), e.g. [`NIP11_ACCEPT`].
    pub accept: &'a str,
    /// `User-Agent` header value (omitted when empty).
    pub user_agent: &'a str,
}

/// Sends `GET` on `stream` and reads the response, all within `timeout`.
///
/// `1xx` interim responses (`100 Continue`, `103 Early Hints`, ...) are
/// skipped; redirects are returned, not followed. The body is limited to
/// `max_body` bytes after removing chunked framing; `204` and `304` have no
/// body. The stream is consumed and dropped when this returns.
pub async fn get<S>(
    stream: S,
    req: &GetRequest<'_>,
    max_body: usize,
    timeout: Duration,
) -> Result<HttpResponse, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = build_request(req)?;
    match tokio::time::timeout(timeout, exchange(stream, &request, max_body)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(HttpError::Timeout { after: timeout }),
    }
}

fn build_request(req: &GetRequest<'_>) -> Result<Vec<u8>, HttpError> {
    let path = if req.path.is_empty() { "/" } else { req.path };

    if req.host.is_empty() {
        return Err(HttpError::InvalidRequest("host is empty".into()));
    }
    if let Some(c) = req
        .host
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | '?' | '#' | '@' | '\\'))
    {
        return Err(HttpError::InvalidRequest(format!(
            "host {:?} contains {c:?}; expected host[:port] only",
            req.host
        )));
    }
    if !path.starts_with('/') {
        return Err(HttpError::InvalidRequest(format!(
            "path {path:?} must start with '/'"
        )));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic() || *c == '#') {
        return Err(HttpError::InvalidRequest(format!(
            "path {path:?} contains {c:?}; percent-encode it (and drop any fragment)"
        )));
    }
    for (field, value) in [("accept", req.accept), ("user_agent", req.user_agent)] {
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t'))
        {
            return Err(HttpError::InvalidRequest(format!(
                "{field} {value:?} contains {c:?}; only printable ASCII is allowed"
            )));
        }
    }

    let mut out = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", req.host);
    if !req.accept.is_empty() {
        out.push_str("Accept: ");
        out.push_str(req.accept);
        out.push_str("\r\n");
    }
    if !req.user_agent.is_empty() {
        out.push_str("User-Agent: ");
        out.push_str(req.user_agent);
        out.push_str("\r\n");
    }
    out.push_str("Accept-Encoding: identity\r\nConnection: close\r\n\r\n");
    Ok(out.into_bytes())
}

async fn exchange<S>(
    mut stream: S,
    request: &[u8],
    max_body: usize,
) -> Result<HttpResponse, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(request).await?;
    stream.flush().await?;

    let mut reader = BufReader::with_capacity(READ_BUF_BYTES, stream);
    let mut line = Vec::new();
    // One budget for every header section, interim responses included, so a
    // peer cannot stream `100 Continue` forever.
    let mut budget = MAX_HEADER_BYTES;
    loop {
        let status = read_status_line(&mut reader, &mut line, &mut budget).await?;
        let headers = read_header_fields(&mut reader, &mut line, &mut budget).await?;
        match status {
            101 => {
                return Err(HttpError::Malformed(
                    "unexpected 101 Switching Protocols to a plain GET".into(),
                ))
            }
            100..=199 => continue,
            _ => {
                let body = read_body(&mut reader, status, &headers, max_body).await?;
                return Ok(HttpResponse {
                    status,
                    headers,
                    body,
                });
            }
        }
    }
}

enum LineRead {
    /// A full line is in the buffer, terminator (`\n` or `\r\n`) removed.
    Line,
    /// EOF; the buffer holds whatever partial line preceded it.
    Eof,
    /// The line (terminator included) would exceed the remaining budget.
    TooLong,
}

/// Reads one `\n`-terminated line into `line`, charging every consumed byte
/// (terminator included) against `budget`. Never buffers more than `budget`.
async fn read_line<R>(
    reader: &mut R,
    line: &mut Vec<u8>,
    budget: &mut usize,
) -> io::Result<LineRead>
where
    R: AsyncBufRead + Unpin,
{
    line.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(LineRead::Eof);
        }
        let (take, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if take > *budget {
            return Ok(LineRead::TooLong);
        }
        line.extend_from_slice(&available[..take]);
        reader.consume(take);
        *budget -= take;
        if complete {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(LineRead::Line);
        }
    }
}

async fn read_status_line<R>(
    reader: &mut R,
    line: &mut Vec<u8>,
    budget: &mut usize,
) -> Result<u16, HttpError>
where
    R: AsyncBufRead + Unpin,
{
    loop {
        match read_line(reader, line, budget).await? {
            LineRead::TooLong => {
                return Err(HttpError::HeadersTooLarge {
                    limit: MAX_HEADER_BYTES,
                })
            }
            LineRead::Eof if line.is_empty() || line.starts_with(b"HTTP/") => {
                return Err(HttpError::UnexpectedEof {
                    while_reading: "status line",
                })
            }
            LineRead::Eof => return Err(not_http(line)),
            // Tolerate stray blank lines before the status line.
            LineRead::Line if line.is_empty() => continue,
            LineRead::Line => return parse_status_line(line),
        }
    }
}

fn parse_status_line(line: &[u8]) -> Result<u16, HttpError> {
    let rest = match line.strip_prefix(b"HTTP/1.") {
        Some([minor, rest @ ..]) if minor.is_ascii_digit() => rest,
        _ => return Err(not_http(line)),
    };
    let rest = match rest {
        [b' ', rest @ ..] => trim_ows(rest),
        _ => return Err(not_http(line)),
    };
    let code = match rest {
        [a, b, c] | [a, b, c, b' ' | b'\t', ..]
            if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() =>
        {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => {
            return Err(HttpError::Malformed(format!(
                "bad status code in status line {}",
                snippet(line)
            )))
        }
    };
    if code < 100 {
        return Err(HttpError::Malformed(format!(
            "status code {code} out of range"
        )));
    }
    Ok(code)
}

fn not_http(line: &[u8]) -> HttpError {
    let hint = match line.first() {
        Some(0x15 | 0x16) => " (looks like TLS: is this an https/wss port?)",
        _ => "",
    };
    HttpError::Malformed(format!(
        "response does not start with an HTTP/1.x status line: {}{hint}",
        snippet(line)
    ))
}

/// First bytes of `data`, escaped, for error messages.
fn snippet(data: &[u8]) -> String {
    const MAX: usize = 64;
    let shown = &data[..data.len().min(MAX)];
    let more = if data.len() > MAX { "..." } else { "" };
    format!("\"{}\"{more}", shown.escape_ascii())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

async fn read_header_fields<R>(
    reader: &mut R,
    line: &mut Vec<u8>,
    budget: &mut usize,
) -> Result<Vec<(String, String)>, HttpError>
where
    R: AsyncBufRead + Unpin,
{
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        match read_line(reader, line, budget).await? {
            LineRead::TooLong => {
                return Err(HttpError::HeadersTooLarge {
                    limit: MAX_HEADER_BYTES,
                })
            }
            LineRead::Eof => {
                return Err(HttpError::UnexpectedEof {
                    while_reading: "response headers",
                })
            }
            LineRead::Line => {}
        }
        if line.is_empty() {
            return Ok(headers);
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // Obsolete line folding: append to the previous field's value.
            let Some((_, value)) = headers.last_mut() else {
                return Err(HttpError::Malformed(
                    "header continuation line before any header field".into(),
                ));
            };
            let extra = trim_ows(line);
            if !extra.is_empty() {
                value.push(' ');
                value.push_str(&String::from_utf8_lossy(extra));
            }
            continue;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError::TooManyHeaders { limit: MAX_HEADERS });
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(HttpError::Malformed(format!(
                "header line without ':' {}",
                snippet(line)
            )));
        };
        let name = trim_ows(&line[..colon]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HttpError::Malformed(format!(
                "invalid header name in {}",
                snippet(line)
            )));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(trim_ows(&line[colon + 1..])).into_owned();
        headers.push((name, value));
    }
}

async fn read_body<R>(
    reader: &mut R,
    status: u16,
    headers: &[(String, String)],
    max_body: usize,
) -> Result<Vec<u8>, HttpError>
where
    R: AsyncBufRead + Unpin,
{
    if status == 204 || status == 304 {
        return Ok(Vec::new());
    }
    // Transfer-Encoding takes precedence over Content-Length (RFC 9112 6.3).
    let codings: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if !codings.is_empty() {
        if codings.len() == 1 && codings[0] == "chunked" {
            return read_chunked(reader, max_body).await;
        }
        return Err(HttpError::UnsupportedTransferEncoding(codings.join(", ")));
    }
    match content_length(headers)? {
        Some(len) => read_sized(reader, len, max_body).await,
        None => read_to_eof(reader, max_body).await,
    }
}

/// The declared `Content-Length`, if any. Repeated identical values are
/// accepted; conflicting or non-numeric ones are malformed. A value too large
/// for `u64` becomes `u64::MAX` (and so fails the body cap).
fn content_length(headers: &[(String, String)]) -> Result<Option<u64>, HttpError> {
    let mut found: Option<u64> = None;
    for value in headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .flat_map(|(_, v)| v.split(','))
    {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HttpError::Malformed(format!(
                "invalid Content-Length {value:?}"
            )));
        }
        let len = value.parse::<u64>().unwrap_or(u64::MAX);
        match found {
            Some(previous) if previous != len => {
                return Err(HttpError::Malformed(
                    "conflicting Content-Length values".into(),
                ))
            }
            _ => found = Some(len),
        }
    }
    Ok(found)
}

/// Appends `data` to `body`, growing the allocation geometrically but never
/// past `cap` (the caller has checked `body.len() + data.len() <= cap`).
fn append_capped(body: &mut Vec<u8>, data: &[u8], cap: usize) {
    let needed = body.len() + data.len();
    if needed > body.capacity() {
        let target = body.capacity().saturating_mul(2).min(cap).max(needed);
        body.reserve_exact(target - body.len());
    }
    body.extend_from_slice(data);
}

async fn read_sized<R>(reader: &mut R, declared: u64, max_body: usize) -> Result<Vec<u8>, HttpError>
where
    R: AsyncBufRead + Unpin,
{
    let len = match usize::try_from(declared) {
        Ok(len) if len <= max_body => len,
        _ => return Err(HttpError::BodyTooLarge { limit: max_body }),
    };
    let mut body = Vec::with_capacity(len.min(INITIAL_BODY_CAPACITY));
    while body.len() < len {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Err(HttpError::IncompleteBody {
                expected: declared,
                received: body.len() as u64,
            });
        }
        let take = available.len().min(len - body.len());
        append_capped(&mut body, &available[..take], len);
        reader.consume(take);
    }
    Ok(body)
}

async fn read_to_eof<R>(reader: &mut R, max_body: usize) -> Result<Vec<u8>, HttpError>
where
    R: AsyncBufRead + Unpin,
{
    let mut body = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(body);
        }
        if available.len() > max_body - body.len() {
            return Err(HttpError::BodyTooLarge { limit: max_body });
        }
        let take = available.len();
        append_capped(&mut body, available, max_body);
        reader.consume(take);
    }
}

async fn read_chunked<R>(reader: &mut R, max_body: usize) -> Result<Vec<u8>, HttpError>
where
    R: AsyncBufRead + Unpin,
{
    const EOF: HttpError = HttpError::UnexpectedEof {
        while_reading: "chunked body",
    };
    let mut body = Vec::new();
    let mut line = Vec::new();
    loop {
        let mut budget = MAX_CHUNK_LINE;
        match read_line(reader, &mut line, &mut budget).await? {
            LineRead::Line => {}
            LineRead::Eof => return Err(EOF),
            LineRead::TooLong => {
                return Err(HttpError::Malformed(format!(
                    "chunk-size line longer than {MAX_CHUNK_LINE} bytes"
                )))
            }
        }
        let size = parse_chunk_size(&line)?;
        if size == 0 {
            skip_trailers(reader, &mut line).await?;
            return Ok(body);
        }
        let mut left = match usize::try_from(size) {
            Ok(size) if size <= max_body - body.len() => size,
            _ => return Err(HttpError::BodyTooLarge { limit: max_body }),
        };
        while left > 0 {
            let available = reader.fill_buf().await?;
            if available.is_empty() {
                return Err(EOF);
            }
            let take = available.len().min(left);
            append_capped(&mut body, &available[..take], max_body);
            reader.consume(take);
            left -= take;
        }
        // The chunk data must be followed by exactly CRLF (or a bare LF).
        let mut budget = 2;
        match read_line(reader, &mut line, &mut budget).await? {
            LineRead::Line if line.is_empty() => {}
            LineRead::Eof => return Err(EOF),
            _ => {
                return Err(HttpError::Malformed(
                    "chunk data longer than its declared size".into(),
                ))
            }
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let digits = trim_ows(&line[..end]);
    let significant = match digits.iter().position(|&b| b != b'0') {
        Some(i) => &digits[i..],
        None => &[][..],
    };
    if digits.is_empty() || significant.len() > 16 || !digits.iter().all(|b| b.is_ascii_hexdigit())
    {
        return Err(HttpError::Malformed(format!(
            "invalid chunk size line {}",
            snippet(line)
        )));
    }
    let size = significant
        .iter()
        .fold(0u64, |acc, &b| (acc << 4) | u64::from(hex_value(b)));
    Ok(size)
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Reads and discards chunked trailers. EOF instead of the final empty line is
/// tolerated: the body is already complete.
async fn skip_trailers<R>(reader: &mut R, line: &mut Vec<u8>) -> Result<(), HttpError>
where
    R: AsyncBufRead + Unpin,
{
    let mut budget = MAX_HEADER_BYTES;
    let mut fields = 0usize;
    loop {
        match read_line(reader, line, &mut budget).await? {
            LineRead::Eof => return Ok(()),
            LineRead::TooLong => {
                return Err(HttpError::HeadersTooLarge {
                    limit: MAX_HEADER_BYTES,
                })
            }
            LineRead::Line if line.is_empty() => return Ok(()),
            LineRead::Line => {
                fields += 1;
                if fields > MAX_HEADERS {
                    return Err(HttpError::TooManyHeaders { limit: MAX_HEADERS });
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// NIP-11
// ---------------------------------------------------------------------------

/// A relay information document (NIP-11), parsed leniently.
///
/// Typed fields hold what could be understood; [`RelayInfo::raw`] keeps the
/// whole document as received.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayInfo {
    /// The whole document as received (always a JSON object). It is not
    /// sanitised: strings in it may contain `\u0000` or be arbitrarily long.
    pub raw: Value,
    pub name: Option<String>,
    pub description: Option<String>,
    pub pubkey: Option<String>,
    pub contact: Option<String>,
    pub software: Option<String>,
    pub version: Option<String>,
    /// Sorted, deduplicated.
    pub supported_nips: Vec<u32>,
    /// Defaults (all `None`) when absent or not an object.
    pub limitation: Limitation,
}

/// The `limitation` object of a NIP-11 document.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Limitation {
    pub max_message_length: Option<u64>,
    pub max_subscriptions: Option<u64>,
    pub max_limit: Option<u64>,
    pub max_subid_length: Option<u64>,
    pub max_event_tags: Option<u64>,
    pub max_content_length: Option<u64>,
    pub min_pow_difficulty: Option<u64>,
    pub auth_required: Option<bool>,
    pub payment_required: Option<bool>,
    pub restricted_writes: Option<bool>,
    pub created_at_lower_limit: Option<u64>,
    pub created_at_upper_limit: Option<u64>,
    pub default_limit: Option<u64>,
}

/// Why a body is not a NIP-11 document. These are the only failures of
/// [`parse_relay_info`]: any problem with an individual field is ignored.
#[derive(Debug, thiserror::Error)]
pub enum Nip11Error {
    /// The body is not JSON (after stripping a UTF-8 BOM).
    #[error("NIP-11 document is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("NIP-11 document must be a JSON object, got {found}")]
    NotAnObject { found: &'static str },
}

/// Parses a NIP-11 document leniently.
///
/// * A leading UTF-8 BOM is stripped. Only a body that is not JSON, or not a
///   JSON object, is an error.
/// * A field of the wrong type is ignored (`None` / empty / default).
/// * Numeric fields accept non-negative integers, also written as strings
///   (`"500"`) or as integral floats (`500.0`, `"5e2"`); negative, fractional
///   and out-of-range values are ignored.
/// * `supported_nips` keeps entries that are such numbers fitting in `u32`,
///   drops the rest, and is sorted and deduplicated.
/// * Typed string fields have NUL characters removed (they cannot be stored in
///   PostgreSQL text) and are truncated to 4 KiB on a char boundary.
///
/// It does not limit the body size itself: fetch with
/// `max_body = NIP11_MAX_BYTES`.
pub fn parse_relay_info(body: &[u8]) -> Result<RelayInfo, Nip11Error> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let raw: Value = serde_json::from_slice(body)?;
    let Value::Object(map) = &raw else {
        return Err(Nip11Error::NotAnObject {
            found: json_type_name(&raw),
        });
    };
    let string = |key: &str| lenient_string(map.get(key));
    let mut info = RelayInfo {
        raw: Value::Null,
        name: string("name"),
        description: string("description"),
        pubkey: string("pubkey"),
        contact: string("contact"),
        software: string("software"),
        version: string("version"),
        supported_nips: lenient_nips(map.get("supported_nips")),
        limitation: map
            .get("limitation")
            .and_then(Value::as_object)
            .map(parse_limitation)
            .unwrap_or_default(),
    };
    info.raw = raw;
    Ok(info)
}

fn parse_limitation(map: &Map<String, Value>) -> Limitation {
    let num = |key: &str| map.get(key).and_then(lenient_u64);
    let flag = |key: &str| map.get(key).and_then(Value::as_bool);
    Limitation {
        max_message_length: num("max_message_length"),
        max_subscriptions: num("max_subscriptions"),
        max_limit: num("max_limit"),
        max_subid_length: num("max_subid_length"),
        max_event_tags: num("max_event_tags"),
        max_content_length: num("max_content_length"),
        min_pow_difficulty: num("min_pow_difficulty"),
        auth_required: flag("auth_required"),
        payment_required: flag("payment_required"),
        restricted_writes: flag("restricted_writes"),
        created_at_lower_limit: num("created_at_lower_limit"),
        created_at_upper_limit: num("created_at_upper_limit"),
        default_limit: num("default_limit"),
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn lenient_string(value: Option<&Value>) -> Option<String> {
    let s = value?.as_str()?;
    let cleaned: String = if s.contains('\0') {
        s.chars().filter(|&c| c != '\0').collect()
    } else {
        s.to_owned()
    };
    Some(truncate_on_char_boundary(cleaned, MAX_INFO_STRING_BYTES))
}

fn truncate_on_char_boundary(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn lenient_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => number_to_u64(n),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(f64_to_u64))
        }
        _ => None,
    }
}

fn number_to_u64(n: &Number) -> Option<u64> {
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    if n.is_i64() {
        return None; // negative
    }
    n.as_f64().and_then(f64_to_u64)
}

fn f64_to_u64(f: f64) -> Option<u64> {
    // 2^64, the first value that does not fit.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < LIMIT {
        Some(f as u64)
    } else {
        None
    }
}

fn lenient_nips(value: Option<&Value>) -> Vec<u32> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    let mut nips: Vec<u32> = items
        .iter()
        .filter_map(lenient_u64)
        .filter_map(|n| u32::try_from(n).ok())
        .collect();
    nips.sort_unstable();
    nips.dedup();
    nips
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Instant;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    const REQ: GetRequest<'static> = GetRequest {
        host: "relay.example:8080",
        path: "/nip11",
        accept: NIP11_ACCEPT,
        user_agent: "bigbrotr-test/1",
    };
    const LONG: Duration = Duration::from_secs(10);

    /// What the test server does once it has written its response parts.
    #[derive(Clone, Copy)]
    enum After {
        Close,
        /// Keep the connection open (silently) for this long.
        Hold(Duration),
    }

    /// Starts a one-shot server on 127.0.0.1 that reads the request head,
    /// writes `parts` one by one (with a short pause between them, so they
    /// arrive as separate reads), then closes or holds. Its task returns the
    /// request bytes it received.
    async fn serve(parts: Vec<Vec<u8>>, after: After) -> (SocketAddr, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                let n = sock.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            for part in parts {
                if sock.write_all(&part).await.is_err() {
                    return request;
                }
                let _ = sock.flush().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            match after {
                After::Close => {
                    let _ = sock.shutdown().await;
                }
                After::Hold(d) => tokio::time::sleep(d).await,
            }
            request
        });
        (addr, task)
    }

    async fn fetch(
        addr: SocketAddr,
        max_body: usize,
        timeout: Duration,
    ) -> Result<HttpResponse, HttpError> {
        assert!(addr.ip().is_loopback());
        let stream = TcpStream::connect(addr).await.unwrap();
        get(stream, &REQ, max_body, timeout).await
    }

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[tokio::test]
    async fn content_length_body_and_request_format() {
        let (addr, server) = serve(
            vec![b("HTTP/1.1 200 OK\r\nContent-Type: application/nostr+json\r\nContent-Length: 13\r\nX-Dup: a\r\nx-dup: b\r\n\r\n{\"name\":\"r\"}\n")],
            After::Close,
        )
        .await;
        let resp = fetch(addr, 1024, LONG).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"{\"name\":\"r\"}\n");
        assert_eq!(resp.header("CONTENT-TYPE"), Some("application/nostr+json"));
        assert_eq!(resp.header("x-dup"), Some("a"));
        assert!(resp
            .headers
            .iter()
            .all(|(n, _)| *n == n.to_ascii_lowercase()));
        assert_eq!(resp.redirect_location(), None);

        let request = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(request.starts_with("GET /nip11 HTTP/1.1\r\n"), "{request}");
        for line in [
            "\r\nHost: relay.example:8080\r\n",
            "\r\nAccept: application/nostr+json\r\n",
            "\r\nUser-Agent: bigbrotr-test/1\r\n",
            "\r\nConnection: close\r\n",
            "\r\nAccept-Encoding: identity\r\n",
        ] {
            assert!(request.contains(line), "missing {line:?} in {request:?}");
        }
        assert!(request.ends_with("\r\n\r\n"));
    }

    #[tokio::test]
    async fn empty_path_becomes_slash() {
        let (addr, server) = serve(vec![b("HTTP/1.1 204 No Content\r\n\r\n")], After::Close).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let req = GetRequest { path: "", ..REQ };
        let resp = get(stream, &req, 10, LONG).await.unwrap();
        assert_eq!(resp.status, 204);
        assert!(resp.body.is_empty());
        let request = server.await.unwrap();
        assert!(request.starts_with(b"GET / HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn chunked_body_several_chunks() {
        let (addr, _server) = serve(
            vec![
                b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\n\r\n"),
                b("5\r\nhello\r\n"),
                b("1;ext=\"x\"\r\n \r\n"),
                b("00000000000000000006\r\nwor"),
                b("ld!\r\nA\r\n0123456789\r\n"),
                b("0\r\nTrailer: x\r\n\r\n"),
            ],
            After::Hold(LONG),
        )
        .await;
        let resp = fetch(addr, 1024, LONG).await.unwrap();
        assert_eq!(resp.body, b"hello world!0123456789");
    }

    #[tokio::test]
    async fn chunked_body_exactly_at_cap_is_accepted() {
        let (addr, _server) = serve(
            vec![b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n")],
            After::Hold(LONG),
        )
        .await;
        let resp = fetch(addr, 8, LONG).await.unwrap();
        assert_eq!(resp.body, b"abcdefgh");
    }

    #[tokio::test]
    async fn read_to_eof_body() {
        let body = vec![b'x'; 3000];
        let mut head = b("HTTP/1.0 200 OK\nServer: test\n\n");
        head.extend_from_slice(&body[..1000]);
        let (addr, _server) = serve(vec![head, body[1000..].to_vec()], After::Close).await;
        let resp = fetch(addr, 3000, LONG).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("server"), Some("test"));
        assert_eq!(resp.body, body);
        assert!(
            resp.body.capacity() <= 3000,
            "capacity {}",
            resp.body.capacity()
        );
    }

    #[tokio::test]
    async fn read_to_eof_over_cap() {
        let mut data = b("HTTP/1.1 200 OK\r\n\r\n");
        data.extend_from_slice(&[b'y'; 5000]);
        let (addr, _server) = serve(vec![data], After::Close).await;
        let err = fetch(addr, 4096, LONG).await.unwrap_err();
        assert!(
            matches!(err, HttpError::BodyTooLarge { limit: 4096 }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn content_length_over_cap_fails_fast() {
        // Declares 100 MB, sends a little, then stalls: reading it would time out.
        let (addr, _server) = serve(
            vec![b(
                "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\nsome",
            )],
            After::Hold(LONG),
        )
        .await;
        let start = Instant::now();
        let err = fetch(addr, NIP11_MAX_BYTES, LONG).await.unwrap_err();
        assert!(
            matches!(
                err,
                HttpError::BodyTooLarge {
                    limit: NIP11_MAX_BYTES
                }
            ),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn content_length_overflowing_u64_is_too_large() {
        let (addr, _server) = serve(
            vec![b(
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            )],
            After::Hold(LONG),
        )
        .await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(matches!(err, HttpError::BodyTooLarge { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn conflicting_content_length_is_malformed() {
        let (addr, _server) = serve(
            vec![b(
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            )],
            After::Close,
        )
        .await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(matches!(err, HttpError::Malformed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn chunked_over_cap() {
        let (addr, _server) = serve(
            vec![
                b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
                b("8\r\n01234567\r\n"),
                b("8\r\n89abcdef\r\n"),
            ],
            After::Hold(LONG),
        )
        .await;
        let start = Instant::now();
        let err = fetch(addr, 12, LONG).await.unwrap_err();
        assert!(
            matches!(err, HttpError::BodyTooLarge { limit: 12 }),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn chunked_huge_declared_chunk_fails_fast() {
        let (addr, _server) = serve(
            vec![b(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nabc",
            )],
            After::Hold(LONG),
        )
        .await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(
            matches!(err, HttpError::BodyTooLarge { limit: 1024 }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn chunk_longer_than_declared_is_malformed() {
        let (addr, _server) = serve(
            vec![b(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n",
            )],
            After::Close,
        )
        .await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(matches!(err, HttpError::Malformed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn unsupported_transfer_encoding() {
        let (addr, _server) = serve(
            vec![b(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            )],
            After::Close,
        )
        .await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(
            matches!(err, HttpError::UnsupportedTransferEncoding(ref s) if s == "gzip, chunked"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn headers_over_cap() {
        let mut head = b("HTTP/1.1 200 OK\r\n");
        for i in 0..40 {
            head.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "z".repeat(500)).as_bytes());
        }
        let (addr, _server) = serve(vec![head], After::Hold(LONG)).await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(
            matches!(
                err,
                HttpError::HeadersTooLarge {
                    limit: MAX_HEADER_BYTES
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn single_endless_header_line_over_cap() {
        let mut head = b("HTTP/1.1 200 OK\r\nX-Long: ");
        head.extend_from_slice(&[b'a'; 20 * 1024]);
        let (addr, _server) = serve(vec![head], After::Hold(LONG)).await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(matches!(err, HttpError::HeadersTooLarge { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn too_many_headers() {
        let mut head = b("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let (addr, _server) = serve(vec![head], After::Close).await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(
            matches!(err, HttpError::TooManyHeaders { limit: MAX_HEADERS }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (addr, _server) = serve(vec![], After::Hold(LONG)).await;
        let timeout = Duration::from_millis(200);
        let start = Instant::now();
        let err = fetch(addr, 1024, timeout).await.unwrap_err();
        let elapsed = start.elapsed();
        assert!(
            matches!(err, HttpError::Timeout { after } if after == timeout),
            "{err:?}"
        );
        assert!(
            elapsed >= timeout && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
    }

    #[tokio::test]
    async fn slow_body_times_out() {
        // Headers arrive, body never does: the timeout covers the whole exchange.
        let (addr, _server) = serve(
            vec![b("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")],
            After::Hold(LONG),
        )
        .await;
        let err = fetch(addr, 1024, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn close_mid_body_content_length() {
        let (addr, _server) = serve(
            vec![b(
                "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
            )],
            After::Close,
        )
        .await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(
            matches!(
                err,
                HttpError::IncompleteBody {
                    expected: 100,
                    received: 10
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn close_mid_body_chunked() {
        let (addr, _server) = serve(
            vec![b(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly-part",
            )],
            After::Close,
        )
        .await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(matches!(err, HttpError::UnexpectedEof { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn close_mid_headers() {
        let (addr, _server) = serve(vec![b("HTTP/1.1 200 OK\r\nContent-Le")], After::Close).await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(
            matches!(
                err,
                HttpError::UnexpectedEof {
                    while_reading: "response headers"
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn close_without_response() {
        let (addr, _server) = serve(vec![], After::Close).await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        assert!(
            matches!(
                err,
                HttpError::UnexpectedEof {
                    while_reading: "status line"
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn non_http_response_is_malformed() {
        let (addr, _server) = serve(
            vec![vec![0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46]],
            After::Close,
        )
        .await;
        let err = fetch(addr, 1024, LONG).await.unwrap_err();
        match err {
            HttpError::Malformed(msg) => assert!(msg.contains("TLS"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn redirect_301_exposes_location() {
        let (addr, _server) = serve(
            vec![b("HTTP/1.1 301 Moved Permanently\r\nLocation: https://other.example/info\r\nContent-Length: 0\r\n\r\n")],
            After::Hold(LONG),
        )
        .await;
        let resp = fetch(addr, 1024, LONG).await.unwrap();
        assert_eq!(resp.status, 301);
        assert_eq!(resp.redirect_location(), Some("https://other.example/info"));
    }

    #[tokio::test]
    async fn continue_is_skipped_and_bare_lf_tolerated() {
        let (addr, _server) = serve(
            vec![
                b("HTTP/1.1 100 Continue\r\n\r\n"),
                b("HTTP/1.1 103 Early Hints\nLink: </x>\n\n"),
                b("HTTP/1.1 200 OK\nContent-Length: 2\nX-Folded: a\n  b\n\nok"),
            ],
            After::Hold(LONG),
        )
        .await;
        let resp = fetch(addr, 1024, LONG).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"ok");
        assert_eq!(resp.header("x-folded"), Some("a b"));
        assert_eq!(resp.header("link"), None);
    }

    #[tokio::test]
    async fn invalid_request_is_refused_before_writing() {
        let (client, mut peer) = tokio::io::duplex(1024);
        for req in [
            GetRequest {
                host: "a\r\nX-Injected: 1",
                ..REQ
            },
            GetRequest { host: "", ..REQ },
            GetRequest {
                host: "http://a/",
                ..REQ
            },
            GetRequest {
                path: "/a b",
                ..REQ
            },
            GetRequest {
                path: "no-slash",
                ..REQ
            },
            GetRequest {
                user_agent: "ua\nX: y",
                ..REQ
            },
        ] {
            let (client, _keep) = tokio::io::duplex(1024);
            let err = get(client, &req, 1024, LONG).await.unwrap_err();
            assert!(
                matches!(err, HttpError::InvalidRequest(_)),
                "{req:?}: {err:?}"
            );
        }
        let err = get(
            client,
            &GetRequest {
                accept: "a\0",
                ..REQ
            },
            1024,
            LONG,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, HttpError::InvalidRequest(_)), "{err:?}");
        // The client half was dropped without anything being written.
        let mut written = Vec::new();
        peer.read_to_end(&mut written).await.unwrap();
        assert!(written.is_empty());
    }

    #[test]
    fn error_messages_name_the_limit() {
        let msg = HttpError::BodyTooLarge { limit: 42 }.to_string();
        assert!(msg.contains("42"), "{msg}");
        let msg = HttpError::Timeout {
            after: Duration::from_millis(200),
        }
        .to_string();
        assert!(msg.contains("200ms"), "{msg}");
    }

    // ---- NIP-11 ----

    #[test]
    fn nip11_full_document() {
        let doc = br#"{
            "name": "JellyFish",
            "description": "Stay Immortal!",
            "pubkey": "bf2bee5281149c7c350f5d12ae32f514c7864ff10805182f4178538c2c421007",
            "contact": "hi@dezh.tech",
            "software": "https://github.com/dezh-tech/immortal",
            "version": "immortal - 0.0.9",
            "supported_nips": [1, 9, 11, 13, 17, 40, 42, 59, 62, 70],
            "limitation": {
                "max_message_length": 70000, "max_subscriptions": 350, "max_limit": 5000,
                "max_subid_length": 256, "max_event_tags": 2000, "max_content_length": 70000,
                "min_pow_difficulty": 0, "auth_required": false, "payment_required": true,
                "restricted_writes": true, "created_at_lower_limit": 0,
                "created_at_upper_limit": 2147483647, "default_limit": 500
            },
            "icon": "https://example.com/icon.png"
        }"#;
        let info = parse_relay_info(doc).unwrap();
        assert_eq!(info.name.as_deref(), Some("JellyFish"));
        assert_eq!(info.description.as_deref(), Some("Stay Immortal!"));
        assert_eq!(info.pubkey.as_deref().map(str::len), Some(64));
        assert_eq!(info.contact.as_deref(), Some("hi@dezh.tech"));
        assert_eq!(
            info.software.as_deref(),
            Some("https://github.com/dezh-tech/immortal")
        );
        assert_eq!(info.version.as_deref(), Some("immortal - 0.0.9"));
        assert_eq!(
            info.supported_nips,
            vec![1, 9, 11, 13, 17, 40, 42, 59, 62, 70]
        );
        let l = &info.limitation;
        assert_eq!(l.max_message_length, Some(70000));
        assert_eq!(l.max_subscriptions, Some(350));
        assert_eq!(l.max_limit, Some(5000));
        assert_eq!(l.max_subid_length, Some(256));
        assert_eq!(l.max_event_tags, Some(2000));
        assert_eq!(l.max_content_length, Some(70000));
        assert_eq!(l.min_pow_difficulty, Some(0));
        assert_eq!(l.auth_required, Some(false));
        assert_eq!(l.payment_required, Some(true));
        assert_eq!(l.restricted_writes, Some(true));
        assert_eq!(l.created_at_lower_limit, Some(0));
        assert_eq!(l.created_at_upper_limit, Some(2147483647));
        assert_eq!(l.default_limit, Some(500));
        assert_eq!(info.raw["icon"], "https://example.com/icon.png");
        // Serializes (raw included).
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["limitation"]["max_limit"], 5000);
        assert_eq!(json["raw"]["name"], "JellyFish");
    }

    #[test]
    fn nip11_wrong_types_are_ignored() {
        let doc = br#"{
            "name": 42, "description": ["x"], "pubkey": null, "contact": {"a": 1},
            "software": true, "version": 1.2,
            "supported_nips": [1, "x", null, -5, 2.5, 11, 1, {"n": 3}, 4294967296],
            "limitation": {
                "max_message_length": "lots", "max_subscriptions": -1, "max_limit": 2.5,
                "auth_required": "yes", "payment_required": 1, "restricted_writes": false,
                "default_limit": [100], "max_event_tags": true
            }
        }"#;
        let info = parse_relay_info(doc).unwrap();
        assert_eq!(info.name, None);
        assert_eq!(info.description, None);
        assert_eq!(info.pubkey, None);
        assert_eq!(info.contact, None);
        assert_eq!(info.software, None);
        assert_eq!(info.version, None);
        assert_eq!(info.supported_nips, vec![1, 11]);
        let l = &info.limitation;
        assert_eq!(l.max_message_length, None);
        assert_eq!(l.max_subscriptions, None);
        assert_eq!(l.max_limit, None);
        assert_eq!(l.auth_required, None);
        assert_eq!(l.payment_required, None);
        assert_eq!(l.restricted_writes, Some(false));
        assert_eq!(l.default_limit, None);
        assert_eq!(l.max_event_tags, None);

        let info = parse_relay_info(br#"{"supported_nips": "1,2", "limitation": []}"#).unwrap();
        assert!(info.supported_nips.is_empty());
        assert_eq!(info.limitation.max_limit, None);
    }

    #[test]
    fn nip11_numeric_strings() {
        let doc = br#"{
            "supported_nips": ["11", " 1 ", 50, "9", "nip-42", "1.5", "-2", 11.0],
            "limitation": {"max_limit": "500", "max_subscriptions": " 20 ", "max_message_length": 16384.0,
                           "default_limit": "1e2", "min_pow_difficulty": "-3", "max_subid_length": "2.5"}
        }"#;
        let info = parse_relay_info(doc).unwrap();
        assert_eq!(info.supported_nips, vec![1, 9, 11, 50]);
        let l = &info.limitation;
        assert_eq!(l.max_limit, Some(500));
        assert_eq!(l.max_subscriptions, Some(20));
        assert_eq!(l.max_message_length, Some(16384));
        assert_eq!(l.default_limit, Some(100));
        assert_eq!(l.min_pow_difficulty, None);
        assert_eq!(l.max_subid_length, None);
    }

    #[test]
    fn nip11_non_object_is_error() {
        for doc in [&b"[1,2]"[..], b"\"relay\"", b"null", b"42"] {
            let err = parse_relay_info(doc).unwrap_err();
            assert!(matches!(err, Nip11Error::NotAnObject { .. }), "{err:?}");
        }
    }

    #[test]
    fn nip11_invalid_json_is_error() {
        for doc in [
            &b"<html>nope</html>"[..],
            b"{\"name\": ",
            b"",
            b"{} trailing",
        ] {
            let err = parse_relay_info(doc).unwrap_err();
            assert!(matches!(err, Nip11Error::InvalidJson(_)), "{err:?}");
        }
    }

    #[test]
    fn nip11_bom_is_stripped() {
        let info = parse_relay_info(b"\xEF\xBB\xBF{\"name\":\"bom\"}").unwrap();
        assert_eq!(info.name.as_deref(), Some("bom"));
        assert!(info.raw.is_object());
    }

    #[test]
    fn nip11_long_strings_truncated_on_char_boundary() {
        // 'é' is two bytes: 4097 bytes of "a" + "é"... ensure a boundary falls mid-char.
        let long = format!("a{}", "é".repeat(3000));
        let doc = serde_json::json!({ "description": long, "name": "a\u{0}b" }).to_string();
        let info = parse_relay_info(doc.as_bytes()).unwrap();
        let description = info.description.unwrap();
        assert!(description.len() <= MAX_INFO_STRING_BYTES);
        assert!(description.len() >= MAX_INFO_STRING_BYTES - 3);
        assert!(long.starts_with(&description));
        assert_eq!(info.name.as_deref(), Some("ab"));
        // raw is untouched.
        assert_eq!(
            info.raw["description"].as_str().map(str::len),
            Some(long.len())
        );
    }

    #[tokio::test]
    async fn fetch_and_parse_nip11_end_to_end() {
        let doc = "{\"name\":\"e2e\",\"supported_nips\":[11,1]}";
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/nostr+json\r\nContent-Length: {}\r\n\r\n{doc}",
            doc.len()
        );
        let (addr, _server) = serve(vec![b(&head)], After::Close).await;
        let resp = fetch(addr, NIP11_MAX_BYTES, LONG).await.unwrap();
        let info = parse_relay_info(&resp.body).unwrap();
        assert_eq!(info.name.as_deref(), Some("e2e"));
        assert_eq!(info.supported_nips, vec![1, 11]);
    }
}
