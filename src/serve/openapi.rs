//! The HTTP routes as data: the router finds a request's route here (and its cost against the
//! rate limit), and the OpenAPI 3.1 document at `/v1/openapi.json` and the docs page at
//! `/v1/docs` are generated from the same table, so neither can list a route that is not
//! served or miss one that is.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use super::access::Cost;
use super::page::esc;

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Query,
    Path,
}

/// One parameter of a route.
pub struct Param {
    pub name: &'static str,
    pub at: In,
    pub required: bool,
    pub description: &'static str,
    pub schema: fn() -> Value,
}

/// What a successful answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// JSON matching the named schema in `components.schemas`.
    Json(&'static str),
    /// Newline-delimited JSON, one event per line.
    Ndjson,
    Html,
    Text,
}

/// One route (all are `GET`).
pub struct Route {
    /// The path; `{id}` marks a path parameter.
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    pub params: &'static [Param],
    pub ok: Body,
    /// Error statuses it answers besides 401 and 429 (which every route may).
    pub errors: &'static [u16],
    pub cost: Cost,
}

fn hex_list() -> Value {
    json!({"type": "string", "pattern": "^[0-9a-f]{64}(,[0-9a-f]{64})*$"})
}
fn kinds_list() -> Value {
    json!({"type": "string", "pattern": "^[0-9]{1,5}(,[0-9]{1,5})*$"})
}
fn uint() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
}
fn text() -> Value {
    json!({"type": "string"})
}
fn tag_list() -> Value {
    json!({"type": "string", "description": "An empty value is the value \"\"."})
}
fn cursor() -> Value {
    json!({"type": "string", "pattern": "^[0-9]{1,19}:[0-9a-f]{64}$"})
}
fn id_schema() -> Value {
    json!({"type": "string", "pattern": "^[0-9a-f]{64}$"})
}
fn days() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": 366})
}
fn stats_days() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": 3660})
}
fn versions() -> Value {
    json!({"type": "string", "enum": ["latest", "all"]})
}
fn status_values() -> Value {
    json!({"type": "string", "enum": ["online", "offline", "unknown"]})
}

macro_rules! q {
    ($name:literal, $schema:ident, $desc:literal) => {
        Param {
            name: $name,
            at: In::Query,
            required: false,
            description: $desc,
            schema: $schema,
        }
    };
}

/// The NIP-01 filter as query parameters (shared by events, count and export).
const FILTER: [Param; 13] = [
    q!("ids", hex_list, "Event ids, comma-separated."),
    q!("authors", hex_list, "Author public keys (hex), comma-separated."),
    q!("kinds", kinds_list, "Kinds, comma-separated."),
    q!("since", uint, "Oldest created_at (inclusive)."),
    q!("until", uint, "Newest created_at (inclusive)."),
    q!("limit", uint, "Most events (events: at most serve.max_limit)."),
    q!("tag.e", tag_list, "`#e` tag values, comma-separated (any single-letter tag works the same: tag.<letter>, or %23<letter>)."),
    q!("tag.p", tag_list, "`#p` tag values, comma-separated."),
    q!("tag.t", tag_list, "`#t` tag values, comma-separated."),
    q!("tag.d", tag_list, "`#d` tag values, comma-separated."),
    q!("filter", text, "The whole filter as NIP-01 JSON, instead of the parameters above."),
    q!("after", cursor, "Continue after this position (`next` of the previous page, or the last exported event as `<created_at>:<id>`)."),
    q!("versions", versions, "`latest` (default): only the newest version of replaceable and addressable events, as relays serve them; `all`: every version archived."),
];

