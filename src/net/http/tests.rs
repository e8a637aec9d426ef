//! Tests for the parent module (kept apart so the module itself stays readable).

use super::*;
use crate::protocol::nip11::{parse_relay_info, NIP11_ACCEPT, NIP11_MAX_BYTES};
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
