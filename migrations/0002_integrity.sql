-- BigBrotr archive schema, version 2: one compromised node cannot poison the archive.
--
-- Until now the archive trusted each node's id, pubkey, tags and content, and the first copy of
-- an id won (ON CONFLICT DO NOTHING): a node shipping a real id with other content first made
-- every honest copy be dropped silently. From here on:
-- * ingest_batch recomputes the NIP-01 id of every event it is sent and refuses a batch holding
--   a mismatch (SQLSTATE 22BB1, a data error: the node's shipper splits the batch down to the
--   refused event and sets it aside);
-- * event.first_node records which node inserted each event (NULL for events stored before);
-- * node_touch refuses node keys no operator has bound, when archive_setting
--   'require_bound_keys' is true (the default for a new archive);
-- * node roles get a connection limit and a statement timeout;
-- * new relay URLs must look like relay URLs.
--
-- Still not covered: signatures. The id commits to pubkey, created_at, kind, tags and content
-- but not to sig, and checking BIP-340 signatures needs an extension, so a node can still be
-- the first to store a real event with a bogus sig; first_node says which node did.
--
-- String literals here hold no backslash (chr(92) stands for it), so they mean the same
-- whatever standard_conforming_strings is.

-- NIP-01's serialization of one string: quoted, with exactly backslash, double quote, LF, CR,
-- TAB, backspace and form feed escaped; every other character (the other control characters,
-- '/', non-ASCII) is written as it is. That is not JSON's escaping (JSON writes U+0001 as
-- \u0001), so to_json() cannot stand in. Backslash goes first, so later escapes stay single.
-- No SET clause and every name schema-qualified: PostgreSQL then inlines the body into its
-- caller (a SET clause prevents that, and this runs for every tag value of every event), and
-- the inlined body resolves nothing through the caller's search_path.
-- A pure function of its argument: EXECUTE stays granted to PUBLIC, like tagvalues_of.
CREATE FUNCTION nip01_string(s text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT '"' OPERATOR(pg_catalog.||)
        pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
        pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(s,
            pg_catalog.chr(92), pg_catalog.chr(92) OPERATOR(pg_catalog.||) pg_catalog.chr(92)),
            '"', pg_catalog.chr(92) OPERATOR(pg_catalog.||) '"'),
            pg_catalog.chr(10), pg_catalog.chr(92) OPERATOR(pg_catalog.||) 'n'),
            pg_catalog.chr(13), pg_catalog.chr(92) OPERATOR(pg_catalog.||) 'r'),
            pg_catalog.chr(9), pg_catalog.chr(92) OPERATOR(pg_catalog.||) 't'),
            pg_catalog.chr(8), pg_catalog.chr(92) OPERATOR(pg_catalog.||) 'b'),
            pg_catalog.chr(12), pg_catalog.chr(92) OPERATOR(pg_catalog.||) 'f')
        OPERATOR(pg_catalog.||) '"'
$$;

-- The NIP-01 event id: sha256 of the UTF-8 bytes of
-- [0,"<pubkey hex>",<created_at>,<kind>,<tags>,"<content>"], compact (no whitespace).
-- Built from the parsed tags, element by element in order, not from the text a node sent:
-- nodes send serde_json text, which writes control characters as \u00XX where NIP-01 writes
-- them as they are. NULL when tags is not an array of arrays of strings (not a NIP-01 event;
-- NULL equals no id, so ingest_batch refuses it). Index loops rather than jsonb_array_elements
-- WITH ORDINALITY: no tuplestore per tag and no sort, a third less time on ordinary events,
-- and the order is the array's by construction. tags is copied once first: a value
-- read from a table may be compressed, and each -> on it would decompress it whole again
-- (a 2,000-tag contact list took 0.4 s instead of 9 ms). IMMUTABLE although convert_to() is
-- STABLE: in a UTF8 database (node_touch refuses others) it copies the bytes.
-- Pure, touches no table: EXECUTE stays granted to PUBLIC (researchers can check stored rows).
CREATE FUNCTION nip01_event_id(pubkey bytea, created_at bigint, kind integer, tags jsonb,
                               content text) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog AS $$
DECLARE
    tl    jsonb;
    tag   jsonb;
    v     jsonb;
    one   text;
    parts text[] := '{}';