pub const ROUTES: &[Route] = &[
    Route {
        path: "/",
        id: "root",
        summary: "The status page; the relay's NIP-11 document; the websocket relay",
        description: "A browser gets the status page (HTML). `Accept: application/nostr+json` gets the NIP-11 document. A websocket upgrade opens the read-only Nostr relay (REQ, CLOSE, COUNT, NEG-OPEN/MSG/CLOSE; EVENT is refused).",
        params: &[],
        ok: Body::Html,
        errors: &[500, 503],
        cost: Cost::Query,
    },
    Route {
        path: "/health",
        id: "health",
        summary: "Liveness",
        description: "Always `ok` while the server runs, with the open websocket connections.",
        params: &[],
        ok: Body::Json("Health"),
        errors: &[],
        cost: Cost::Light,
    },
    Route {
        path: "/metrics",
        id: "metrics",
        summary: "Prometheus metrics of the whole node",
        description: "Text exposition format 0.0.4: events stored and refused, pages, sessions, relays by status, monitor checks, spool depth, ship lag, Tor, and this server's requests and latencies.",
        params: &[],
        ok: Body::Text,
        errors: &[404, 500, 503],
        cost: Cost::Query,
    },
    Route {
        path: "/v1/events",
        id: "events",
        summary: "Events by NIP-01 filter, newest first, one page",
        description: "Ties in one second are ordered by id, lowest first. A full page has a `next` cursor: pass it as `after` for the next page. `limit` defaults to serve.default_limit.",
        params: &FILTER,
        ok: Body::Json("EventPage"),
        errors: &[400, 422, 500, 503],
        cost: Cost::Query,
    },
    Route {
        path: "/v1/events/{id}",
        id: "event",
        summary: "One event with every relay it was seen on, and when",
        description: "Asked by id: every version is served, not only the latest.",
        params: &[Param {
            name: "id",
            at: In::Path,
            required: true,
            description: "The event id (64 lowercase hex).",
            schema: id_schema,
        }],
        ok: Body::Json("EventWithSightings"),
        errors: &[400, 404, 500, 503],
        cost: Cost::Light,
    },
    Route {
        path: "/v1/count",
        id: "count",
        summary: "How many events a filter matches (NIP-45 semantics)",
        description: "`limit` is ignored, as NIP-45 says.",
        params: &FILTER,
        ok: Body::Json("Count"),
        errors: &[400, 422, 500, 503],
        cost: Cost::Query,
    },
    Route {
        path: "/v1/export",
        id: "export",
        summary: "Every event a filter matches, streamed as NDJSON, newest first",
        description: "One event per line, no time budget; memory is bounded whatever the filter. If the stream is cut, ask again with `after=<created_at>:<id>` of the last line received: nothing is skipped or repeated. At most serve.max_exports run at once (503 with Retry-After beyond).",
        params: &FILTER,
        ok: Body::Ndjson,
        errors: &[400, 503],
        cost: Cost::Export,
    },
    Route {
        path: "/v1/stats",
        id: "stats",
        summary: "Statistics: events per kind and per day; relays by software, network and NIP",
        description: "Event counts are the events whose bodies this node holds, kept as they are written (no rescan). Days are UTC days of `created_at`.",
        params: &[Param {
            name: "days",
            at: In::Query,
            required: false,
            description: "Days of events per day, ending today (default 30).",
            schema: stats_days,
        }],
        ok: Body::Json("Stats"),
        errors: &[400, 404, 500, 503],
        cost: Cost::Heavy,
    },
    Route {
        path: "/v1/status",
        id: "status",
        summary: "The node's status, as `bigbrotr status --json` prints it",
        description: "",
        params: &[],
        ok: Body::Json("Status"),
        errors: &[404, 500, 503],
        cost: Cost::Query,
    },
    Route {
        path: "/v1/relays",
        id: "relays",
        summary: "Every registered relay with its health",
        description: "Status, last check, round trips, policies, software, 7-day uptime; as `bigbrotr relays list --json`.",
        params: &[Param {
            name: "status",
            at: In::Query,
            required: false,
            description: "Only relays with this status.",
            schema: status_values,
        }],
        ok: Body::Json("Relays"),
        errors: &[400, 404, 500, 503],
        cost: Cost::Query,
    },
    Route {
        path: "/v1/relay",
        id: "relay",
        summary: "One relay with its NIP-11 and NIP-66 history",
        description: "As `bigbrotr relays show --json`.",
        params: &[
            Param {
                name: "url",
                at: In::Query,
                required: true,
                description: "The relay's URL (ws:// or wss://).",
                schema: text,
            },
            Param {
                name: "days",
                at: In::Query,
                required: false,
                description: "Days of history (default 7).",
                schema: days,
            },
        ],
        ok: Body::Json("Relay"),
        errors: &[400, 404, 500, 503],
        cost: Cost::Query,
    },
    Route {
        path: "/v1/openapi.json",
        id: "openapi",
        summary: "This document (OpenAPI 3.1)",
        description: "",
        params: &[],
        ok: Body::Json("OpenApi"),
        errors: &[],
        cost: Cost::Light,
    },
    Route {
        path: "/v1/docs",
        id: "docs",
        summary: "The routes, for people",
        description: "",
        params: &[],
        ok: Body::Html,
        errors: &[],
        cost: Cost::Light,
    },
];

