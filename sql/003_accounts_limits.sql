-- 003: account states (webmail-only restriction, termination), the webmail networks, the
-- audit trail, outbound sending limits with their counters, review flags, and the view
-- Dovecot's passdb reads.
--
-- policyd keeps the non-active accounts, the webmail networks and the limit overrides in
-- memory; every change to those tables sends NOTIFY lupine_directory, so each instance
-- sees it within a second (docs/accounts.md).

-- SASL login names, lower-cased. An account without a row is active.
CREATE TABLE account (
    login      text        PRIMARY KEY CHECK (login <> '' AND login = lower(login) AND length(login) <= 320),
    state      text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'restricted', 'terminated')),
    reason     text        NOT NULL DEFAULT '',
    case_id    bigint,                          -- the abuse case that set the state, if any
    changed_by text        NOT NULL,            -- operator login, or policyd:NAME
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_not_active_idx ON account (state) WHERE state <> 'active';

-- The hosts webmail submits from and logs in to IMAP from. A restricted account may send
-- only from these (policyd) and log in only from these (Dovecot allow_nets).
CREATE TABLE webmail_network (
    net        cidr        PRIMARY KEY,
    comment    text        NOT NULL DEFAULT '',
    created_by text        NOT NULL DEFAULT current_user,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every change to accounts, limits, networks and flags: who, when, what, why, which case.
CREATE TABLE audit (
    id        bigserial   PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text        NOT NULL,   -- operator login (the sudo user when under sudo), or policyd:NAME
    action    text        NOT NULL,   -- e.g. state, auto_restrict, limit, webmail, flag_review
    login     text,                   -- the account concerned, if any
    case_id   bigint,
    old_value text,
    new_value text,
    reason    text        NOT NULL DEFAULT ''
);
CREATE INDEX audit_login_idx ON audit (login, at);

-- Per-account and per-domain overrides of the configured default limits. A row replaces the
-- default of the same measure and window; max_value NULL removes that limit; a window with
-- no default adds one. Account rows win over the domain of the login.
CREATE TABLE send_limit (
    scope      text        NOT NULL CHECK (scope IN ('account', 'domain')),
    subject    text        NOT NULL CHECK (subject <> '' AND subject = lower(subject)),
    measure    text        NOT NULL CHECK (measure IN ('messages', 'recipients', 'bytes',
                                                       'distinct_recipients', 'distinct_domains')),
    window_s   integer     NOT NULL CHECK (window_s BETWEEN 60 AND 604800 AND window_s % 60 = 0),
    max_value  bigint      CHECK (max_value >= 0),
    comment    text        NOT NULL DEFAULT '',
    changed_by text        NOT NULL DEFAULT current_user,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, subject, measure, window_s)
);

-- Outbound volume of each account in one-minute buckets, counted at END-OF-MESSAGE for
-- accepted messages only. A window of N minutes sums the N newest buckets.
CREATE TABLE send_volume (
    login      text        NOT NULL,
    minute     timestamptz NOT NULL,
    messages   integer     NOT NULL DEFAULT 0,
    recipients integer     NOT NULL DEFAULT 0,
    bytes      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (login, minute)
);
CREATE INDEX send_volume_minute_idx ON send_volume (minute);

-- Recipient breadth: when each account last sent to each address and each domain. The
-- distinct count over a window is the number of rows seen within it (exact).
CREATE TABLE send_recipient (
    login     text        NOT NULL,
    recipient text        NOT NULL,
    last_seen timestamptz NOT NULL,
    PRIMARY KEY (login, recipient)
);
CREATE INDEX send_recipient_window_idx ON send_recipient (login, last_seen);
CREATE INDEX send_recipient_last_seen_idx ON send_recipient (last_seen);

CREATE TABLE send_domain (
    login     text        NOT NULL,
    domain    text        NOT NULL,
    last_seen timestamptz NOT NULL,
    PRIMARY KEY (login, domain)
);
CREATE INDEX send_domain_window_idx ON send_domain (login, last_seen);
CREATE INDEX send_domain_last_seen_idx ON send_domain (last_seen);

