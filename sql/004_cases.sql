-- 004: abuse cases and the spam copies imported into them; the audit trail made
-- append-only.
--
-- A case moves open -> restricted -> terminated | restored (abusectl enforces the moves;
-- the CHECK keeps the state names honest). The copies keep the original bytes, so an
-- export can hand lawyers the very files the reporter sent.

CREATE TABLE abuse_case (
    id         bigserial   PRIMARY KEY,
    state      text        NOT NULL DEFAULT 'open'
                           CHECK (state IN ('open', 'restricted', 'terminated', 'restored')),
    account    text        CHECK (account IS NULL OR (account <> '' AND account = lower(account))),
    reporter   text        NOT NULL,
    summary    text        NOT NULL DEFAULT '',
    opened_by  text        NOT NULL,
    opened_at  timestamptz NOT NULL DEFAULT now(),
    closed_by  text,
    closed_at  timestamptz
);
CREATE INDEX abuse_case_account_idx ON abuse_case (account);

CREATE TABLE case_message (
    id           bigserial   PRIMARY KEY,
    case_id      bigint      NOT NULL REFERENCES abuse_case (id),
    file_name    text        NOT NULL,   -- as given on the command line (base name)
    part         integer     NOT NULL,   -- 0: the file itself; n: its n-th attached copy
    sha256       text        NOT NULL,   -- of raw
    raw          bytea       NOT NULL,   -- the copy exactly as received
    headers      text        NOT NULL,   -- its header block
    message_id   text,
    msg_date     timestamptz,
    from_header  text,
    to_header    text,
    subject      text,
    envelope_from text,
    queue_id     text,                   -- from our submission hop (Received by one of our hosts)
    sasl_user    text,
    client_ip    text,
    received_at  timestamptz,
    notes        text        NOT NULL DEFAULT '',
    imported_by  text        NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_message_case_idx ON case_message (case_id);

ALTER TABLE account ADD CONSTRAINT account_case_fk FOREIGN KEY (case_id) REFERENCES abuse_case (id);
ALTER TABLE audit ADD CONSTRAINT audit_case_fk FOREIGN KEY (case_id) REFERENCES abuse_case (id);

-- The audit trail may support legal action: rows are added, never changed or removed, by any
-- role (only a superuser can get around a trigger, and that leaves its own traces).
CREATE FUNCTION lupine_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit rows are append-only (% refused)', TG_OP USING ERRCODE = '42501';
END $$;

CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION lupine_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION lupine_audit_append_only();
