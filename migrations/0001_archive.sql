-- BigBrotr archive schema, version 1 (PostgreSQL 14+).
--
-- Applied by `bigbrotr archive migrate` inside one transaction, under a transaction-scoped
-- advisory lock, recorded with its SHA-256 in bigbrotr_migration. Never edit an applied file:
-- add a new numbered one (the checksum check refuses an edited file).
--
-- Who may do what:
-- * the role that runs the migration owns every object (the "owner" role);
-- * bigbrotr_node (group, NOLOGIN): may only EXECUTE the ingest functions, which run as the
--   owner (SECURITY DEFINER). It cannot SELECT, INSERT, UPDATE or DELETE any table itself;
-- * bigbrotr_reader (group, NOLOGIN): SELECT on the archive tables, for the API and researchers.
-- `bigbrotr archive node add NAME` creates login roles in bigbrotr_node.

DO $$ BEGIN
    CREATE ROLE bigbrotr_node NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
DO $$ BEGIN
    CREATE ROLE bigbrotr_reader NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- Nobody but the owner creates objects here: on PostgreSQL 14 every role may CREATE in public
-- by default, and a node role could then plant a function (say public.cardinality(bytea[]),
-- an exact match that beats the built-in cardinality(anyarray) whatever the search_path) that
-- the SECURITY DEFINER ingest functions would run as the owner. A REVOKE by someone who does
-- not own the schema only warns, so the result is checked and the migration refused.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
DO $$ BEGIN
    IF has_schema_privilege('public', 'public', 'CREATE') THEN
        RAISE EXCEPTION 'every role may create objects in schema public, which would let node roles hijack the ingest functions'
            USING HINT = 'as a superuser: ALTER SCHEMA public OWNER TO ' || current_user
                || ' (or REVOKE CREATE ON SCHEMA public FROM PUBLIC), then migrate again';
    END IF;
END $$;

-- Relays any node has seen or registered.
CREATE TABLE relay (
    url           text PRIMARY KEY,
    network       text NOT NULL CHECK (network IN ('clearnet', 'tor', 'i2p', 'loki')),
    discovered_at bigint NOT NULL
);

