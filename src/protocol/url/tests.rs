//! Tests for the parent module (kept apart so the module itself stays readable).

use super::*;

const ONION: &str = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid";

fn strict() -> UrlPolicy {
    UrlPolicy::default()
}

fn local() -> UrlPolicy {
    UrlPolicy {
        allow_local: true,
        allow_hosts: Vec::new(),
    }
}

fn hosts(list: &[&str]) -> UrlPolicy {
    UrlPolicy {
        allow_local: false,
        allow_hosts: list.iter().map(|s| s.to_string()).collect(),
    }
}

/// The variant name, so tables can say which rule refused an input.
fn kind(e: &UrlError) -> &'static str {
    match e {
        UrlError::Empty => "Empty",
        UrlError::TooLong { .. } => "TooLong",
        UrlError::ForbiddenCharacter { .. } => "ForbiddenCharacter",
        UrlError::EncodedJunk { .. } => "EncodedJunk",
        UrlError::MissingScheme { .. } => "MissingScheme",
        UrlError::UnsupportedScheme { .. } => "UnsupportedScheme",
        UrlError::GluedUrl { .. } => "GluedUrl",
        UrlError::Credentials { .. } => "Credentials",
        UrlError::Query { .. } => "Query",
        UrlError::Fragment { .. } => "Fragment",
        UrlError::DotSegment { .. } => "DotSegment",
        UrlError::EmptyHost { .. } => "EmptyHost",
        UrlError::InvalidHost { .. } => "InvalidHost",
        UrlError::PortZero { .. } => "PortZero",
        UrlError::InvalidOnion { .. } => "InvalidOnion",
        UrlError::Malformed { .. } => "Malformed",
        UrlError::Refused { .. } => "Refused",
    }
}