-- The review queue: one row per trip over a limit (not per refused message), or per
-- automatic restriction. A trip lasts while refusals keep coming within the limit's window.
CREATE TABLE account_flag (
    id          bigserial   PRIMARY KEY,
    login       text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('limit', 'auto_restrict')),
    measure     text        NOT NULL,
    window_s    integer     NOT NULL,
    max_value   bigint      NOT NULL,
    value       bigint      NOT NULL,   -- the highest count refused during the trip
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    hits        integer     NOT NULL DEFAULT 1,
    policyd     text        NOT NULL,
    reviewed_at timestamptz,
    reviewed_by text,
    review_note text
);
CREATE INDEX account_flag_open_idx ON account_flag (login, measure, window_s) WHERE reviewed_at IS NULL;

-- Change notification for policyd's in-memory directory. Payloads: account:LOGIN,
-- accounts (all of them: TRUNCATE), webmail, limits.
CREATE FUNCTION lupine_directory_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'account' AND TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('lupine_directory', 'accounts');
    ELSIF TG_TABLE_NAME = 'account' THEN
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            PERFORM pg_notify('lupine_directory', 'account:' || OLD.login);
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') AND (TG_OP = 'INSERT' OR NEW.login <> OLD.login) THEN
            PERFORM pg_notify('lupine_directory', 'account:' || NEW.login);
        END IF;
    ELSIF TG_TABLE_NAME = 'webmail_network' THEN
        PERFORM pg_notify('lupine_directory', 'webmail');
    ELSE
        PERFORM pg_notify('lupine_directory', 'limits');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER account_notify AFTER INSERT OR UPDATE OR DELETE ON account
    FOR EACH ROW EXECUTE FUNCTION lupine_directory_notify();
CREATE TRIGGER account_truncate_notify AFTER TRUNCATE ON account
    FOR EACH STATEMENT EXECUTE FUNCTION lupine_directory_notify();
CREATE TRIGGER webmail_network_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON webmail_network
    FOR EACH STATEMENT EXECUTE FUNCTION lupine_directory_notify();
CREATE TRIGGER send_limit_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON send_limit
    FOR EACH STATEMENT EXECUTE FUNCTION lupine_directory_notify();

-- Sets an account's state and writes the audit row, in one statement: the only way
-- policyd and abusectl change a state. Returns the previous state ('active' for an
-- account without a row). Refuses an unknown state.
CREATE FUNCTION lupine_set_account_state(p_login text, p_state text, p_actor text, p_reason text,
                                         p_case_id bigint DEFAULT NULL, p_action text DEFAULT 'state')
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_login text := lower(p_login);
    v_old   text;
BEGIN
    IF p_state NOT IN ('active', 'restricted', 'terminated') THEN
        RAISE EXCEPTION 'unknown account state %', p_state USING ERRCODE = '22023';
    END IF;
    SELECT state INTO v_old FROM account WHERE login = v_login FOR UPDATE;
    v_old := coalesce(v_old, 'active');
    INSERT INTO account (login, state, reason, case_id, changed_by, changed_at)
    VALUES (v_login, p_state, coalesce(p_reason, ''), p_case_id, p_actor, now())
    ON CONFLICT (login) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason,
        case_id = EXCLUDED.case_id, changed_by = EXCLUDED.changed_by, changed_at = EXCLUDED.changed_at;
    INSERT INTO audit (actor, action, login, case_id, old_value, new_value, reason)
    VALUES (p_actor, p_action, v_login, p_case_id, v_old, p_state, coalesce(p_reason, ''));
    RETURN v_old;
END $$;

