-- 005: database roles with least privilege (docs/operations.md, "Database roles").
--
-- Three NOLOGIN group roles; an administrator makes the login roles members of them
-- (CREATE ROLE mx1 LOGIN PASSWORD '...' IN ROLE lupine_policyd):
--   lupine_policyd   greylist tables read/write, event_log INSERT (COPY), reads accounts,
--                    webmail networks, limit overrides and allow-list rows; the limit check,
--                    the counter expiry and the event-log partition upkeep only through
--                    the SECURITY DEFINER functions below
--   lupine_abusectl  cases and spam copies, account states through
--                    lupine_set_account_state, limits, webmail networks, the review queue,
--                    reading the event log and the audit trail, adding audit rows
--   lupine_dovecot   SELECT on the dovecot_account view, nothing else
-- Nobody but the owner (the role that applies the migrations) may UPDATE, DELETE or
-- TRUNCATE audit or event_log rows; audit also refuses that to the owner (004).
--
-- The owner's rights reach the restricted roles only through SECURITY DEFINER functions
-- with a fixed search_path (this schema, then pg_temp, so a caller's temporary tables
-- cannot stand in for ours) and EXECUTE granted to the one role that needs each:
--   lupine_send_check          policyd: counts and limits; opens review flags and restricts
--                              an account automatically (through lupine_set_account_state),
--                              so policyd needs no right on counters, flags, accounts or audit
--   lupine_send_prune          policyd: expires sending counters
--   lupine_event_log_maintain  policyd: creates day partitions ahead and drops expired ones,
--                              which needs ownership of event_log; retention is never shorter
--                              than event_log_policy.min_retention, which only the owner sets
--   lupine_set_account_state   abusectl (and lupine_send_check): the state and its audit row
--   lupine_lock_account        abusectl: locks an account's row while it checks a move
-- Partitions made later belong to the owner and carry no grants: rows reach them through
-- event_log, whose privileges are the ones checked, and nobody else may touch them
-- directly. Default privileges are deliberately not used: a later migration grants what it
-- creates, explicitly, as this one does.
--
-- Roles are cluster-wide. They are created here when missing if the migrating role may
-- create roles (superuser or CREATEROLE); otherwise the migration stops and says which
-- CREATE ROLE statements a superuser must run first.

DO $$
DECLARE
    r          text;
    may_create boolean;
    missing    text[] := '{}';
