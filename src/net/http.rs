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
//! The document itself is parsed by [`crate::protocol::nip11`].

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

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

#[cfg(test)]
mod tests;