#[test]
fn accepted_forms_normalize() {
    let onion = format!("wss://{ONION}.onion");
    let onion_upper = format!("WSS://{}.ONION/", ONION.to_uppercase());
    let onion_sub = format!("ws://relay.{ONION}.onion:8080/x/");
    let onion_sub_out = format!("ws://relay.{ONION}.onion:8080/x");
    // (input, normal form)
    let table: Vec<(&str, &str)> = vec![
        ("wss://relay.damus.io", "wss://relay.damus.io"),
        ("wss://RELAY.damus.io/", "wss://relay.damus.io"),
        ("wss://relay.damus.io:443", "wss://relay.damus.io"),
        ("wss://Relay.Damus.io:443/", "wss://relay.damus.io"),
        ("WSS://relay.damus.io", "wss://relay.damus.io"),
        ("wSs://relay.damus.io:0443", "wss://relay.damus.io"),
        ("  wss://relay.damus.io \n\t", "wss://relay.damus.io"),
        ("wss://relay.damus.io:/", "wss://relay.damus.io"),
        ("ws://relay.example.com:80/", "ws://relay.example.com"),
        ("ws://relay.example.com", "ws://relay.example.com"),
        ("ws://relay.example.com:443", "ws://relay.example.com:443"),
        ("wss://relay.example.com:80", "wss://relay.example.com:80"),
        (
            "wss://relay.example.com:7777/",
            "wss://relay.example.com:7777",
        ),
        (
            "wss://relay.example.com:65535",
            "wss://relay.example.com:65535",
        ),
        // Paths: trailing slashes go, everything else stays.
        ("wss://nostr.wine/inbox", "wss://nostr.wine/inbox"),
        ("wss://a.com/inbox/", "wss://a.com/inbox"),
        ("wss://a.com/inbox///", "wss://a.com/inbox"),
        ("wss://a.com/Inbox", "wss://a.com/Inbox"),
        ("wss://a.com//", "wss://a.com"),
        ("wss://a.com/a//b", "wss://a.com/a//b"),
        ("wss://a.com/a/b/", "wss://a.com/a/b"),
        ("wss://a.com/ü", "wss://a.com/%C3%BC"),
        ("wss://a.com/%41", "wss://a.com/%41"),
        // IDN, trailing dot.
        ("wss://bücher.example", "wss://xn--bcher-kva.example"),
        ("wss://BÜCHER.example/", "wss://xn--bcher-kva.example"),
        ("wss://xn--bcher-kva.example", "wss://xn--bcher-kva.example"),
        ("wss://relay.damus.io.", "wss://relay.damus.io"),
        ("wss://relay.damus.io.:443/", "wss://relay.damus.io"),
        ("wss://relay.damus.io./inbox", "wss://relay.damus.io/inbox"),
        // Scheme names inside a longer label are fine.
        ("wss://wss.example.com", "wss://wss.example.com"),
        (
            "wss://https-relay.example.com",
            "wss://https-relay.example.com",
        ),
        // IP literals (normalize applies no policy).
        ("wss://8.8.8.8", "wss://8.8.8.8"),
        ("ws://127.0.0.1:7777", "ws://127.0.0.1:7777"),
        ("ws://127.0.0.1.:7777", "ws://127.0.0.1:7777"),
        ("ws://2130706433", "ws://127.0.0.1"),
        ("ws://0x7f.1", "ws://127.0.0.1"),
        ("wss://[::1]:7777/", "wss://[::1]:7777"),
        ("wss://[0:0::1]", "wss://[::1]"),
        ("wss://[2606:4700:0::1111]", "wss://[2606:4700::1111]"),
        ("ws://localhost:8080", "ws://localhost:8080"),
        // Overlays.
        (&onion, &onion),
        (&onion_upper, &onion),
        (&onion_sub, &onion_sub_out),
        ("ws://abcdef.b32.i2p", "ws://abcdef.b32.i2p"),
        ("wss://Relay.I2P/", "wss://relay.i2p"),
        (
            "wss://relay.loki:4443/nostr/",
            "wss://relay.loki:4443/nostr",
        ),
    ];
    for (input, want) in table {
        let url = normalize(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"));
        assert_eq!(url.as_str(), want, "normal form of {input:?}");
        assert_eq!(url.to_string(), want, "Display of {input:?}");
        // The normal form is a fixed point.
        assert_eq!(
            normalize(want).as_ref(),
            Ok(&url),
            "re-normalizing {want:?}"
        );
    }
}

#[test]
fn accessors_report_host_port_scheme_and_network() {
    let onion = format!("wss://{ONION}.onion");
    let onion_host = format!("{ONION}.onion");
    let onion_sub = format!("ws://relay.{ONION}.onion:8080/x");
    let onion_sub_host = format!("relay.{ONION}.onion");
    use Network::*;
    // (normal form, host, port, secure, network)
    let table: Vec<(&str, &str, u16, bool, Network)> = vec![
        (
            "wss://relay.damus.io",
            "relay.damus.io",
            443,
            true,
            Clearnet,
        ),
        (
            "ws://relay.example.com",
            "relay.example.com",
            80,
            false,
            Clearnet,
        ),
        (
            "ws://relay.example.com:443",
            "relay.example.com",
            443,
            false,
            Clearnet,
        ),
        (
            "wss://relay.example.com:80",
            "relay.example.com",
            80,
            true,
            Clearnet,
        ),
        ("wss://a.com:7777/inbox", "a.com", 7777, true, Clearnet),
        (
            "wss://xn--bcher-kva.example",
            "xn--bcher-kva.example",
            443,
            true,
            Clearnet,
        ),
        ("ws://127.0.0.1:7777", "127.0.0.1", 7777, false, Clearnet),
        ("wss://[::1]:7777", "[::1]", 7777, true, Clearnet),
        (
            "wss://[2606:4700::1111]",
            "[2606:4700::1111]",
            443,
            true,
            Clearnet,
        ),
        (&onion, &onion_host, 443, true, Tor),
        (&onion_sub, &onion_sub_host, 8080, false, Tor),
        ("ws://abcdef.b32.i2p", "abcdef.b32.i2p", 80, false, I2p),
        (
            "wss://relay.loki:4443/nostr",
            "relay.loki",
            4443,
            true,
            Loki,
        ),
        // Names that only look like overlay names are clearnet.
        (
            "wss://onion.example.com",
            "onion.example.com",
            443,
            true,
            Clearnet,
        ),
        (
            "wss://relay.i2p.example",
            "relay.i2p.example",
            443,
            true,
            Clearnet,
        ),
        (
            "wss://loki.example.com",
            "loki.example.com",
            443,
            true,
            Clearnet,
        ),
    ];
    for (input, host, port, secure, network) in table {
        let url = normalize(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"));
        assert_eq!(url.as_str(), input, "{input:?} is not in normal form");
        assert_eq!(url.host(), host, "host of {input:?}");
        assert_eq!(url.port(), port, "port of {input:?}");
        assert_eq!(url.is_secure(), secure, "is_secure of {input:?}");
        assert_eq!(url.network(), network, "network of {input:?}");
    }
}

#[test]
fn spellings_of_one_relay_are_equal() {
    let a = normalize("wss://relay.damus.io");
    let b = normalize(" WSS://Relay.Damus.IO.:443// ");
    assert!(a.is_ok());
    assert_eq!(a, b);
}

#[test]
fn refused_forms() {
    let too_long = format!("wss://{}.com", "a".repeat(MAX_URL_LEN));
    let long_label = format!("wss://{}.com", "a".repeat(64));
    let long_name = format!("wss://{}com", "abcdefghi.".repeat(26));
    let v3_short = format!("wss://{}.onion", &ONION[..55]);
    let v3_long = format!("wss://{ONION}a.onion");
    let v3_bad_char = format!("wss://{}1.onion", &ONION[..55]);
    let v3_bad_sub = format!("wss://{ONION}.x.onion");
    let table: Vec<(&str, &str)> = vec![
        ("", "Empty"),
        ("   \n\t ", "Empty"),
        (&too_long, "TooLong"),
        // Whitespace, control and invisible characters, raw.
        ("wss://relay damus.io", "ForbiddenCharacter"),
        ("wss://relay.damus.io/in box", "ForbiddenCharacter"),
        ("wss://relay.\tdamus.io", "ForbiddenCharacter"),
        ("wss://relay.damus.io\n/x", "ForbiddenCharacter"),
        ("wss://relay.damus.io\u{0}", "ForbiddenCharacter"),
        ("wss://relay.damus.io/\u{7f}", "ForbiddenCharacter"),
        ("wss://relay.damus.io/\u{85}x", "ForbiddenCharacter"),
        ("wss://relay.\u{a0}damus.io", "ForbiddenCharacter"),
        ("wss://relay.\u{3000}damus.io", "ForbiddenCharacter"),
        ("wss://relay\u{200b}.damus.io", "ForbiddenCharacter"),
        ("wss://re\u{ad}lay.damus.io", "ForbiddenCharacter"),
        ("\u{feff}wss://relay.damus.io", "ForbiddenCharacter"),
        ("wss://relay.damus.io\\", "ForbiddenCharacter"),
        ("wss:\\\\relay.damus.io", "ForbiddenCharacter"),
        // The same, percent-encoded.
        ("wss://relay.damus.io/%20", "EncodedJunk"),
        ("wss://relay.damus.io%20", "EncodedJunk"),
        ("wss://relay.damus.io/%0a", "EncodedJunk"),
        ("wss://relay.damus.io/%0D%0A", "EncodedJunk"),
        ("wss://relay.damus.io/x%09y", "EncodedJunk"),
        ("wss://relay.damus.io/%00", "EncodedJunk"),
        ("wss://relay.damus.io/%7F", "EncodedJunk"),
        ("wss://relay.damus.io/%C2%A0", "EncodedJunk"),
        ("wss://relay.damus.io/%e2%80%8b", "EncodedJunk"),
        ("%20wss://relay.damus.io", "EncodedJunk"),
        // Schemes.
        ("relay.damus.io", "MissingScheme"),
        ("relay.damus.io:443", "MissingScheme"),
        ("//relay.damus.io", "MissingScheme"),
        ("wss:relay.damus.io", "MissingScheme"),
        ("wss:/relay.damus.io", "MissingScheme"),
        ("nostr:npub1xyz", "MissingScheme"),
        ("relay.damus.io/?r=wss://x.com", "MissingScheme"),
        ("https://relay.damus.io", "UnsupportedScheme"),
        ("http://relay.damus.io", "UnsupportedScheme"),
        ("ftp://relay.damus.io", "UnsupportedScheme"),
        ("wsss://relay.damus.io", "UnsupportedScheme"),
        // Two URLs glued together.
        ("wss://https//relay.damus.io", "GluedUrl"),
        ("wss://wss://relay.damus.io", "GluedUrl"),
        ("ws://http:relay.damus.io", "GluedUrl"),
        ("wss://HTTPS://relay.damus.io", "GluedUrl"),
        ("wss://ws/relay.damus.io", "GluedUrl"),
        ("wss://wss", "GluedUrl"),
        ("wss://https.", "GluedUrl"),
        ("wss://\u{ff37}\u{ff33}\u{ff33}/x", "GluedUrl"),
        ("wss://http:443", "GluedUrl"),
        ("wss://relay.damus.io//relay.nostr.band", "GluedUrl"),
        ("wss://relay.damus.io:443//x", "GluedUrl"),
        // Credentials, query, fragment.
        ("wss://user:pass@relay.damus.io", "Credentials"),
        ("wss://user@relay.damus.io", "Credentials"),
        ("wss://@relay.damus.io", "Credentials"),
        ("wss://:@relay.damus.io", "Credentials"),
        ("wss://relay.damus.io?x=1", "Query"),
        ("wss://relay.damus.io/?", "Query"),
        ("wss://relay.damus.io/inbox?ref=nostr", "Query"),
        ("wss://relay.damus.io#x", "Fragment"),
        ("wss://relay.damus.io/#", "Fragment"),
        // Dot segments.
        ("wss://a.com/./x", "DotSegment"),
        ("wss://a.com/a/../b", "DotSegment"),
        ("wss://a.com/..", "DotSegment"),
        ("wss://a.com/%2e%2E/b", "DotSegment"),
        ("wss://a.com/.%2e", "DotSegment"),
        // Hosts.
        ("wss://", "EmptyHost"),
        ("wss:///relay.damus.io", "EmptyHost"),
        ("wss:///", "EmptyHost"),
        ("wss://:443", "EmptyHost"),
        ("wss://.", "EmptyHost"),
        ("wss://relay..damus.io", "InvalidHost"),
        ("wss://relay.damus.io..", "InvalidHost"),
        ("wss://.relay.damus.io", "InvalidHost"),
        (&long_label, "InvalidHost"),
        (&long_name, "InvalidHost"),
        ("wss://[::1", "Malformed"),
        ("wss://rel<ay.com", "Malformed"),
        ("wss://1.2.3.4.5", "Malformed"),
        ("wss://xn--a.com", "Malformed"),
        // Ports.
        ("wss://relay.damus.io:0", "PortZero"),
        ("ws://relay.damus.io:00/", "PortZero"),
        ("wss://relay.damus.io:65536", "Malformed"),
        ("wss://relay.damus.io:44a", "Malformed"),
        ("wss://relay.damus.io:-1", "Malformed"),
        // Onions other than v3.
        ("wss://expyuzz4wqqyqhjn.onion", "InvalidOnion"),
        (&v3_short, "InvalidOnion"),
        (&v3_long, "InvalidOnion"),
        (&v3_bad_char, "InvalidOnion"),
        (&v3_bad_sub, "InvalidOnion"),
        ("wss://relay.onion", "InvalidOnion"),
    ];
    for (input, want) in table {
        match normalize(input) {
            Ok(url) => panic!("{input:?} accepted as {url}, expected {want}"),
            Err(e) => {
                let got = kind(&e);
                assert_eq!(got, want, "{input:?} refused with {e}");
                // Every refusal is also a refusal of the policy-checking entry point.
                assert_eq!(parse_relay_url(input, &local()), Err(e), "{input:?}");
            }
        }
    }
}

#[test]
fn trailing_carriage_return_is_trimmed() {
    assert_eq!(
        normalize("wss://relay.damus.io\r").map(|u| u.to_string()),
        Ok("wss://relay.damus.io".to_string())
    );
}

#[test]
fn length_limit_is_on_bytes() {
    let base = "wss://a.com/";
    let fits = format!("{base}{}", "x".repeat(MAX_URL_LEN - base.len()));
    assert_eq!(fits.len(), MAX_URL_LEN);
    assert!(normalize(&fits).is_ok());
    let over = format!("{fits}x");
    assert_eq!(
        normalize(&over),
        Err(UrlError::TooLong {
            len: MAX_URL_LEN + 1,
            max: MAX_URL_LEN
        })
    );
}

#[test]
fn error_messages_name_the_problem() {
    let cases: Vec<(&str, &str)> = vec![
        (
            "https://x.com",
            "relay URL \"https://x.com\" has scheme \"https\"; only ws:// and wss:// relays exist",
        ),
        ("wss://a.com?x", "query"),
        ("wss://u:p@a.com", "credentials"),
        ("wss://a b.com", "whitespace (U+0020) at byte 7"),
        ("wss://a.com/%0A", "percent-encoded whitespace"),
        ("wss://https//a.com", "two URLs glued together"),
        ("wss://abc.onion", "not a v3 onion address"),
        ("wss://a.com:0", "port 0"),
        ("wss://a..com", "empty label"),
        ("a.com", "starts with wss://"),
    ];
    for (input, needle) in cases {
        let msg = normalize(input)
            .map(|u| u.to_string())
            .unwrap_err()
            .to_string();
        assert!(msg.contains(needle), "{input:?}: {msg:?} lacks {needle:?}");
    }
    let msg = parse_relay_url("ws://169.254.169.254", &strict())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("link-local address 169.254.169.254"), "{msg}");
    assert!(msg.contains("allow_local"), "{msg}");
    assert!(msg.contains("allow_hosts"), "{msg}");
    // Control characters are escaped, so the message is one safe log line.
    let msg = normalize("wss://a.com/\u{1b}[31m").unwrap_err().to_string();
    assert!(
        !msg.contains('\u{1b}') && msg.contains("\\u{1b}"),
        "{msg:?}"
    );
}

#[test]
fn policy_refuses_local_hosts_by_default() {
    let refused = [
        "ws://localhost:7777",
        "ws://LOCALHOST",
        "ws://localhost.",
        "ws://relay.localhost",
        "ws://printer.local",
        "ws://relay.internal",
        "ws://metadata.google.internal",
        "ws://nas.lan",
        "ws://box.home.arpa",
        "ws://home.arpa",
        "ws://router.localdomain",
        "ws://relay.intranet",
        "ws://relay.private",
        "ws://relay.corp",
        "ws://relay.home",
        "ws://relay",
        "ws://nostr-relay:7777",
        "ws://127.0.0.1",
        "ws://127.1",
        "ws://2130706433",
        "ws://0x7f.0.0.1",
        "ws://0.0.0.0",
        "ws://10.1.2.3",
        "ws://172.16.0.1",
        "ws://172.31.255.255",
        "ws://192.168.1.1",
        "ws://169.254.169.254",
        "ws://100.64.0.1",
        "ws://192.0.0.8",
        "ws://192.0.2.1",
        "ws://198.18.0.1",
        "ws://224.0.0.1",
        "ws://240.0.0.1",
        "ws://255.255.255.255",
        "ws://[::]",
        "ws://[::1]",
        "ws://[fd00::1]",
        "ws://[fe80::1]",
        "ws://[ff02::1]",
        "ws://[2001:db8::1]",
        "ws://[::ffff:127.0.0.1]",
        "ws://[::ffff:169.254.169.254]",
        "ws://[::10.0.0.1]",
        "ws://[64:ff9b::10.0.0.1]",
        "ws://[2002:7f00:1::]",
        "ws://[2001::1]",
    ];
    for input in refused {
        let url = normalize(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        match check_policy(&url, &strict()) {
            Err(UrlError::Refused { url: u, host, .. }) => {
                assert_eq!(u, url.as_str(), "{input:?}");
                assert_eq!(host, url.host(), "{input:?}");
            }
            other => panic!("{input:?} not refused by default: {other:?}"),
        }
        assert!(parse_relay_url(input, &strict()).is_err(), "{input:?}");
        // The operator switch allows every one of them.
        assert_eq!(check_policy(&url, &local()), Ok(()), "{input:?}");
        assert_eq!(parse_relay_url(input, &local()), Ok(url), "{input:?}");
    }
}

#[test]
fn policy_allows_public_hosts_and_overlays() {
    let onion = format!("wss://{ONION}.onion");
    let allowed = [
        "wss://relay.damus.io",
        "wss://nostr.wine/inbox",
        "wss://xn--bcher-kva.example",
        "wss://localhost.example.com",
        "wss://local.example.com",
        "wss://relay.xlan",
        "wss://relay.locals",
        "wss://internal.example.org",
        "wss://8.8.8.8",
        "wss://1.1.1.1:4443",
        "wss://172.32.0.1",
        "wss://100.128.0.1",
        "wss://[2606:4700:4700::1111]",
        "wss://[::ffff:8.8.8.8]",
        "wss://[64:ff9b::8.8.8.8]",
        "wss://[2002:808:808::1]",
        &onion,
        "ws://abcdef.b32.i2p",
        "wss://relay.loki",
    ];
    for input in allowed {
        let url = parse_relay_url(input, &strict());
        assert_eq!(url, normalize(input), "{input:?}");
        assert!(url.is_ok(), "{input:?}: {url:?}");
    }
}

#[test]
fn overlays_are_never_refused() {
    // Even a subdomain label that would be local-only on clearnet.
    for input in [
        format!("ws://localhost.{ONION}.onion"),
        "ws://relay.local.i2p".to_string(),
        "ws://localhost.loki".to_string(),
    ] {
        let url = normalize(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_ne!(url.network(), Network::Clearnet, "{input:?}");
        assert_eq!(check_policy(&url, &strict()), Ok(()), "{input:?}");
    }
}

#[test]
fn allow_hosts_allows_exactly_the_listed_hosts() {
    // (allow list, input, allowed)
    let table: Vec<(&[&str], &str, bool)> = vec![
        (&["127.0.0.1"], "ws://127.0.0.1:7777", true),
        (&["127.0.0.1"], "ws://127.1:7777", true),
        (&["127.0.0.1"], "ws://127.0.0.2", false),
        (&["127.0.0.1"], "ws://localhost", false),
        (&["127.0.0.1"], "ws://[::ffff:127.0.0.1]", false),
        (&[" 127.0.0.1 "], "ws://127.0.0.1", true),
        (&["localhost"], "ws://localhost:8080", true),
        (&["localhost"], "ws://LocalHost.:8080/", true),
        (&["LocalHost."], "ws://localhost", true),
        (&["localhost"], "ws://relay.localhost", false),
        (&["localhost"], "ws://127.0.0.1", false),
        (&["relay.lan"], "ws://relay.lan", true),
        (&["relay.lan"], "ws://other.lan", false),
        (&["bücher.lan"], "ws://xn--bcher-kva.lan", true),
        (&["::1"], "ws://[::1]", true),
        (&["[::1]"], "ws://[::1]:7777", true),
        (&["[0::1]"], "ws://[::1]", true),
        (&["::1"], "ws://[::2]", false),
        (&["10.0.0.5", "nas"], "ws://nas", true),
        (&["10.0.0.5", "nas"], "ws://10.0.0.5", true),
        (&["10.0.0.5", "nas"], "ws://10.0.0.6", false),
        (&[""], "ws://localhost", false),
        (&["."], "ws://localhost", false),
        (&["localhost:8080"], "ws://localhost:8080", false),
    ];
    for (list, input, allowed) in table {
        let url = normalize(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        let got = check_policy(&url, &hosts(list));
        assert_eq!(got.is_ok(), allowed, "{list:?} / {input:?}: {got:?}");
        if !allowed {
            assert!(matches!(got, Err(UrlError::Refused { .. })), "{got:?}");
        }
    }
}

#[test]
fn policy_agrees_with_is_refused_ip_for_ip_hosts() {
    for (ip, _) in IP_TABLE {
        let Ok(addr) = ip.parse::<IpAddr>() else {
            panic!("bad test address {ip}");
        };
        let host = match addr {
            IpAddr::V4(_) => ip.to_string(),
            IpAddr::V6(_) => format!("[{ip}]"),
        };
        let url = normalize(&format!("wss://{host}")).unwrap_or_else(|e| panic!("{ip}: {e}"));
        assert_eq!(
            check_policy(&url, &strict()).is_err(),
            is_refused_ip(addr),
            "{ip}"
        );
    }
}

/// (address, refused)
const IP_TABLE: &[(&str, bool)] = &[
    // IPv4, with the edges of every refused block.
    ("0.0.0.0", true),
    ("0.255.255.255", true),
    ("1.0.0.0", false),
    ("1.1.1.1", false),
    ("8.8.8.8", false),
    ("9.255.255.255", false),
    ("10.0.0.0", true),
    ("10.255.255.255", true),
    ("11.0.0.0", false),
    ("100.63.255.255", false),
    ("100.64.0.0", true),
    ("100.127.255.255", true),
    ("100.128.0.0", false),
    ("126.255.255.255", false),
    ("127.0.0.1", true),
    ("127.255.255.254", true),
    ("128.0.0.0", false),
    ("169.253.255.255", false),
    ("169.254.0.0", true),
    ("169.254.169.254", true),
    ("169.255.0.0", false),
    ("172.15.255.255", false),
    ("172.16.0.0", true),
    ("172.31.255.255", true),
    ("172.32.0.0", false),
    ("192.0.0.0", true),
    ("192.0.0.255", true),
    ("192.0.1.1", false),
    ("192.0.2.1", true),
    ("192.0.3.1", false),
    ("192.167.255.255", false),
    ("192.168.0.0", true),
    ("192.168.255.255", true),
    ("192.169.0.0", false),
    ("198.17.255.255", false),
    ("198.18.0.0", true),
    ("198.19.255.255", true),
    ("198.20.0.0", false),
    ("198.51.100.7", true),
    ("198.51.101.7", false),
    ("203.0.113.9", true),
    ("203.0.114.9", false),
    ("223.255.255.255", false),
    ("224.0.0.0", true),
    ("239.255.255.255", true),
    ("240.0.0.0", true),
    ("255.255.255.254", true),
    ("255.255.255.255", true),
    // IPv6.
    ("::", true),
    ("::1", true),
    ("::2", true),
    ("::8.8.8.8", false),
    ("::10.0.0.1", true),
    ("::ffff:8.8.8.8", false),
    ("::ffff:0.0.0.0", true),
    ("::ffff:10.0.0.1", true),
    ("::ffff:127.0.0.1", true),
    ("::ffff:192.168.1.1", true),
    ("64:ff9b::8.8.8.8", false),
    ("64:ff9b::127.0.0.1", true),
    ("64:ff9b::192.168.1.1", true),
    ("64:ff9b:1::8.8.8.8", true),
    ("2002:808:808::", false),
    ("2002:a00:1::1", true),
    ("2002:c0a8:101::", true),
    ("2002:7f00:1::", true),
    ("2001::1", true),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", true),
    ("2001:1::1", false),
    ("2001:2::1", true),
    ("2001:db8::1", true),
    ("2001:db8:ffff::1", true),
    ("2001:db9::1", false),
    ("2001:4860:4860::8888", false),
    ("2606:4700:4700::1111", false),
    ("2a00:1450:4001::1", false),
    ("3ffe::1", false),
    ("3fff::1", true),
    ("3fff:fff:ffff::1", true),
    ("3fff:1000::1", false),
    ("100::1", true),
    ("100:0:0:1::1", false),
    ("fbff::1", false),
    ("fc00::1", true),
    ("fdff:ffff::1", true),
    ("fe80::1", true),
    ("febf::1", true),
    ("fec0::1", true),
    ("ff00::1", true),
    ("ff02::1", true),
];

#[test]
fn refused_ip_table() {
    for (ip, refused) in IP_TABLE {
        let Ok(addr) = ip.parse::<IpAddr>() else {
            panic!("bad test address {ip}");
        };
        assert_eq!(is_refused_ip(addr), *refused, "{ip}");
    }
}

#[test]
fn http_url_maps_scheme_and_keeps_the_rest() {
    let onion = format!("wss://{ONION}.onion/x");
    let onion_http = format!("https://{ONION}.onion/x");
    let table: Vec<(&str, &str)> = vec![
        ("wss://relay.damus.io", "https://relay.damus.io"),
        ("wss://relay.damus.io:443/", "https://relay.damus.io"),
        ("ws://relay.example.com:80", "http://relay.example.com"),
        ("ws://a.com:8080/x/", "http://a.com:8080/x"),
        ("wss://a.com:80", "https://a.com:80"),
        ("ws://a.com:443", "http://a.com:443"),
        ("wss://[::1]:7777", "https://[::1]:7777"),
        ("wss://nostr.wine/inbox", "https://nostr.wine/inbox"),
        (&onion, &onion_http),
    ];
    for (input, want) in table {
        let url = normalize(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(url.http_url(), want, "{input:?}");
    }
}

#[test]
fn network_names_round_trip() {
    let all = [
        (Network::Clearnet, "clearnet"),
        (Network::Tor, "tor"),
        (Network::I2p, "i2p"),
        (Network::Loki, "loki"),
    ];
    for (network, name) in all {
        assert_eq!(network.as_str(), name);
        assert_eq!(network.to_string(), name);
        assert_eq!(Network::parse(name), Some(network));
        assert_eq!(Network::parse(&name.to_uppercase()), Some(network));
    }
    for bad in ["", "onion", "clear net", "i2", "lokinet"] {
        assert_eq!(Network::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn relay_urls_order_by_normal_form() {
    let mut urls: Vec<RelayUrl> = ["wss://b.com", "WS://C.com", "wss://a.com/x", "wss://a.com"]
        .iter()
        .filter_map(|s| normalize(s).ok())
        .collect();
    urls.sort();
    let strs: Vec<&str> = urls.iter().map(RelayUrl::as_str).collect();
    assert_eq!(
        strs,
        ["ws://c.com", "wss://a.com", "wss://a.com/x", "wss://b.com"]
    );
}

#[test]
fn default_policy_is_strict() {
    let p = UrlPolicy::default();
    assert!(!p.allow_local);
    assert!(p.allow_hosts.is_empty());
}