BEGIN
    SELECT rolsuper OR rolcreaterole INTO may_create FROM pg_roles WHERE rolname = current_user;
    FOREACH r IN ARRAY ARRAY['lupine_policyd', 'lupine_abusectl', 'lupine_dovecot'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
        IF NOT coalesce(may_create, false) THEN
            missing := missing || r;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- the migration of another database in this cluster made it just now
        END;
    END LOOP;
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'database role(s) % missing, and role % may not create roles (it has no CREATEROLE): '
                        'migrate again after a superuser ran: %',
            array_to_string(missing, ', '), current_user,
            (SELECT string_agg(format('CREATE ROLE %I NOLOGIN;', m), ' ') FROM unnest(missing) AS m)
            USING ERRCODE = 'undefined_object';
    END IF;
END $$;

-- Who wrote each audit row, as the database knows it (the login role; session_user stays
-- the caller's inside SECURITY DEFINER functions). Rows from before this migration have
-- none. The restricted roles cannot set it (nor `at`): see the column grants below.
ALTER TABLE audit ADD COLUMN db_user text;
ALTER TABLE audit ALTER COLUMN db_user SET DEFAULT session_user;

-- The shortest event-log retention the maintenance may apply, whatever policyd asks for
-- (event_log.retention): policyd's role can shorten the evidence only down to this. One
-- row; only the owner changes it:
--   UPDATE event_log_policy SET min_retention = interval '180 days';
CREATE TABLE event_log_policy (
    one_row       boolean  PRIMARY KEY DEFAULT true CHECK (one_row),
    min_retention interval NOT NULL DEFAULT interval '1 day' CHECK (min_retention >= interval '1 day')
);
INSERT INTO event_log_policy DEFAULT VALUES;

-- 001's version matched partitions by the parent's name in any schema; this one takes
-- event_log's own (it runs as the owner now, on policyd's behalf).
CREATE OR REPLACE FUNCTION event_log_prune(retention interval) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
    cutoff date := ((now() - retention) AT TIME ZONE 'UTC')::date;
BEGIN
    FOR r IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'event_log'::regclass AND c.relname ~ '^event_log_[0-9]{8}$'
    LOOP
        IF to_date(substr(r.relname, 11), 'YYYYMMDD') < cutoff THEN
            EXECUTE format('DROP TABLE %I', r.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    DELETE FROM event_log_default WHERE ts < now() - retention;
    RETURN dropped;
END $$;

-- The event log's upkeep for policyd's maintenance task: day partitions from today to
-- p_days_ahead days later (at most 31), and the expired ones dropped. The retention is
-- p_retention, but never less than event_log_policy.min_retention (nor a day).
CREATE FUNCTION lupine_event_log_maintain(p_days_ahead integer, p_retention interval,
                                          OUT created integer, OUT dropped integer)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_min interval;
BEGIN
    IF p_days_ahead IS NULL OR p_days_ahead NOT BETWEEN 0 AND 31 THEN
        RAISE EXCEPTION 'days ahead must be 0 to 31, not %', p_days_ahead USING ERRCODE = '22023';
    END IF;
    SELECT min_retention INTO v_min FROM event_log_policy;
    created := event_log_ensure_partitions(p_days_ahead);
    dropped := event_log_prune(greatest(p_retention, v_min, interval '1 day'));
END $$;

-- Locks the account's row, if it has one, until the end of the transaction and returns its
-- state ('active' without a row): abusectl checks a move against the state it will change.
CREATE FUNCTION lupine_lock_account(p_login text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_state text;
BEGIN
    SELECT state INTO v_state FROM account WHERE login = lower(p_login) FOR UPDATE;
    RETURN coalesce(v_state, 'active');
END $$;

ALTER FUNCTION lupine_set_account_state(text, text, text, text, bigint, text) SECURITY DEFINER;
ALTER FUNCTION lupine_send_check(text, timestamptz, text, text[], text[], integer, integer, bigint, text[],
                                 integer[], bigint[], text[], integer[], bigint[], text) SECURITY DEFINER;
ALTER FUNCTION lupine_send_prune(timestamptz, interval, integer) SECURITY DEFINER;

-- Every function of ours resolves names in this schema only, then pg_temp (last: a
-- caller's temporary table never shadows ours; pg_catalog comes first implicitly).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'event_log_ensure_partitions(integer)', 'event_log_prune(interval)',
        'lupine_event_log_maintain(integer, interval)', 'lupine_lock_account(text)',
        'lupine_set_account_state(text, text, text, text, bigint, text)',
        'lupine_send_check(text, timestamptz, text, text[], text[], integer, integer, bigint, text[], integer[],'
        ' bigint[], text[], integer[], bigint[], text)',
        'lupine_send_prune(timestamptz, interval, integer)', 'lupine_directory_notify()',
        'lupine_audit_append_only()']::regprocedure[] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
    END LOOP;
END $$;

-- Functions are executable by PUBLIC unless revoked; these only by whom they are for.
REVOKE ALL ON FUNCTION event_log_ensure_partitions(integer), event_log_prune(interval),
    lupine_event_log_maintain(integer, interval), lupine_lock_account(text),
    lupine_set_account_state(text, text, text, text, bigint, text),
    lupine_send_check(text, timestamptz, text, text[], text[], integer, integer, bigint, text[],
                      integer[], bigint[], text[], integer[], bigint[], text),
    lupine_send_prune(timestamptz, interval, integer)
    FROM PUBLIC;

-- The schema itself: USAGE (public has it for PUBLIC already; another schema may not).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['lupine_policyd', 'lupine_abusectl', 'lupine_dovecot'] LOOP
        IF NOT has_schema_privilege(r, current_schema(), 'USAGE') THEN
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), r);
        END IF;
    END LOOP;
    -- migrate() makes schema_migrations before the first migration; both programs read it
    -- at start to see whether anything is pending.
    IF to_regclass('schema_migrations') IS NOT NULL THEN
        GRANT SELECT ON schema_migrations TO lupine_policyd, lupine_abusectl;
    END IF;
END $$;

-- policyd (policyd/store.cpp, directory_sync.cpp, app.cpp).
GRANT SELECT, INSERT, UPDATE, DELETE ON greylist, greylist_awl TO lupine_policyd;
GRANT SELECT ON allowlist, account, webmail_network, send_limit TO lupine_policyd;
GRANT INSERT ON event_log TO lupine_policyd;
GRANT EXECUTE ON FUNCTION
    lupine_send_check(text, timestamptz, text, text[], text[], integer, integer, bigint, text[],
                      integer[], bigint[], text[], integer[], bigint[], text),
    lupine_send_prune(timestamptz, interval, integer),
    lupine_event_log_maintain(integer, interval)
    TO lupine_policyd;

-- abusectl (abusectl/cmd_*.cpp, stats.cpp, verify.cpp). No DELETE or TRUNCATE on cases,
-- copies, audit or the event log; cases change only their state and closing columns;
-- flags only their review columns; audit rows get no chosen time or db_user.
GRANT SELECT ON account, webmail_network, send_limit, account_flag, abuse_case, case_message, audit, event_log
    TO lupine_abusectl;
GRANT INSERT, DELETE ON webmail_network TO lupine_abusectl;
GRANT INSERT, UPDATE, DELETE ON send_limit TO lupine_abusectl;
GRANT UPDATE (reviewed_at, reviewed_by, review_note) ON account_flag TO lupine_abusectl;
GRANT INSERT ON abuse_case, case_message TO lupine_abusectl;
GRANT UPDATE (state, account, closed_by, closed_at) ON abuse_case TO lupine_abusectl;
GRANT INSERT (actor, action, login, case_id, old_value, new_value, reason) ON audit TO lupine_abusectl;
GRANT USAGE ON SEQUENCE abuse_case_id_seq, case_message_id_seq, audit_id_seq TO lupine_abusectl;
GRANT EXECUTE ON FUNCTION lupine_set_account_state(text, text, text, text, bigint, text), lupine_lock_account(text)
    TO lupine_abusectl;

-- Dovecot's passdb (docs/accounts.md). The view reads account and webmail_network with
-- its owner's rights.
GRANT SELECT ON dovecot_account TO lupine_dovecot;
