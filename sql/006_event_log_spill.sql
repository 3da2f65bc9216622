-- 006: replayed event-log spill segments (policyd/spill.hpp).
--
-- When PostgreSQL is away, policyd keeps event-log rows in memory up to a bound, then in
-- fsync'd segment files on local disk. Each segment is replayed in one transaction that
-- also records its name here, so a segment is stored exactly once even if policyd dies
-- between that commit and deleting the file. A row per segment, kept as a record of which
-- log rows arrived late, and from where.

CREATE TABLE event_log_spill (
    segment     text        PRIMARY KEY,
    policyd     text        NOT NULL DEFAULT '',
    rows        integer     NOT NULL,
    replayed_at timestamptz NOT NULL DEFAULT now()
);

-- policyd's role (sql/005) records replays; it never changes or removes them.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lupine_policyd') THEN
        GRANT SELECT, INSERT ON event_log_spill TO lupine_policyd;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lupine_abusectl') THEN
        GRANT SELECT ON event_log_spill TO lupine_abusectl;
    END IF;
END
$$;