/// The route serving `path`, if any.
pub fn find(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| match r.path.split_once("{id}") {
        Some((head, "")) => path
            .strip_prefix(head)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
        _ => r.path == path,
    })
}

fn schemas() -> Value {
    let event = json!({
        "type": "object",
        "required": ["id", "pubkey", "created_at", "kind", "tags", "content", "sig"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "pubkey": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "created_at": {"type": "integer", "minimum": 0},
            "kind": {"type": "integer", "minimum": 0, "maximum": 65535},
            "tags": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            "content": {"type": "string"},
            "sig": {"type": "string", "pattern": "^[0-9a-f]{128}$"}
        }
    });
    let counts = |key: &str, key_schema: Value| {
        json!({"type": "array", "items": {
            "type": "object", "required": [key, "count"],
            "properties": {key: key_schema, "count": {"type": "integer", "minimum": 0}}
        }})
    };
    json!({
        "Event": event,
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"}
            }
        },
        "Health": {
            "type": "object", "required": ["status", "connections"],
            "properties": {"status": {"const": "ok"}, "connections": {"type": "integer", "minimum": 0}}
        },
        "EventPage": {
            "type": "object", "required": ["events", "next"],
            "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                "next": {"type": ["string", "null"], "description": "Pass as `after` for the next page; null on the last page."}
            }
        },
        "EventWithSightings": {
            "type": "object", "required": ["event", "seen_on"],
            "properties": {
                "event": {"$ref": "#/components/schemas/Event"},
                "seen_on": {"type": "array", "items": {
                    "type": "object", "required": ["relay", "first_seen"],
                    "properties": {
                        "relay": {"type": ["string", "null"]},
                        "first_seen": {"type": "integer", "description": "Unix time this node first saw it there."}
                    }
                }}
            }
        },
        "Count": {
            "type": "object", "required": ["count"],
            "properties": {"count": {"type": "integer", "minimum": 0}}
        },
        "Stats": {
            "type": "object", "required": ["events", "relays"],
            "properties": {
                "events": {
                    "type": "object", "required": ["total", "per_kind", "per_day"],
                    "properties": {
                        "total": {"type": "integer", "minimum": 0},
                        "per_kind": counts("kind", json!({"type": "integer"})),
                        "per_day": counts("day", json!({"type": "string", "format": "date"}))
                    }
                },
                "relays": {
                    "type": "object", "required": ["total", "by_status", "by_software", "by_network", "by_nip"],
                    "properties": {
                        "total": {"type": "integer", "minimum": 0},
                        "by_status": counts("status", json!({"type": "string"})),
                        "by_software": counts("software", json!({"type": "string"})),
                        "by_network": counts("network", json!({"type": "string"})),
                        "by_nip": counts("nip", json!({"type": "integer"}))
                    }
                }
            }
        },
        "Status": {"type": "object", "description": "What `bigbrotr status --json` prints (docs/CLI.md)."},
        "Relays": {
            "type": "object", "required": ["relays"],
            "properties": {"relays": {"type": "array", "items": {
                "type": "object", "required": ["url", "network", "status"],
                "properties": {"url": {"type": "string"}, "network": {"type": "string"}, "status": {"type": "string"}}
            }}}
        },
        "Relay": {"type": "object", "description": "What `bigbrotr relays show --json` prints (docs/CLI.md)."},
        "OpenApi": {"type": "object"}
    })
}

fn status_text(code: u16) -> &'static str {
    match code {
        400 => "The request is malformed; `detail` says how.",
        401 => "A credential was given and is wrong (unknown API key, bad NIP-98 event).",
        404 => "Not found, or not available from this source.",
        422 => "The query ran past serve.query_timeout_ms; narrow the filter.",
        429 => "Rate-limited: wait Retry-After seconds.",
        500 => "The archive could not be read.",
        503 => "Busy or shutting down; retry after Retry-After seconds when given.",
        _ => "Error.",
    }
}

