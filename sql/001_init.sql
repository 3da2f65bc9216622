-- 001: greylisting, allow-lists and the event log.
-- Forward-only: once shipped this file is never edited; changes go in 002_*.sql and later.

-- Greylist triplets: (client network, normalized sender, recipient).
-- A row is pending until passed_at is set; pending rows older than the retry window and
-- passed rows not seen for greylist.max_age are deleted by the maintenance task, which
-- walks the last_seen index in bounded batches (never a full scan on the request path).
CREATE TABLE greylist (
    client_net  cidr        NOT NULL,
    sender      text        NOT NULL,   -- normalized; '<>' for the null sender
    recipient   text        NOT NULL,   -- lower-cased
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    passed_at   timestamptz,
    attempts    integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (client_net, sender, recipient)
);
CREATE INDEX greylist_last_seen_idx ON greylist (last_seen);

-- Clients (full address) that passed greylisting repeatedly: after greylist.awl_clients
-- counted passes they skip greylisting until not seen for greylist.awl_max_age.
CREATE TABLE greylist_awl (
    client_addr  inet        PRIMARY KEY,
    passes       integer     NOT NULL DEFAULT 0,
    last_counted timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL
);
CREATE INDEX greylist_awl_last_seen_idx ON greylist_awl (last_seen);

-- Allow-list entries kept in the database (the files are read too). policyd loads them at
-- start and on SIGHUP.
--   client       CIDR or address (v4 or v6)
--   client_name  hostname suffix ("example.com" matches mx1.example.com)
--   sender       address, "user@", or domain
--   recipient    address, "user@", or domain
CREATE TABLE allowlist (
    id         bigserial   PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('client', 'client_name', 'sender', 'recipient')),
    value      text        NOT NULL CHECK (value <> ''),
    comment    text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text        NOT NULL DEFAULT current_user,
    UNIQUE (kind, value)
);

-- One row per policy request: the envelope only. No message body reaches a policy server,
-- and this table has no column that could hold one.
CREATE TABLE event_log (
    ts                  timestamptz NOT NULL,
    policyd             text        NOT NULL,   -- policyd instance name (MX host)
    postfix_instance    text        NOT NULL DEFAULT '',  -- Postfix "instance": one per transaction
    queue_id            text        NOT NULL DEFAULT '',
    protocol_state      text        NOT NULL,
    client_address      inet,
    client_name         text        NOT NULL DEFAULT '',
    reverse_client_name text        NOT NULL DEFAULT '',
    helo_name           text        NOT NULL DEFAULT '',
    sender              text        NOT NULL DEFAULT '',
    recipient           text        NOT NULL DEFAULT '',
    recipient_count     integer     NOT NULL DEFAULT 0,
    size                bigint      NOT NULL DEFAULT 0,
    sasl_username       text        NOT NULL DEFAULT '',
    sasl_method         text        NOT NULL DEFAULT '',
    policy_context      text        NOT NULL DEFAULT '',
    verdict             text        NOT NULL,
    action              text        NOT NULL,   -- the reply sent to Postfix
    reason              text        NOT NULL DEFAULT '',
    score               real        NOT NULL DEFAULT 0,
    elapsed_us          integer     NOT NULL DEFAULT 0
) PARTITION BY RANGE (ts);

CREATE INDEX event_log_ts_idx ON event_log (ts);
CREATE INDEX event_log_sasl_idx ON event_log (sasl_username, ts) WHERE sasl_username <> '';
CREATE INDEX event_log_queue_idx ON event_log (queue_id) WHERE queue_id <> '';
CREATE INDEX event_log_client_idx ON event_log (client_address, ts);

-- Catches rows whose day partition does not exist yet (clock skew, a late flush); the
-- maintenance task keeps day partitions ahead of time so this stays nearly empty.
CREATE TABLE event_log_default PARTITION OF event_log DEFAULT;

-- Creates the day partitions from today (UTC) to days_ahead days later. Idempotent.
CREATE FUNCTION event_log_ensure_partitions(days_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date := (now() AT TIME ZONE 'UTC')::date;
    made integer := 0;
    part text;
BEGIN
    FOR i IN 0..days_ahead LOOP
        part := 'event_log_' || to_char(d + i, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF event_log FOR VALUES FROM (%L) TO (%L)',
                    part, (d + i)::timestamp AT TIME ZONE 'UTC', (d + i + 1)::timestamp AT TIME ZONE 'UTC');
                made := made + 1;
            EXCEPTION WHEN others THEN
                -- Rows of that day already sit in event_log_default: keep them there.
                RAISE WARNING 'event_log: cannot create %: %', part, SQLERRM;
            END;
        END IF;
    END LOOP;
    RETURN made;
END $$;

-- Drops day partitions that lie wholly before now() - retention. Returns how many.
CREATE FUNCTION event_log_prune(retention interval) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
    cutoff date := ((now() - retention) AT TIME ZONE 'UTC')::date;
BEGIN
    FOR r IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'event_log' AND c.relname ~ '^event_log_[0-9]{8}$'
    LOOP
        IF to_date(substr(r.relname, 11), 'YYYYMMDD') < cutoff THEN
            EXECUTE format('DROP TABLE %I', r.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    DELETE FROM event_log_default WHERE ts < now() - retention;
    RETURN dropped;
END $$;

SELECT event_log_ensure_partitions(2);