BEGIN
    IF jsonb_typeof(tags) <> 'array' THEN
        RETURN NULL;
    END IF;
    tl := tags || '[]'::jsonb;
    FOR i IN 0 .. jsonb_array_length(tl) - 1 LOOP
        tag := tl -> i;
        IF jsonb_typeof(tag) <> 'array' THEN
            RETURN NULL;
        END IF;
        one := '[';
        FOR j IN 0 .. jsonb_array_length(tag) - 1 LOOP
            v := tag -> j;
            IF jsonb_typeof(v) <> 'string' THEN
                RETURN NULL;
            END IF;
            one := one || CASE WHEN j > 0 THEN ',' ELSE '' END || public.nip01_string(v #>> '{}');
        END LOOP;
        parts := parts || (one || ']');
    END LOOP;
    RETURN sha256(convert_to(
        '[0,"' || encode(pubkey, 'hex') || '",' || created_at::text || ',' || kind::text
        || ',[' || array_to_string(parts, ',') || '],' || public.nip01_string(content) || ']',
        'UTF8'));
END $$;

-- Archive-wide switches, read by the ingest functions (owner only).
CREATE TABLE archive_setting (
    key   text  PRIMARY KEY,
    value jsonb NOT NULL,
    CHECK (key <> 'require_bound_keys' OR jsonb_typeof(value) = 'boolean')
);
REVOKE ALL ON archive_setting FROM PUBLIC;

-- require_bound_keys: a node key must be bound to its role (`bigbrotr archive node add NAME
-- --key HEX`) before the node ships; otherwise the first role to use a key took it, and since
-- keys are public any node role could squat another node's key. On for a new archive; off for
-- one that already has nodes, which ship under keys bound that way (turn it on, as the owner,
-- once every node's key is bound: UPDATE archive_setting SET value = 'true'
-- WHERE key = 'require_bound_keys').
INSERT INTO archive_setting (key, value)
SELECT 'require_bound_keys', to_jsonb(NOT EXISTS (SELECT 1 FROM node));

-- Which node inserted each event: the node to suspect if a stored copy turns out bad.
-- Nullable and without default, so adding it rewrites nothing.
ALTER TABLE event ADD COLUMN first_node bytea;

-- The calling node's row. A key bound to another role is refused as before. An unknown key is
-- refused when require_bound_keys is on (a missing or non-false setting counts as on), else
-- bound to the calling role as before. Reads the row without locking it, so one node's
-- concurrent batches do not serialize here.
CREATE OR REPLACE FUNCTION node_touch(p_node bytea) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    now_s bigint := extract(epoch FROM clock_timestamp())::bigint;
    bound text;
BEGIN
    IF current_setting('server_encoding') <> 'UTF8' THEN
        RAISE EXCEPTION 'the archive database must use UTF8 encoding, not %',
            current_setting('server_encoding') USING ERRCODE = 'BB001';
    END IF;
    SELECT name INTO bound FROM node WHERE id = p_node;
    IF NOT FOUND THEN
        IF (SELECT value FROM archive_setting WHERE key = 'require_bound_keys')
                IS DISTINCT FROM 'false'::jsonb THEN
            RAISE EXCEPTION 'node key % is not bound to any database role: bind the key with `bigbrotr archive node add % --key %` (as the archive''s owner)',
                encode(p_node, 'hex'), session_user, encode(p_node, 'hex')
                USING ERRCODE = '42501',
                      DETAIL = 'This archive requires bound keys (archive_setting require_bound_keys).';
        END IF;
        INSERT INTO node (id, name, first_seen, last_seen)
        VALUES (p_node, session_user, now_s, now_s)
        ON CONFLICT (id) DO NOTHING;
        SELECT name INTO bound FROM node WHERE id = p_node;
    END IF;
    IF bound IS DISTINCT FROM session_user THEN
        RAISE EXCEPTION 'node key % is registered to another database role', encode(p_node, 'hex')
            USING ERRCODE = '42501';
    END IF;
END $$;

-- As in version 1, plus: every event's id is recomputed before anything is inserted, and a
-- batch holding one whose id does not match its fields is refused whole, as a data error
-- naming the event and the node (one statement over the batch; what a correct node sends
-- always matches, since it recomputed every id itself). Without this the first copy of an id
-- won, so a forged copy shipped first would make every honest copy be dropped. The id check
-- also covers events already stored: a forged copy is refused, not silently ignored.
-- Inserted events record the node in first_node. Signature, privileges and grants unchanged.
CREATE OR REPLACE FUNCTION ingest_batch(
    p_node            bytea,
    p_relay_url       text[],
    p_relay_network   text[],
    p_relay_found     bigint[],
    p_id              bytea[],
    p_pubkey          bytea[],
    p_created_at      bigint[],
    p_kind            integer[],
    p_tags            text[],
    p_content         text[],
    p_sig             bytea[],
    p_seen_id         bytea[],
    p_seen_relay      text[],
    p_seen_at         bigint[],
    OUT events_new    bigint,
    OUT sightings_new bigint
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    bad bytea;
BEGIN
    PERFORM set_config('synchronous_commit', 'on', true);
    PERFORM node_touch(p_node);

    SELECT e.id INTO bad
    FROM unnest(p_id, p_pubkey, p_created_at, p_kind, p_tags, p_content) AS e (id, pk, ca, k, t, c)
    WHERE e.id IS DISTINCT FROM nip01_event_id(e.pk, e.ca, e.k, e.t::jsonb, e.c)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'event % does not match its id: node % (role %) sent fields that do not hash to it',
            coalesce(encode(bad, 'hex'), 'NULL'), encode(p_node, 'hex'), session_user
            USING ERRCODE = '22BB1',
                  DETAIL = 'The archive recomputes each event''s NIP-01 id from pubkey, created_at, kind, tags and content; the whole batch was refused.',
                  HINT = 'a node that verified its events never sends this: check that node for a bug or a compromise';
    END IF;

    INSERT INTO relay (url, network, discovered_at)
    SELECT u, n, f FROM unnest(p_relay_url, p_relay_network, p_relay_found) AS r (u, n, f)
    ORDER BY u
    ON CONFLICT (url) DO NOTHING;

    INSERT INTO event (id, pubkey, created_at, kind, tags, tagvalues, content, sig, first_node)
    SELECT e.id, e.pk, e.ca, e.k, e.t::jsonb, tagvalues_of(e.t::jsonb), e.c, e.s, p_node
    FROM unnest(p_id, p_pubkey, p_created_at, p_kind, p_tags, p_content, p_sig)
        AS e (id, pk, ca, k, t, c, s)
    ORDER BY e.id
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS events_new = ROW_COUNT;

    INSERT INTO event_relay (event_id, relay_url, seen_at)
    SELECT s.id, s.u, s.at FROM unnest(p_seen_id, p_seen_relay, p_seen_at) AS s (id, u, at)
    ORDER BY s.id, s.u
    ON CONFLICT (event_id, relay_url) DO NOTHING;
    GET DIAGNOSTICS sightings_new = ROW_COUNT;

    UPDATE node SET
        last_seen = extract(epoch FROM clock_timestamp())::bigint,
        batches = batches + 1,
        events_sent = events_sent + coalesce(cardinality(p_id), 0),
        events_new = node.events_new + ingest_batch.events_new,
        sightings_sent = sightings_sent + coalesce(cardinality(p_seen_id), 0),
        sightings_new = node.sightings_new + ingest_batch.sightings_new
    WHERE id = p_node;
END $$;

-- Node roles: at most 4 connections each (a node opens upstream.connections, 2 by default, so
-- a restart can overlap its old sessions; a node configured above 4 needs a higher limit), and
-- 60 s per statement by default (a batch takes well under a second), so one node cannot take
-- every connection slot or hold locks for long. The timeout is the role's default, which a
-- session may change. `bigbrotr archive node add` sets the same on the roles it creates. A role
-- already limited (by an operator, or by node add) keeps its own values, and needs no privilege.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT m.rolname, m.rolconnlimit,
               EXISTS (SELECT 1 FROM pg_db_role_setting s, unnest(s.setconfig) AS c (kv)
                       WHERE s.setrole = m.oid
                         AND s.setdatabase IN (0, (SELECT oid FROM pg_database
                                                   WHERE datname = current_database()))
                         AND c.kv LIKE 'statement_timeout=%') AS has_timeout
        FROM pg_auth_members a
        JOIN pg_roles g ON g.oid = a.roleid AND g.rolname = 'bigbrotr_node'
        JOIN pg_roles m ON m.oid = a.member
        ORDER BY m.rolname
    LOOP
        BEGIN
            IF r.rolconnlimit = -1 THEN
                EXECUTE format('ALTER ROLE %I CONNECTION LIMIT 4', r.rolname);
            END IF;
            IF NOT r.has_timeout THEN
                EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', r.rolname, '60s');
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'cannot limit node role %: %', r.rolname, SQLERRM
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('as a superuser: ALTER ROLE %I CONNECTION LIMIT 4; '
                                    'ALTER ROLE %I SET statement_timeout = %L; then migrate again',
                                    r.rolname, r.rolname, '60s');
        END;
    END LOOP;
END $$;

-- Relay URLs in the form nodes write them (src/protocol/url.rs): ws:// or wss://, a host name
-- or [IPv6], an optional port, an optional path; no whitespace, control characters,
-- backslash, credentials, query or fragment; at most 2048 bytes. NOT VALID: rows already stored
-- are not checked (an older archive may hold some that fail), new rows are.
ALTER TABLE relay ADD CONSTRAINT relay_url_form CHECK (
    octet_length(url) <= 2048
    AND strpos(url, chr(92)) = 0
    AND url ~ '^wss?://([^][:space:][:cntrl:]/?#@:[]+|[[][0-9A-Fa-f:.]+[]])(:[0-9]{1,5})?(/[^[:space:][:cntrl:]?#]*)?$'
) NOT VALID;

-- Privileges: the new helpers are pure and keep EXECUTE for PUBLIC (see above); the node group
-- still may only call the ingest functions (CREATE OR REPLACE kept their grants; restated).
REVOKE ALL ON FUNCTION node_touch(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION ingest_batch(bytea, text[], text[], bigint[], bytea[], bytea[], bigint[],
    integer[], text[], text[], bytea[], bytea[], text[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ingest_batch(bytea, text[], text[], bigint[], bytea[], bytea[],
    bigint[], integer[], text[], text[], bytea[], bytea[], text[], bigint[]) TO bigbrotr_node;
GRANT SELECT ON archive_setting TO bigbrotr_reader;