/// The OpenAPI 3.1 document.
pub fn document(server_name: &str) -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .params
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "in": if p.at == In::Path { "path" } else { "query" },
                    "required": p.required,
                    "description": p.description,
                    "schema": (p.schema)(),
                })
            })
            .collect();
        let ok = match r.ok {
            Body::Json(name) => {
                json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}})
            }
            Body::Ndjson => json!({"application/x-ndjson": {"schema": {"type": "string"}}}),
            Body::Html => json!({"text/html": {"schema": {"type": "string"}}}),
            Body::Text => json!({"text/plain": {"schema": {"type": "string"}}}),
        };
        let mut responses = Map::new();
        responses.insert("200".into(), json!({"description": "OK", "content": ok}));
        let problem = json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}});
        for code in r.errors.iter().chain(&[401u16, 429]) {
            let mut resp = json!({"description": status_text(*code), "content": problem});
            if *code == 429 || *code == 503 {
                resp["headers"] = json!({"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}});
            }
            responses.insert(code.to_string(), resp);
        }
        let mut op = json!({
            "operationId": r.id,
            "summary": r.summary,
            "parameters": params,
            "responses": responses,
            "x-rate-limit-cost": r.cost as u32,
        });
        if !r.description.is_empty() {
            op["description"] = r.description.into();
        }
        paths.insert(r.path.into(), json!({ "get": op }));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("{server_name}: BigBrotr read API"),
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST API of a BigBrotr node's archive (docs/SERVE.md). Rate limits are per client address; an API key (Authorization: Bearer) or a NIP-98 event from a trusted pubkey (Authorization: Nostr) lifts them. `x-rate-limit-cost` is what each route costs.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key from serve.api_keys_file or BIGBROTR_API_KEYS."},
                "nip98": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "`Nostr <base64 of a kind-27235 event>` (NIP-98), signed by a pubkey in serve.trusted_pubkeys."}
            }
        },
        "security": [{}, {"apiKey": []}, {"nip98": []}],
    })
}

/// The docs page: every route with its parameters, from the same table.
pub fn docs_page(server_name: &str) -> String {
    let mut out = String::with_capacity(16 << 10);
    let name = esc(server_name);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{name}: API</title><style>body{{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0 .8rem}}code{{background:#f3f3f3;padding:0 .2rem}}table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #eee;padding:.2rem .4rem;text-align:left;vertical-align:top}}</style></head><body><h1>{name}: API</h1><p>Machine-readable: <a href=\"/v1/openapi.json\">/v1/openapi.json</a> (OpenAPI 3.1). Errors are RFC 9457 problem details. Rate limits are per client address (429 with Retry-After); <code>Authorization: Bearer &lt;API key&gt;</code> or a NIP-98 <code>Authorization: Nostr</code> event from a trusted pubkey lifts them.</p>"
    );
    for r in ROUTES {
        let _ = write!(
            out,
            "<h2 id=\"{}\"><code>GET {}</code></h2><p>{}</p>",
            r.id,
            esc(r.path),
            esc(r.summary)
        );
        if !r.description.is_empty() {
            let _ = write!(out, "<p>{}</p>", esc(r.description));
        }
        if !r.params.is_empty() {
            out.push_str("<table><tr><th>parameter</th><th>in</th><th></th></tr>");
            for p in r.params {
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(p.name),
                    if p.required { " (required)" } else { "" },
                    if p.at == In::Path { "path" } else { "query" },
                    esc(p.description)
                );
            }
            out.push_str("</table>");
        }
        let _ = write!(
            out,
            "<p>Costs {} token{} of the rate limit.</p>",
            r.cost as u32,
            if r.cost as u32 == 1 { "" } else { "s" }
        );
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_path_and_only_they() {
        assert_eq!(find("/v1/events").unwrap().id, "events");
        assert_eq!(
            find(&format!("/v1/events/{}", "ab".repeat(32))).unwrap().id,
            "event"
        );
        assert!(find("/v1/events/").is_none());
        assert!(find("/v1/events/x/y").is_none());
        assert!(find("/v1/nothing").is_none());
        assert_eq!(find("/").unwrap().id, "root");
    }

    #[test]
    fn the_document_lists_every_route_once_with_its_errors() {
        let doc = document("test");
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), ROUTES.len());
        for r in ROUTES {
            let op = &paths[r.path]["get"];
            assert_eq!(op["operationId"], r.id);
            assert!(op["responses"]["200"].is_object());
            assert!(op["responses"]["429"].is_object(), "{}", r.path);
            if let Body::Json(name) = r.ok {
                assert!(doc["components"]["schemas"][name].is_object(), "{name}");
            }
        }
    }
}