-- Events, each exactly once. Nodes verified id and signature before storing (invariant 1).
-- tagvalues holds 'x:value' for every single-letter tag (NIP-01 #x filters), values up to
-- 512 bytes; longer values stay in tags but are not indexed (a GIN key must fit in a page).
CREATE TABLE event (
    id         bytea   NOT NULL CHECK (length(id) = 32),
    pubkey     bytea   NOT NULL CHECK (length(pubkey) = 32),
    created_at bigint  NOT NULL CHECK (created_at >= 0),
    kind       integer NOT NULL CHECK (kind BETWEEN 0 AND 65535),
    tags       jsonb   NOT NULL CHECK (jsonb_typeof(tags) = 'array'),
    tagvalues  text[]  NOT NULL,
    content    text    NOT NULL,
    sig        bytea   NOT NULL CHECK (length(sig) = 64),
    PRIMARY KEY (id)
) PARTITION BY HASH (id);

-- Which relay served which event, first seen when (by the node that reported it first).
CREATE TABLE event_relay (
    event_id  bytea  NOT NULL REFERENCES event (id) ON DELETE CASCADE,
    relay_url text   NOT NULL REFERENCES relay (url) ON DELETE CASCADE,
    seen_at   bigint NOT NULL,
    PRIMARY KEY (event_id, relay_url)
) PARTITION BY HASH (event_id);

DO $$ BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format('CREATE TABLE event_p%s PARTITION OF event
                        FOR VALUES WITH (MODULUS 16, REMAINDER %s)', i, i);
        EXECUTE format('CREATE TABLE event_relay_p%s PARTITION OF event_relay
                        FOR VALUES WITH (MODULUS 16, REMAINDER %s)', i, i);
    END LOOP;
END $$;

-- What the API asks: newest first, by kind, by author, by author and kind, by tag, by relay.
CREATE INDEX event_created_at_idx ON event (created_at DESC);
CREATE INDEX event_kind_created_at_idx ON event (kind, created_at DESC);
CREATE INDEX event_pubkey_created_at_idx ON event (pubkey, created_at DESC);
CREATE INDEX event_pubkey_kind_created_at_idx ON event (pubkey, kind, created_at DESC);
CREATE INDEX event_tagvalues_idx ON event USING gin (tagvalues);
CREATE INDEX event_relay_relay_url_seen_at_idx ON event_relay (relay_url, seen_at DESC);

-- Vantage nodes: the node's public key, the database role it logs in as, and what it sent.
CREATE TABLE node (
    id                bytea  PRIMARY KEY CHECK (length(id) = 32),
    name              text   NOT NULL,
    first_seen        bigint NOT NULL,
    last_seen         bigint NOT NULL,
    batches           bigint NOT NULL DEFAULT 0,
    events_sent       bigint NOT NULL DEFAULT 0,
    events_new        bigint NOT NULL DEFAULT 0,
    sightings_sent    bigint NOT NULL DEFAULT 0,
    sightings_new     bigint NOT NULL DEFAULT 0,
    observations_sent bigint NOT NULL DEFAULT 0
);

-- Content-addressed documents (NIP-11, NIP-66 results): id = sha256 of PostgreSQL's canonical
-- jsonb text, so identical documents are stored once.
CREATE TABLE metadata (
    id   bytea NOT NULL CHECK (length(id) = 32),
    type text  NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (id, type)
);

-- Observations: one time series per relay, per check type, per vantage node.
CREATE TABLE relay_metadata (
    relay_url    text   NOT NULL REFERENCES relay (url) ON DELETE CASCADE,
    generated_at bigint NOT NULL,
    type         text   NOT NULL,
    metadata_id  bytea  NOT NULL,
    node_id      bytea  NOT NULL REFERENCES node (id),
    PRIMARY KEY (relay_url, type, node_id, generated_at),
    FOREIGN KEY (metadata_id, type) REFERENCES metadata (id, type)
);
CREATE INDEX relay_metadata_generated_at_idx ON relay_metadata (generated_at DESC);

-- State of archive-side services (API, cleanup jobs).
CREATE TABLE service_state (
    service    text   NOT NULL,
    key        text   NOT NULL,
    value      jsonb  NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (service, key)
);

CREATE FUNCTION tagvalues_of(tags jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg((t ->> 0) || ':' || (t ->> 1)), '{}')
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(tags) = 'array' THEN tags ELSE '[]' END) AS t
    WHERE jsonb_typeof(t) = 'array'
      AND length(t ->> 0) = 1
      AND t ->> 1 IS NOT NULL
      AND octet_length(t ->> 1) <= 512
$$;

-- The calling node's row: created on first use; a key already registered to another role is
-- refused (a node cannot report under someone else's identity). Takes no row lock on an
-- existing node, so one node's concurrent batches do not serialize here (the counters are
-- updated at the end of each batch).
CREATE FUNCTION node_touch(p_node bytea) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    now_s bigint := extract(epoch FROM clock_timestamp())::bigint;
BEGIN
    IF current_setting('server_encoding') <> 'UTF8' THEN
        RAISE EXCEPTION 'the archive database must use UTF8 encoding, not %',
            current_setting('server_encoding') USING ERRCODE = 'BB001';
    END IF;
    INSERT INTO node (id, name, first_seen, last_seen)
    VALUES (p_node, session_user, now_s, now_s)
    ON CONFLICT (id) DO NOTHING;
    IF NOT EXISTS (SELECT 1 FROM node WHERE id = p_node AND name = session_user) THEN
        RAISE EXCEPTION 'node key % is registered to another database role', encode(p_node, 'hex')
            USING ERRCODE = '42501';
    END IF;
END $$;

-- One shipped batch, all or nothing: relays, events, sightings, the node's counters.
-- Idempotent: replaying a batch inserts nothing twice. Rows are inserted in key order so two
-- nodes shipping overlapping batches take locks in the same order. Returns what was new.
-- The node deletes its spool entries once this returns, so the COMMIT must be durable even on
-- an archive tuned with synchronous_commit = off: set_config(..., true) lasts until the end of
-- the caller's transaction (this function has no SET clause for it).
CREATE FUNCTION ingest_batch(
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
BEGIN
    PERFORM set_config('synchronous_commit', 'on', true);
    PERFORM node_touch(p_node);
    INSERT INTO relay (url, network, discovered_at)
    SELECT u, n, f FROM unnest(p_relay_url, p_relay_network, p_relay_found) AS r (u, n, f)
    ORDER BY u
    ON CONFLICT (url) DO NOTHING;

    INSERT INTO event (id, pubkey, created_at, kind, tags, tagvalues, content, sig)
    SELECT e.id, e.pk, e.ca, e.k, e.t::jsonb, tagvalues_of(e.t::jsonb), e.c, e.s
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

-- Relay observations (NIP-11 documents, NIP-66 results) from one node. p_data holds JSON
-- documents; identical documents are stored once. Returns the observations that were new.
CREATE FUNCTION ingest_observations(
    p_node          bytea,
    p_relay_url     text[],
    p_relay_network text[],
    p_generated_at  bigint[],
    p_type          text[],
    p_data          text[]
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'on', true);
    PERFORM node_touch(p_node);
    INSERT INTO relay (url, network, discovered_at)
    SELECT DISTINCT ON (u) u, w, g
    FROM unnest(p_relay_url, p_relay_network, p_generated_at) AS r (u, w, g)
    ORDER BY u, g
    ON CONFLICT (url) DO NOTHING;

    INSERT INTO metadata (id, type, data)
    SELECT DISTINCT ON (h, t) h, t, j
    FROM (SELECT t, d::jsonb AS j, sha256(convert_to(d::jsonb::text, 'UTF8')) AS h
          FROM unnest(p_type, p_data) AS o (t, d)) AS x
    ORDER BY h, t
    ON CONFLICT (id, type) DO NOTHING;

    INSERT INTO relay_metadata (relay_url, generated_at, type, metadata_id, node_id)
    SELECT u, g, t, sha256(convert_to(d::jsonb::text, 'UTF8')), p_node
    FROM unnest(p_relay_url, p_generated_at, p_type, p_data) AS o (u, g, t, d)
    ORDER BY u, t, g
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;

    UPDATE node SET
        last_seen = extract(epoch FROM clock_timestamp())::bigint,
        observations_sent = observations_sent + coalesce(cardinality(p_type), 0)
    WHERE id = p_node;
    RETURN n;
END $$;

-- Cleanup (owner only): documents no observation refers to, events no relay row refers to.
CREATE FUNCTION delete_orphan_metadata() RETURNS bigint
LANGUAGE sql AS $$
    WITH d AS (
        DELETE FROM metadata m
        WHERE NOT EXISTS (SELECT 1 FROM relay_metadata r
                          WHERE r.metadata_id = m.id AND r.type = m.type)
        RETURNING 1)
    SELECT count(*) FROM d
$$;

CREATE FUNCTION delete_orphan_events() RETURNS bigint
LANGUAGE sql AS $$
    WITH d AS (
        DELETE FROM event e
        WHERE NOT EXISTS (SELECT 1 FROM event_relay r WHERE r.event_id = e.id)
        RETURNING 1)
    SELECT count(*) FROM d
$$;

-- Privileges: nothing for PUBLIC; the node group may only call the ingest functions.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON FUNCTION node_touch(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION ingest_batch(bytea, text[], text[], bigint[], bytea[], bytea[], bigint[],
    integer[], text[], text[], bytea[], bytea[], text[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION ingest_observations(bytea, text[], text[], bigint[], text[], text[])
    FROM PUBLIC;
REVOKE ALL ON FUNCTION delete_orphan_metadata() FROM PUBLIC;
REVOKE ALL ON FUNCTION delete_orphan_events() FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO bigbrotr_node, bigbrotr_reader;
GRANT EXECUTE ON FUNCTION ingest_batch(bytea, text[], text[], bigint[], bytea[], bytea[],
    bigint[], integer[], text[], text[], bytea[], bytea[], text[], bigint[]) TO bigbrotr_node;
GRANT EXECUTE ON FUNCTION ingest_observations(bytea, text[], text[], bigint[], text[], text[])
    TO bigbrotr_node;
GRANT SELECT ON relay, event, event_relay, metadata, relay_metadata, node, service_state
    TO bigbrotr_reader;
