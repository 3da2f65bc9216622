-- 002: why a decision was taken, per check: DNSBL/DNSWL hits with their weights, the
-- reverse-DNS result, greylist timings ("dnsbl.example=127.0.0.2(+3) rdns=no_ptr(+2)").
ALTER TABLE event_log ADD COLUMN detail text NOT NULL DEFAULT '';
