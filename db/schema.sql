-- Today's schema, dumped from a database migrated with db/migrations/ (their history and reasons are
-- there). Regenerate with scripts/schema.sh; a test fails when this file no longer matches.
--
-- PostgreSQL database dump
--



SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: comm_logs_ensure_partition(date); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_logs_ensure_partition(day date) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    part text := format('comm_logs_p%s', to_char(day, 'YYYYMMDD'));
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Serialises concurrent creators of the same day.
    PERFORM pg_advisory_xact_lock(hashtext('comm_logs_ensure_partition'), (day - date '2000-01-01'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE comm_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format(
        'WITH moved AS (DELETE FROM comm_logs_default WHERE ts >= %L AND ts < %L RETURNING *) '
        'INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format('ALTER TABLE comm_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    RETURN true;
END
$$;


--
-- Name: comm_logs_summarize(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_logs_summarize(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    n bigint := 0;
    day date;
    idx regclass;
BEGIN
    FOR day IN SELECT generate_series((from_ts AT TIME ZONE 'UTC')::date, (to_ts AT TIME ZONE 'UTC')::date,
                                      interval '1 day')::date LOOP
        SELECT i.inhrelid::regclass INTO idx
        FROM pg_inherits AS i JOIN pg_index AS x ON x.indexrelid = i.inhrelid
        WHERE i.inhparent = 'comm_logs_ts_brin'::regclass
          AND x.indrelid = to_regclass(format('comm_logs_p%s', to_char(day, 'YYYYMMDD')));
        IF idx IS NOT NULL THEN
            n := n + brin_summarize_new_values(idx);
        END IF;
    END LOOP;
    RETURN n;
END
$$;


--
-- Name: comm_pair_events(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_pair_events(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS TABLE(res integer, bucket timestamp with time zone, src_ip inet, dst_ip inet, events bigint, bytes_in bigint, bytes_out bigint, errors bigint, client_errors bigint)
    LANGUAGE sql STABLE
    AS $$
    SELECT t.res, date_bin(t.res * interval '1 second', l.ts, to_timestamp(0)), l.src_ip, l.dst_ip, count(*),
           coalesce(sum(l.bytes_in), 0)::int8, coalesce(sum(l.bytes_out), 0)::int8,
           count(*) FILTER (WHERE l.status >= 500), count(*) FILTER (WHERE l.status BETWEEN 400 AND 499)
    FROM comm_logs AS l, (VALUES (300), (3600)) AS t(res)
    WHERE l.ts >= from_ts AND l.ts < to_ts
    GROUP BY 1, 2, 3, 4
$$;


--
-- Name: comm_rollup_geo_rebuild(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_rollup_geo_rebuild(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    r integer;
BEGIN
    DELETE FROM comm_rollup_geo WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_geo_delta WHERE bucket >= from_ts AND bucket < to_ts;
    FOREACH r IN ARRAY ARRAY[60, 300, 3600] LOOP
        INSERT INTO comm_rollup_geo
        SELECT r, date_bin(r * interval '1 second', ts, to_timestamp(0)), src_country, src_asn, dst_country,
               dst_asn, threat, count(*), coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0),
               count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE status BETWEEN 400 AND 499)
        FROM comm_logs WHERE ts >= from_ts AND ts < to_ts GROUP BY 2, 3, 4, 5, 6, 7;
    END LOOP;
END
$$;


--
-- Name: comm_rollup_host_rebuild(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_rollup_host_rebuild(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    r integer;
BEGIN
    DELETE FROM comm_rollup_host WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_host_delta WHERE bucket >= from_ts AND bucket < to_ts;
    FOREACH r IN ARRAY ARRAY[60, 300, 3600] LOOP
        INSERT INTO comm_rollup_host
        SELECT r, b, producer, service, protocol, host, status, sum(n), sum(bi), sum(bo), sum(e), sum(ce),
               sum(ln), sum(ls), max(lm),
               coalesce(array_agg(latency_hist_pack(k, ln) ORDER BY k) FILTER (WHERE k IS NOT NULL), '{}')
        FROM (SELECT date_bin(r * interval '1 second', ts, to_timestamp(0)) AS b, producer, service, protocol, host,
                     status, latency_bucket(latency_ms) AS k, count(*) AS n,
                     coalesce(sum(bytes_in), 0) AS bi, coalesce(sum(bytes_out), 0) AS bo,
                     count(*) FILTER (WHERE status >= 500) AS e,
                     count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS ce,
                     count(latency_ms) AS ln, coalesce(sum(latency_ms), 0) AS ls, max(latency_ms) AS lm
              FROM comm_logs WHERE ts >= from_ts AND ts < to_ts
              GROUP BY 1, 2, 3, 4, 5, 6, 7) AS per_latency_bucket
        GROUP BY b, producer, service, protocol, host, status;
    END LOOP;
END
$$;


--
-- Name: comm_rollup_pair_rebuild(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_rollup_pair_rebuild(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    upto timestamptz := least(to_ts, (SELECT sealed_to FROM comm_pair_seal));
BEGIN
    DELETE FROM comm_rollup_pair WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_pair_delta WHERE bucket >= from_ts AND bucket < to_ts;
    INSERT INTO comm_rollup_pair SELECT * FROM comm_pair_events(from_ts, upto);
END
$$;


--
-- Name: comm_rollup_rebuild(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_rollup_rebuild(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM comm_rollup_rebuild_before_host(from_ts, to_ts);
    PERFORM comm_rollup_host_rebuild(from_ts, to_ts);
END
$$;


--
-- Name: comm_rollup_rebuild_before_geo(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_rollup_rebuild_before_geo(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM comm_rollup_rebuild_shapes(from_ts, to_ts);
    PERFORM comm_rollup_pair_rebuild(from_ts, to_ts);
    -- The top lists of the rebuilt buckets no longer hold: without their floors they are not used, and the
    -- compactor makes them again.
    DELETE FROM comm_rollup_src_top_floor WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_pair_top_floor WHERE bucket >= from_ts AND bucket < to_ts;
    INSERT INTO comm_rollup_src_top_pending
    SELECT DISTINCT res, bucket FROM comm_rollup_src WHERE bucket >= from_ts AND bucket < to_ts
    ON CONFLICT DO NOTHING;
    INSERT INTO comm_rollup_pair_top_pending
    SELECT DISTINCT res, bucket FROM comm_rollup_pair WHERE bucket >= from_ts AND bucket < to_ts
    ON CONFLICT DO NOTHING;
END
$$;


--
-- Name: comm_rollup_rebuild_before_host(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_rollup_rebuild_before_host(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM comm_rollup_rebuild_before_src_port(from_ts, to_ts);
    PERFORM comm_rollup_src_port_rebuild(from_ts, to_ts);
END
$$;


--
-- Name: comm_rollup_rebuild_before_src_port(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_rollup_rebuild_before_src_port(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM comm_rollup_rebuild_before_geo(from_ts, to_ts);
    PERFORM comm_rollup_geo_rebuild(from_ts, to_ts);
END
$$;


--
-- Name: comm_rollup_rebuild_shapes(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_rollup_rebuild_shapes(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    r integer;
BEGIN
    IF date_trunc('hour', from_ts) <> from_ts OR date_trunc('hour', to_ts) <> to_ts THEN
        RAISE EXCEPTION 'comm_rollup_rebuild: % and % must be whole hours', from_ts, to_ts;
    END IF;
    DELETE FROM comm_rollup WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_service WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_dst WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src_net WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_service_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_dst_delta WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src_net_delta WHERE bucket >= from_ts AND bucket < to_ts;
    FOREACH r IN ARRAY ARRAY[60, 300, 3600] LOOP
        INSERT INTO comm_rollup
        SELECT r, b, producer, service, protocol, host, dst_port, status, sum(n), sum(bi), sum(bo), sum(e), sum(ce),
               sum(ln), sum(ls), max(lm),
               coalesce(array_agg(latency_hist_pack(k, ln) ORDER BY k) FILTER (WHERE k IS NOT NULL), '{}')
        FROM (SELECT date_bin(r * interval '1 second', ts, to_timestamp(0)) AS b, producer, service, protocol, host,
                     dst_port, status, latency_bucket(latency_ms) AS k, count(*) AS n,
                     coalesce(sum(bytes_in), 0) AS bi, coalesce(sum(bytes_out), 0) AS bo,
                     count(*) FILTER (WHERE status >= 500) AS e,
                     count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS ce,
                     count(latency_ms) AS ln, coalesce(sum(latency_ms), 0) AS ls, max(latency_ms) AS lm
              FROM comm_logs WHERE ts >= from_ts AND ts < to_ts
              GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) AS per_latency_bucket
        GROUP BY b, producer, service, protocol, host, dst_port, status;

        INSERT INTO comm_rollup_service
        SELECT r, b, service, sum(n), sum(bi), sum(bo), sum(e), sum(ce), sum(ln), sum(ls), max(lm),
               coalesce(array_agg(latency_hist_pack(k, ln) ORDER BY k) FILTER (WHERE k IS NOT NULL), '{}')
        FROM (SELECT date_bin(r * interval '1 second', ts, to_timestamp(0)) AS b, service,
                     latency_bucket(latency_ms) AS k, count(*) AS n,
                     coalesce(sum(bytes_in), 0) AS bi, coalesce(sum(bytes_out), 0) AS bo,
                     count(*) FILTER (WHERE status >= 500) AS e,
                     count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS ce,
                     count(latency_ms) AS ln, coalesce(sum(latency_ms), 0) AS ls, max(latency_ms) AS lm
              FROM comm_logs WHERE ts >= from_ts AND ts < to_ts
              GROUP BY 1, 2, 3) AS per_latency_bucket
        GROUP BY b, service;

        CONTINUE WHEN r = 60;  -- the IP shapes keep no minute rows

        INSERT INTO comm_rollup_src
        SELECT r, date_bin(r * interval '1 second', ts, to_timestamp(0)), src_ip, count(*),
               coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0),
               count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE status BETWEEN 400 AND 499)
        FROM comm_logs WHERE ts >= from_ts AND ts < to_ts GROUP BY 2, 3;

        INSERT INTO comm_rollup_dst
        SELECT r, date_bin(r * interval '1 second', ts, to_timestamp(0)), dst_ip, count(*),
               coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0),
               count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE status BETWEEN 400 AND 499)
        FROM comm_logs WHERE ts >= from_ts AND ts < to_ts GROUP BY 2, 3;

        INSERT INTO comm_rollup_src_net
        SELECT r, date_bin(r * interval '1 second', ts, to_timestamp(0)), src_network(src_ip), count(*),
               coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0),
               count(*) FILTER (WHERE status >= 500), count(*) FILTER (WHERE status BETWEEN 400 AND 499)
        FROM comm_logs WHERE ts >= from_ts AND ts < to_ts GROUP BY 2, 3;
    END LOOP;
END
$$;


--
-- Name: comm_rollup_src_port_rebuild(timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.comm_rollup_src_port_rebuild(from_ts timestamp with time zone, to_ts timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    upto timestamptz := least(to_ts, (SELECT sealed_to FROM comm_pair_seal));
BEGIN
    DELETE FROM comm_rollup_src_port WHERE bucket >= from_ts AND bucket < to_ts;
    DELETE FROM comm_rollup_src_port_delta WHERE bucket >= from_ts AND bucket < to_ts;
    INSERT INTO comm_rollup_src_port
    SELECT t.res, date_bin(t.res * interval '1 second', l.ts, to_timestamp(0)), l.src_ip, l.dst_port, count(*),
           coalesce(sum(l.bytes_in), 0)::int8, coalesce(sum(l.bytes_out), 0)::int8,
           count(*) FILTER (WHERE l.status >= 500), count(*) FILTER (WHERE l.status BETWEEN 400 AND 499)
    FROM comm_logs AS l, (VALUES (300), (3600)) AS t(res)
    WHERE l.ts >= from_ts AND l.ts < upto
    GROUP BY 1, 2, 3, 4;
END
$$;


--
-- Name: latency_bucket(double precision); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.latency_bucket(ms double precision) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE WHEN ms <= 0 THEN -32768 ELSE ceil(ln(ms) / ln(1.02))::int8 END
$$;


--
-- Name: latency_hist_merge(bigint[], bigint[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.latency_hist_merge(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
DECLARE
    na integer := coalesce(cardinality(a), 0);
    nb integer := coalesce(cardinality(b), 0);
    i integer := 1;
    j integer := 1;
    x int8;
    y int8;
    merged int8[] := '{}';
BEGIN
    IF nb = 0 THEN
        RETURN coalesce(a, '{}');
    ELSIF na = 0 THEN
        RETURN b;
    END IF;
    WHILE i <= na AND j <= nb LOOP
        x := a[i];
        y := b[j];
        IF (x >> 48) = (y >> 48) THEN
            merged := array_append(merged, x + (y & 281474976710655));
            i := i + 1;
            j := j + 1;
        ELSIF (x >> 48) < (y >> 48) THEN
            merged := array_append(merged, x);
            i := i + 1;
        ELSE
            merged := array_append(merged, y);
            j := j + 1;
        END IF;
    END LOOP;
    IF i <= na THEN
        merged := merged || a[i:na];
    ELSIF j <= nb THEN
        merged := merged || b[j:nb];
    END IF;
    RETURN merged;
END
$$;


--
-- Name: latency_hist_pack(bigint, bigint); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.latency_hist_pack(bucket bigint, n bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
    SELECT bucket * 281474976710656 + n
$$;


--
-- Name: src_network(inet); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.src_network(ip inet) RETURNS inet
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
    SELECT set_masklen(network(set_masklen(ip, CASE family(ip) WHEN 4 THEN 24 ELSE 64 END)),
                       CASE family(ip) WHEN 4 THEN 32 ELSE 128 END)
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: alert_incident_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alert_incident_events (
    id bigint NOT NULL,
    incident_id bigint NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    kind text NOT NULL,
    actor text,
    value double precision,
    evidence jsonb,
    comment text
);


--
-- Name: alert_incident_events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.alert_incident_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.alert_incident_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: alert_incidents; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alert_incidents (
    id bigint NOT NULL,
    rule_id text NOT NULL,
    tenant text,
    group_key text NOT NULL,
    status text NOT NULL,
    opened_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    resolved_at timestamp with time zone
);


--
-- Name: alert_incidents_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.alert_incidents ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.alert_incidents_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: alert_outbox; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alert_outbox (
    id uuid NOT NULL,
    rule_id text NOT NULL,
    incident_id bigint,
    url text NOT NULL,
    format text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    delivered_at timestamp with time zone,
    dead_at timestamp with time zone,
    last_status integer,
    last_error text
);


--
-- Name: alert_rules; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alert_rules (
    id text NOT NULL,
    name text NOT NULL,
    tenant text,
    spec jsonb NOT NULL,
    enabled boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: alert_states; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alert_states (
    rule_id text NOT NULL,
    group_key text NOT NULL,
    state text NOT NULL,
    since timestamp with time zone NOT NULL,
    value double precision,
    incident_id bigint,
    resolved_at timestamp with time zone
);


--
-- Name: alert_transitions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alert_transitions (
    id bigint NOT NULL,
    rule_id text NOT NULL,
    group_key text NOT NULL,
    from_state text NOT NULL,
    to_state text NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    value double precision
);


--
-- Name: alert_transitions_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.alert_transitions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.alert_transitions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: api_keys; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.api_keys (
    id text NOT NULL,
    name text NOT NULL,
    tenant text,
    scopes text[] NOT NULL,
    secret_sha256 bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    revoked_at timestamp with time zone,
    last_used_at timestamp with time zone,
    replaces text,
    CONSTRAINT api_keys_scopes_check CHECK (((cardinality(scopes) > 0) AND (scopes <@ ARRAY['ingest'::text, 'read'::text, 'admin'::text]))),
    CONSTRAINT api_keys_secret_sha256_check CHECK ((octet_length(secret_sha256) = 32))
);


--
-- Name: comm_logs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_logs (
    ts timestamp with time zone NOT NULL,
    received_at timestamp with time zone NOT NULL,
    producer text NOT NULL,
    src_ip inet,
    src_port integer,
    dst_ip inet,
    dst_port integer,
    protocol text,
    service text,
    status integer,
    bytes_in bigint,
    bytes_out bigint,
    latency_ms double precision,
    host text,
    message text,
    tags jsonb,
    src_country text,
    src_city text,
    src_asn bigint,
    src_as_org text,
    dst_country text,
    dst_city text,
    dst_asn bigint,
    dst_as_org text,
    threat text
)
PARTITION BY RANGE (ts);


--
-- Name: comm_logs_default; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_logs_default (
    ts timestamp with time zone NOT NULL,
    received_at timestamp with time zone NOT NULL,
    producer text NOT NULL,
    src_ip inet,
    src_port integer,
    dst_ip inet,
    dst_port integer,
    protocol text,
    service text,
    status integer,
    bytes_in bigint,
    bytes_out bigint,
    latency_ms double precision,
    host text,
    message text,
    tags jsonb,
    src_country text,
    src_city text,
    src_asn bigint,
    src_as_org text,
    dst_country text,
    dst_city text,
    dst_asn bigint,
    dst_as_org text,
    threat text
);


--
-- Name: comm_pair_seal; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_pair_seal (
    one boolean DEFAULT true NOT NULL,
    sealing_to timestamp with time zone NOT NULL,
    sealed_to timestamp with time zone NOT NULL,
    CONSTRAINT comm_pair_seal_one_check CHECK (one)
);


--
-- Name: comm_rollup; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    producer text NOT NULL,
    service text,
    protocol text,
    host text,
    dst_port integer,
    status integer,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL,
    latency_n bigint NOT NULL,
    latency_sum double precision NOT NULL,
    latency_max double precision,
    latency_hist bigint[] NOT NULL
)
WITH (fillfactor='70', toast_tuple_target='8160');


--
-- Name: comm_rollup_delta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_delta (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    producer text NOT NULL,
    service text,
    protocol text,
    host text,
    dst_port integer,
    status integer,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL,
    latency_n bigint NOT NULL,
    latency_sum double precision NOT NULL,
    latency_max double precision,
    latency_hist bigint[] NOT NULL
)
WITH (toast_tuple_target='8160');


--
-- Name: comm_rollup_dst; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_dst (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    dst_ip inet,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL
)
WITH (fillfactor='70');


--
-- Name: comm_rollup_dst_delta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_dst_delta (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    dst_ip inet,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL
);


--
-- Name: comm_rollup_geo; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_geo (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_country text,
    src_asn bigint,
    dst_country text,
    dst_asn bigint,
    threat text,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL
)
WITH (fillfactor='70');


--
-- Name: comm_rollup_geo_delta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_geo_delta (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_country text,
    src_asn bigint,
    dst_country text,
    dst_asn bigint,
    threat text,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL
);


--
-- Name: comm_rollup_host; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_host (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    producer text NOT NULL,
    service text,
    protocol text,
    host text,
    status integer,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL,
    latency_n bigint NOT NULL,
    latency_sum double precision NOT NULL,
    latency_max double precision,
    latency_hist bigint[] NOT NULL
)
WITH (fillfactor='70', toast_tuple_target='8160');


--
-- Name: comm_rollup_host_delta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_host_delta (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    producer text NOT NULL,
    service text,
    protocol text,
    host text,
    status integer,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL,
    latency_n bigint NOT NULL,
    latency_sum double precision NOT NULL,
    latency_max double precision,
    latency_hist bigint[] NOT NULL
);


--
-- Name: comm_rollup_pair; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_pair (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_ip inet,
    dst_ip inet,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL
)
WITH (fillfactor='70');


--
-- Name: comm_rollup_pair_delta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_pair_delta (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_ip inet,
    dst_ip inet,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL,
    gen timestamp with time zone
);


--
-- Name: comm_rollup_pair_top; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_pair_top (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_ip inet,
    dst_ip inet,
    events bigint NOT NULL,
    bytes bigint NOT NULL
);


--
-- Name: comm_rollup_pair_top_floor; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_pair_top_floor (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    events bigint NOT NULL,
    bytes bigint NOT NULL
);


--
-- Name: comm_rollup_pair_top_pending; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_pair_top_pending (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL
);


--
-- Name: comm_rollup_service; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_service (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    service text,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL,
    latency_n bigint NOT NULL,
    latency_sum double precision NOT NULL,
    latency_max double precision,
    latency_hist bigint[] NOT NULL,
    latency_pcts double precision[]
)
WITH (fillfactor='70', toast_tuple_target='8160');


--
-- Name: comm_rollup_service_delta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_service_delta (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    service text,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL,
    latency_n bigint NOT NULL,
    latency_sum double precision NOT NULL,
    latency_max double precision,
    latency_hist bigint[] NOT NULL
)
WITH (toast_tuple_target='8160');


--
-- Name: comm_rollup_src; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_src (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_ip inet,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL
)
WITH (fillfactor='70');


--
-- Name: comm_rollup_src_delta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_src_delta (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_ip inet,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL
);


--
-- Name: comm_rollup_src_net; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_src_net (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_net inet,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL
)
WITH (fillfactor='70');


--
-- Name: comm_rollup_src_net_delta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_src_net_delta (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_net inet,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL
);


--
-- Name: comm_rollup_src_port; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_src_port (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_ip inet,
    dst_port integer,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL
)
WITH (fillfactor='70');


--
-- Name: comm_rollup_src_port_delta; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_src_port_delta (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_ip inet,
    dst_port integer,
    events bigint NOT NULL,
    bytes_in bigint NOT NULL,
    bytes_out bigint NOT NULL,
    errors bigint NOT NULL,
    client_errors bigint NOT NULL,
    gen timestamp with time zone
);


--
-- Name: comm_rollup_src_top; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_src_top (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    src_ip inet,
    events bigint NOT NULL,
    bytes bigint NOT NULL
);


--
-- Name: comm_rollup_src_top_floor; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_src_top_floor (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL,
    events bigint NOT NULL,
    bytes bigint NOT NULL
);


--
-- Name: comm_rollup_src_top_pending; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comm_rollup_src_top_pending (
    res integer NOT NULL,
    bucket timestamp with time zone NOT NULL
);


--
-- Name: ingest_batches; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ingest_batches (
    producer text NOT NULL,
    digest bytea NOT NULL,
    accepted_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: ingest_flushes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ingest_flushes (
    flush_id uuid NOT NULL,
    committed_at timestamp with time zone DEFAULT now() NOT NULL,
    rows integer NOT NULL,
    rejects integer NOT NULL
);


--
-- Name: ingest_rejects; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ingest_rejects (
    id bigint NOT NULL,
    received_at timestamp with time zone NOT NULL,
    producer text NOT NULL,
    event_index integer,
    reason text NOT NULL,
    raw bytea NOT NULL,
    raw_truncated boolean DEFAULT false NOT NULL
);


--
-- Name: ingest_rejects_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.ingest_rejects ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.ingest_rejects_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: rollup_pruned; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rollup_pruned (
    res integer NOT NULL,
    before timestamp with time zone NOT NULL
);


--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: comm_logs_default; Type: TABLE ATTACH; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_logs ATTACH PARTITION public.comm_logs_default DEFAULT;


--
-- Name: alert_incident_events alert_incident_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_incident_events
    ADD CONSTRAINT alert_incident_events_pkey PRIMARY KEY (id);


--
-- Name: alert_incidents alert_incidents_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_incidents
    ADD CONSTRAINT alert_incidents_pkey PRIMARY KEY (id);


--
-- Name: alert_outbox alert_outbox_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_outbox
    ADD CONSTRAINT alert_outbox_pkey PRIMARY KEY (id);


--
-- Name: alert_rules alert_rules_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_rules
    ADD CONSTRAINT alert_rules_pkey PRIMARY KEY (id);


--
-- Name: alert_states alert_states_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_states
    ADD CONSTRAINT alert_states_pkey PRIMARY KEY (rule_id, group_key);


--
-- Name: alert_transitions alert_transitions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_transitions
    ADD CONSTRAINT alert_transitions_pkey PRIMARY KEY (id);


--
-- Name: api_keys api_keys_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (id);


--
-- Name: comm_pair_seal comm_pair_seal_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_pair_seal
    ADD CONSTRAINT comm_pair_seal_pkey PRIMARY KEY (one);


--
-- Name: comm_rollup_dst comm_rollup_dst_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_dst
    ADD CONSTRAINT comm_rollup_dst_key UNIQUE NULLS NOT DISTINCT (res, bucket, dst_ip);


--
-- Name: comm_rollup_geo comm_rollup_geo_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_geo
    ADD CONSTRAINT comm_rollup_geo_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_country, src_asn, dst_country, dst_asn, threat);


--
-- Name: comm_rollup_host comm_rollup_host_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_host
    ADD CONSTRAINT comm_rollup_host_key UNIQUE NULLS NOT DISTINCT (res, bucket, producer, service, protocol, host, status);


--
-- Name: comm_rollup comm_rollup_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup
    ADD CONSTRAINT comm_rollup_key UNIQUE NULLS NOT DISTINCT (res, bucket, producer, service, protocol, host, dst_port, status);


--
-- Name: comm_rollup_pair comm_rollup_pair_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_pair
    ADD CONSTRAINT comm_rollup_pair_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_ip, dst_ip);


--
-- Name: comm_rollup_pair_top_floor comm_rollup_pair_top_floor_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_pair_top_floor
    ADD CONSTRAINT comm_rollup_pair_top_floor_pkey PRIMARY KEY (res, bucket);


--
-- Name: comm_rollup_pair_top comm_rollup_pair_top_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_pair_top
    ADD CONSTRAINT comm_rollup_pair_top_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_ip, dst_ip);


--
-- Name: comm_rollup_pair_top_pending comm_rollup_pair_top_pending_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_pair_top_pending
    ADD CONSTRAINT comm_rollup_pair_top_pending_pkey PRIMARY KEY (res, bucket);


--
-- Name: comm_rollup_service comm_rollup_service_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_service
    ADD CONSTRAINT comm_rollup_service_key UNIQUE NULLS NOT DISTINCT (res, bucket, service);


--
-- Name: comm_rollup_src comm_rollup_src_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_src
    ADD CONSTRAINT comm_rollup_src_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_ip);


--
-- Name: comm_rollup_src_net comm_rollup_src_net_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_src_net
    ADD CONSTRAINT comm_rollup_src_net_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_net);


--
-- Name: comm_rollup_src_port comm_rollup_src_port_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_src_port
    ADD CONSTRAINT comm_rollup_src_port_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_ip, dst_port);


--
-- Name: comm_rollup_src_top_floor comm_rollup_src_top_floor_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_src_top_floor
    ADD CONSTRAINT comm_rollup_src_top_floor_pkey PRIMARY KEY (res, bucket);


--
-- Name: comm_rollup_src_top comm_rollup_src_top_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_src_top
    ADD CONSTRAINT comm_rollup_src_top_key UNIQUE NULLS NOT DISTINCT (res, bucket, src_ip);


--
-- Name: comm_rollup_src_top_pending comm_rollup_src_top_pending_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comm_rollup_src_top_pending
    ADD CONSTRAINT comm_rollup_src_top_pending_pkey PRIMARY KEY (res, bucket);


--
-- Name: ingest_batches ingest_batches_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ingest_batches
    ADD CONSTRAINT ingest_batches_pkey PRIMARY KEY (producer, digest);


--
-- Name: ingest_flushes ingest_flushes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ingest_flushes
    ADD CONSTRAINT ingest_flushes_pkey PRIMARY KEY (flush_id);


--
-- Name: ingest_rejects ingest_rejects_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ingest_rejects
    ADD CONSTRAINT ingest_rejects_pkey PRIMARY KEY (id);


--
-- Name: rollup_pruned rollup_pruned_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rollup_pruned
    ADD CONSTRAINT rollup_pruned_pkey PRIMARY KEY (res);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: alert_incident_events_incident; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX alert_incident_events_incident ON public.alert_incident_events USING btree (incident_id, at);


--
-- Name: alert_incidents_status; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX alert_incidents_status ON public.alert_incidents USING btree (status, opened_at);


--
-- Name: alert_outbox_due; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX alert_outbox_due ON public.alert_outbox USING btree (next_attempt_at) WHERE ((delivered_at IS NULL) AND (dead_at IS NULL));


--
-- Name: alert_transitions_rule; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX alert_transitions_rule ON public.alert_transitions USING btree (rule_id, at);


--
-- Name: api_keys_name; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX api_keys_name ON public.api_keys USING btree (name);


--
-- Name: comm_logs_src_ip_ts; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX comm_logs_src_ip_ts ON ONLY public.comm_logs USING btree (src_ip, ts);


--
-- Name: comm_logs_default_src_ip_ts_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX comm_logs_default_src_ip_ts_idx ON public.comm_logs_default USING btree (src_ip, ts);


--
-- Name: comm_logs_ts_brin; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX comm_logs_ts_brin ON ONLY public.comm_logs USING brin (ts) WITH (pages_per_range='32');


--
-- Name: comm_logs_default_ts_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX comm_logs_default_ts_idx ON public.comm_logs_default USING brin (ts) WITH (pages_per_range='32');


--
-- Name: comm_logs_threat_ts; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX comm_logs_threat_ts ON ONLY public.comm_logs USING btree (ts, threat) WHERE (threat IS NOT NULL);


--
-- Name: comm_logs_default_ts_threat_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX comm_logs_default_ts_threat_idx ON public.comm_logs_default USING btree (ts, threat) WHERE (threat IS NOT NULL);


--
-- Name: comm_rollup_dst_by_ip; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX comm_rollup_dst_by_ip ON public.comm_rollup_dst USING btree (dst_ip, res, bucket);


--
-- Name: comm_rollup_pair_by_pair; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX comm_rollup_pair_by_pair ON public.comm_rollup_pair USING btree (src_ip, dst_ip, res, bucket);


--
-- Name: comm_rollup_src_by_ip; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX comm_rollup_src_by_ip ON public.comm_rollup_src USING btree (src_ip, res, bucket);


--
-- Name: comm_rollup_src_net_by_net; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX comm_rollup_src_net_by_net ON public.comm_rollup_src_net USING btree (src_net, res, bucket);


--
-- Name: ingest_batches_accepted_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ingest_batches_accepted_at ON public.ingest_batches USING btree (accepted_at);


--
-- Name: ingest_rejects_received_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ingest_rejects_received_at ON public.ingest_rejects USING brin (received_at);


--
-- Name: comm_logs_default_src_ip_ts_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.comm_logs_src_ip_ts ATTACH PARTITION public.comm_logs_default_src_ip_ts_idx;


--
-- Name: comm_logs_default_ts_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.comm_logs_ts_brin ATTACH PARTITION public.comm_logs_default_ts_idx;


--
-- Name: comm_logs_default_ts_threat_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.comm_logs_threat_ts ATTACH PARTITION public.comm_logs_default_ts_threat_idx;


--
-- PostgreSQL database dump complete
--