-- The outbound limit check, one statement per decision (atomic, serialized per account by
-- an advisory lock, so instances sharing the database agree exactly).
--
-- p_stage 'rcpt': would this recipient fit? Nothing is counted.
-- p_stage 'eom':  would this message fit? If so it is counted: p_messages, p_recipients
--                 and p_bytes go into the current minute's bucket, and p_rcpts/p_domains
--                 are recorded as seen now.
-- Limits come in as parallel arrays (policyd merges defaults and overrides). A volume
-- limit refuses when the window's sum plus this attempt exceeds it; a breadth limit
-- refuses when this attempt adds an address (domain) and the window's distinct count
-- would then exceed it. Auto-restrict thresholds (same shape) restrict an active account
-- whose attempted breadth passes them, refused or not.
-- Returns one row: the refused limit that frees last (or allowed = true), when it frees,
-- whether a new review flag was opened, and whether the account was just restricted.
CREATE FUNCTION lupine_send_check(
    p_login text, p_now timestamptz, p_stage text,
    p_rcpts text[], p_domains text[],
    p_messages integer, p_recipients integer, p_bytes bigint,
    p_measures text[], p_windows integer[], p_maxes bigint[],
    p_restrict_measures text[], p_restrict_windows integer[], p_restrict_maxes bigint[],
    p_policyd text,
    OUT allowed boolean, OUT measure text, OUT window_s integer, OUT max_value bigint, OUT value bigint,
    OUT frees_at timestamptz, OUT flag_opened boolean, OUT restricted boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_minute timestamptz := date_trunc('minute', p_now);
    v_from   timestamptz;
    v_cur    bigint;
    v_add    bigint;
    v_new    bigint;
    v_val    bigint;
    v_frees  timestamptz;
    v_run    bigint;
    v_flag   bigint;
    v_sums_w integer;
    v_sum_m  bigint;
    v_sum_r  bigint;
    v_sum_b  bigint;
    b        record;
    i        integer;
BEGIN
    allowed := true;
    flag_opened := false;
    restricted := false;
    PERFORM pg_advisory_xact_lock(hashtext('lupine_send:' || p_login));

    FOR i IN 1 .. coalesce(array_length(p_measures, 1), 0) LOOP
        v_frees := NULL;
        IF p_measures[i] IN ('messages', 'recipients', 'bytes') THEN
            -- Buckets at or after v_from are in the window: the newest window/60 minutes.
            v_from := v_minute - make_interval(secs => p_windows[i] - 60);
            v_add := CASE p_measures[i] WHEN 'messages' THEN p_messages
                                        WHEN 'recipients' THEN p_recipients ELSE p_bytes END;
            -- One scan per window for all three volume measures (limits come sorted by window).
            IF v_sums_w IS DISTINCT FROM p_windows[i] THEN
                SELECT coalesce(sum(s.messages), 0), coalesce(sum(s.recipients), 0), coalesce(sum(s.bytes), 0)
                  INTO v_sum_m, v_sum_r, v_sum_b
                  FROM send_volume s WHERE s.login = p_login AND s.minute >= v_from;
                v_sums_w := p_windows[i];
            END IF;
            v_cur := CASE p_measures[i] WHEN 'messages' THEN v_sum_m WHEN 'recipients' THEN v_sum_r ELSE v_sum_b END;
            v_val := v_cur + v_add;
            IF v_add <= 0 OR v_val <= p_maxes[i] THEN CONTINUE; END IF;
            -- Refused: the oldest buckets leave the window one by one; it frees when
            -- enough has left for this attempt to fit.
            v_run := v_cur;
            IF v_add <= p_maxes[i] THEN
                FOR b IN SELECT s.minute, CASE p_measures[i] WHEN 'messages' THEN s.messages
                                              WHEN 'recipients' THEN s.recipients ELSE s.bytes END AS n
                           FROM send_volume s WHERE s.login = p_login AND s.minute >= v_from
                          ORDER BY s.minute LOOP
                    v_run := v_run - b.n;
                    IF v_run + v_add <= p_maxes[i] THEN
                        v_frees := b.minute + make_interval(secs => p_windows[i]);
                        EXIT;
                    END IF;
                END LOOP;
            END IF;
        ELSE
            v_from := p_now - make_interval(secs => p_windows[i]);
            IF p_measures[i] = 'distinct_recipients' THEN
                SELECT (SELECT count(*) FROM send_recipient s WHERE s.login = p_login AND s.last_seen > v_from),
                       (SELECT count(DISTINCT r) FROM unnest(p_rcpts) AS r
                         WHERE NOT EXISTS (SELECT 1 FROM send_recipient s WHERE s.login = p_login AND s.recipient = r
                                              AND s.last_seen > v_from))
                  INTO v_cur, v_new;
            ELSE
                SELECT (SELECT count(*) FROM send_domain s WHERE s.login = p_login AND s.last_seen > v_from),
                       (SELECT count(DISTINCT d) FROM unnest(p_domains) AS d
                         WHERE NOT EXISTS (SELECT 1 FROM send_domain s WHERE s.login = p_login AND s.domain = d
                                              AND s.last_seen > v_from))
                  INTO v_cur, v_new;
            END IF;
            v_val := v_cur + v_new;
            IF v_new = 0 OR v_val <= p_maxes[i] THEN CONTINUE; END IF;
            -- Frees when the (v_val - max)-th oldest address in the window leaves it.
            IF v_new <= p_maxes[i] THEN
                IF p_measures[i] = 'distinct_recipients' THEN
                    SELECT s.last_seen + make_interval(secs => p_windows[i]) INTO v_frees
                      FROM send_recipient s WHERE s.login = p_login AND s.last_seen > v_from
                     ORDER BY s.last_seen OFFSET (v_val - p_maxes[i] - 1) LIMIT 1;
                ELSE
                    SELECT s.last_seen + make_interval(secs => p_windows[i]) INTO v_frees
                      FROM send_domain s WHERE s.login = p_login AND s.last_seen > v_from
                     ORDER BY s.last_seen OFFSET (v_val - p_maxes[i] - 1) LIMIT 1;
                END IF;
            END IF;
        END IF;
        -- Over this limit. Report the one that frees last (never frees: NULL, reported first).
        IF allowed OR (frees_at IS NOT NULL AND (v_frees IS NULL OR v_frees > frees_at)) THEN
            allowed := false;
            measure := p_measures[i];
            window_s := p_windows[i];
            max_value := p_maxes[i];
            value := v_val;
            frees_at := v_frees;
        END IF;
        -- One review flag per trip: a trip goes on while refusals come within its window.
        SELECT f.id INTO v_flag FROM account_flag f
         WHERE f.login = p_login AND f.kind = 'limit' AND f.measure = p_measures[i] AND f.window_s = p_windows[i]
           AND f.reviewed_at IS NULL AND f.last_at > p_now - make_interval(secs => p_windows[i])
         ORDER BY f.id DESC LIMIT 1;
        IF FOUND THEN
            UPDATE account_flag SET last_at = greatest(last_at, p_now), hits = hits + 1,
                   value = greatest(account_flag.value, v_val)
             WHERE id = v_flag;
        ELSE
            INSERT INTO account_flag (login, kind, measure, window_s, max_value, value, first_at, last_at, policyd)
            VALUES (p_login, 'limit', p_measures[i], p_windows[i], p_maxes[i], v_val, p_now, p_now, p_policyd);
            flag_opened := true;
        END IF;
    END LOOP;

    -- Automatic restriction on recipient breadth.
    FOR i IN 1 .. coalesce(array_length(p_restrict_measures, 1), 0) LOOP
        v_from := p_now - make_interval(secs => p_restrict_windows[i]);
        IF p_restrict_measures[i] = 'distinct_recipients' THEN
            SELECT count(*) INTO v_cur FROM send_recipient s WHERE s.login = p_login AND s.last_seen > v_from;
            SELECT count(DISTINCT r) INTO v_new FROM unnest(p_rcpts) AS r
             WHERE NOT EXISTS (SELECT 1 FROM send_recipient s WHERE s.login = p_login AND s.recipient = r
                                  AND s.last_seen > v_from);
        ELSE
            SELECT count(*) INTO v_cur FROM send_domain s WHERE s.login = p_login AND s.last_seen > v_from;
            SELECT count(DISTINCT d) INTO v_new FROM unnest(p_domains) AS d
             WHERE NOT EXISTS (SELECT 1 FROM send_domain s WHERE s.login = p_login AND s.domain = d
                                  AND s.last_seen > v_from);
        END IF;
        v_val := v_cur + v_new;
        IF v_val > p_restrict_maxes[i]
           AND coalesce((SELECT a.state FROM account a WHERE a.login = p_login), 'active') = 'active' THEN
            PERFORM lupine_set_account_state(p_login, 'restricted', 'policyd:' || p_policyd,
                format('automatic: %s %s within %s is over the threshold of %s', v_val,
                       replace(p_restrict_measures[i], '_', ' '),
                       CASE WHEN p_restrict_windows[i] % 3600 = 0 THEN (p_restrict_windows[i] / 3600) || 'h'
                            ELSE (p_restrict_windows[i] / 60) || 'min' END,
                       p_restrict_maxes[i]),
                NULL, 'auto_restrict');
            INSERT INTO account_flag (login, kind, measure, window_s, max_value, value, first_at, last_at, policyd)
            VALUES (p_login, 'auto_restrict', p_restrict_measures[i], p_restrict_windows[i], p_restrict_maxes[i],
                    v_val, p_now, p_now, p_policyd);
            restricted := true;
            EXIT;
        END IF;
    END LOOP;

    IF allowed AND p_stage = 'eom' THEN
        IF p_messages > 0 OR p_recipients > 0 OR p_bytes > 0 THEN
            INSERT INTO send_volume AS s (login, minute, messages, recipients, bytes)
            VALUES (p_login, v_minute, p_messages, p_recipients, p_bytes)
            ON CONFLICT (login, minute) DO UPDATE SET messages = s.messages + EXCLUDED.messages,
                recipients = s.recipients + EXCLUDED.recipients, bytes = s.bytes + EXCLUDED.bytes;
        END IF;
        INSERT INTO send_recipient AS s (login, recipient, last_seen)
        SELECT DISTINCT p_login, r, p_now FROM unnest(p_rcpts) AS r
        ON CONFLICT (login, recipient) DO UPDATE SET last_seen = greatest(s.last_seen, EXCLUDED.last_seen);
        INSERT INTO send_domain AS s (login, domain, last_seen)
        SELECT DISTINCT p_login, d, p_now FROM unnest(p_domains) AS d
        ON CONFLICT (login, domain) DO UPDATE SET last_seen = greatest(s.last_seen, EXCLUDED.last_seen);
    END IF;
END $$;

-- Deletes up to batch counter rows older than keep from each counter table; returns how
-- many it deleted (the maintenance task calls it until that is 0).
CREATE FUNCTION lupine_send_prune(p_now timestamptz, keep interval, batch integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    k bigint;
BEGIN
    DELETE FROM send_volume WHERE ctid IN (SELECT ctid FROM send_volume WHERE minute < p_now - keep LIMIT batch);
    GET DIAGNOSTICS k = ROW_COUNT;
    n := n + k;
    DELETE FROM send_recipient WHERE ctid IN
        (SELECT ctid FROM send_recipient WHERE last_seen < p_now - keep LIMIT batch);
    GET DIAGNOSTICS k = ROW_COUNT;
    n := n + k;
    DELETE FROM send_domain WHERE ctid IN (SELECT ctid FROM send_domain WHERE last_seen < p_now - keep LIMIT batch);
    GET DIAGNOSTICS k = ROW_COUNT;
    RETURN n + k;
END $$;

-- What Dovecot's passdb reads (docs/accounts.md has the queries). One row per account that
-- is not active:
--   allow_nets  restricted: the webmail networks, comma-separated ('' when there are none,
--               which lets no address in); NULL otherwise
--   deny        terminated: true (use it in a deny = yes passdb)
--   nets        the webmail networks as cidr[] for queries that test %{rip} themselves
CREATE VIEW dovecot_account AS
SELECT a.login AS username,
       a.state,
       CASE WHEN a.state = 'restricted'
            THEN coalesce((SELECT string_agg(w.net::text, ',' ORDER BY w.net) FROM webmail_network w), '')
       END AS allow_nets,
       (a.state = 'terminated') AS deny,
       CASE WHEN a.state = 'restricted'
            THEN coalesce((SELECT array_agg(w.net ORDER BY w.net) FROM webmail_network w), '{}'::cidr[])
            ELSE '{}'::cidr[]
       END AS nets,
       a.reason
  FROM account a
 WHERE a.state <> 'active';
