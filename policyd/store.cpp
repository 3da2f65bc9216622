// policyd's SQL; see store.hpp. Runs on db_pool threads only.
#include "policyd/store.hpp"

#include <algorithm>
#include <ctime>
#include <stdexcept>
#include <tuple>

#include <fmt/format.h>
#include <pqxx/tablewriter>

#include "core/db_session.hpp"
#include "policyd/net.hpp"

namespace lupine::policyd {
namespace {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

long long to_us(sys_time t) {
  return duration_cast<microseconds>(t.time_since_epoch()).count();
}
sys_time from_us(long long us) {
  return sys_time{duration_cast<sys_time::duration>(microseconds{us})};
}

// "2026-11-27 17:54:32.123456+00"
std::string iso(sys_time t) {
  auto us = to_us(t);
  std::time_t secs = static_cast<std::time_t>(us / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, us % 1'000'000);
}

// A text field of COPY's text format: valid UTF-8 (to_valid_utf8), with backslash, tab,
// newline and carriage return escaped.
void append_copy_text(std::string& out, std::string_view v) {
  std::string repaired;
  if (std::any_of(v.begin(), v.end(), [](char c) { return c == 0 || static_cast<unsigned char>(c) >= 0x80; })) {
    repaired = to_valid_utf8(v);
    v = repaired;
  }
  // Runs without a special character are appended whole (a byte at a time was 5% of policyd).
  while (!v.empty()) {
    auto special = v.find_first_of("\\\t\n\r");
    out.append(v.substr(0, special));
    if (special == std::string_view::npos) break;
    switch (v[special]) {
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      default: out += "\\r"; break;
    }
    v.remove_prefix(special + 1);
  }
}

constexpr long long maintenance_lock_key = 0x4c7570696e66;

}  // namespace

namespace {

// Times come back as microseconds since the epoch, exact (extract() returns numeric in
// PostgreSQL 14+).
constexpr const char* read_both_sql =
    "SELECT a.passes, (extract(epoch FROM a.last_seen) * 1000000)::bigint,"
    " (extract(epoch FROM g.first_seen) * 1000000)::bigint, (extract(epoch FROM g.last_seen) * 1000000)::bigint,"
    " (extract(epoch FROM g.passed_at) * 1000000)::bigint, g.attempts"
    " FROM (VALUES (1)) AS one (x)"
    " LEFT JOIN greylist_awl a ON a.client_addr = $1"
    " LEFT JOIN greylist g ON g.client_net = $2 AND g.sender = $3 AND g.recipient = $4";

constexpr const char* lock_triplet_sql =
    "SELECT (extract(epoch FROM first_seen) * 1000000)::bigint, (extract(epoch FROM last_seen) * 1000000)::bigint,"
    " (extract(epoch FROM passed_at) * 1000000)::bigint, attempts"
    " FROM greylist WHERE client_net = $1 AND sender = $2 AND recipient = $3 FOR UPDATE";

greylist_entry to_entry(const pqxx::row& row, int first) {
  greylist_entry e;
  e.first_seen = from_us(row[first].as<long long>());
  e.last_seen = from_us(row[first + 1].as<long long>());
  if (!row[first + 2].is_null()) e.passed_at = from_us(row[first + 2].as<long long>());
  e.attempts = row[first + 3].as<int>();
  return e;
}

constexpr const char* insert_triplet_sql =
    "INSERT INTO greylist (client_net, sender, recipient, first_seen, last_seen, attempts)"
    " VALUES ($1, $2, $3, to_timestamp($4::bigint / 1000000.0), to_timestamp($4::bigint / 1000000.0), 1)"
    " ON CONFLICT DO NOTHING RETURNING 1";

constexpr const char* update_triplet_sql =
    "UPDATE greylist SET first_seen = to_timestamp($4::bigint / 1000000.0),"
    " last_seen = to_timestamp($5::bigint / 1000000.0),"
    " passed_at = CASE WHEN $6::bigint IS NULL THEN NULL ELSE to_timestamp($6::bigint / 1000000.0) END,"
    " attempts = $7"
    " WHERE client_net = $1 AND sender = $2 AND recipient = $3";

// The greylist statements run on every decision: prepared once per connection, so the
// server parses and plans them once.
void prepare_greylist(db_session& s) {
  if (!s.initialized.insert("greylist").second) return;
  s.conn.prepare("gl_read", read_both_sql);
  s.conn.prepare("gl_lock", lock_triplet_sql);
  s.conn.prepare("gl_insert", insert_triplet_sql);
  s.conn.prepare("gl_update", update_triplet_sql);
}

// The batched forms (greylist_read with several keys, greylist_write_batch) take arrays,
// one per column, as PostgreSQL array literals: pqxx 6 has no array parameters.
constexpr const char* read_many_sql =
    "SELECT a.passes, (extract(epoch FROM a.last_seen) * 1000000)::bigint,"
    " (extract(epoch FROM g.first_seen) * 1000000)::bigint, (extract(epoch FROM g.last_seen) * 1000000)::bigint,"
    " (extract(epoch FROM g.passed_at) * 1000000)::bigint, g.attempts"
    " FROM unnest($1::inet[], $2::cidr[], $3::text[], $4::text[]) WITH ORDINALITY AS k (addr, net, sender, rcpt, i)"
    " LEFT JOIN LATERAL (SELECT passes, last_seen FROM greylist_awl WHERE client_addr = k.addr) a ON true"
    " LEFT JOIN LATERAL (SELECT first_seen, last_seen, passed_at, attempts FROM greylist"
    "   WHERE client_net = k.net AND sender = k.sender AND recipient = k.rcpt) g ON true"
    " ORDER BY k.i";

constexpr const char* write_triplets_sql =
    "INSERT INTO greylist AS g (client_net, sender, recipient, first_seen, last_seen, passed_at, attempts)"
    " SELECT k.net, k.sender, k.rcpt, to_timestamp(k.fs / 1000000.0), to_timestamp(k.ls / 1000000.0),"
    "  to_timestamp(k.pa / 1000000.0), k.delta"
    " FROM unnest($1::cidr[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::int[])"
    "  WITH ORDINALITY AS k (net, sender, rcpt, fs, ls, pa, delta, i)"
    " ORDER BY k.i"
    " ON CONFLICT (client_net, sender, recipient) DO UPDATE SET"
    "  first_seen = LEAST(g.first_seen, EXCLUDED.first_seen),"
    "  last_seen = GREATEST(g.last_seen, EXCLUDED.last_seen),"
    "  passed_at = LEAST(g.passed_at, EXCLUDED.passed_at),"
    "  attempts = g.attempts + EXCLUDED.attempts";

// New clients are inserted; existing ones updated with the passes counted in memory. A
// client inserted by another instance between this statement's snapshot and its INSERT
// loses this batch's count (ON CONFLICT DO NOTHING): one pass, once, in a rare race.
constexpr const char* write_awl_sql =
    "WITH k AS (SELECT * FROM unnest($1::inet[], $2::bigint[], $3::int[], $4::bigint[], $5::bigint[])"
    "   AS k (addr, seen, n, first_pass, last_pass)),"
    " ins AS (INSERT INTO greylist_awl (client_addr, passes, last_counted, last_seen)"
    "   SELECT addr, n, to_timestamp(last_pass / 1000000.0), to_timestamp(seen / 1000000.0) FROM k WHERE n > 0"
    "   ON CONFLICT (client_addr) DO NOTHING RETURNING client_addr)"
    " UPDATE greylist_awl a SET"
    "  passes = a.passes + CASE WHEN k.n = 0 THEN 0"
    "   WHEN a.last_counted <= to_timestamp((k.first_pass - $6::bigint) / 1000000.0) THEN k.n ELSE k.n - 1 END,"
    "  last_counted = CASE WHEN k.n > 1 OR (k.n = 1 AND"
    "   a.last_counted <= to_timestamp((k.first_pass - $6::bigint) / 1000000.0))"
    "   THEN to_timestamp(k.last_pass / 1000000.0) ELSE a.last_counted END,"
    "  last_seen = GREATEST(a.last_seen, to_timestamp(k.seen / 1000000.0))"
    " FROM k WHERE a.client_addr = k.addr AND k.addr NOT IN (SELECT client_addr FROM ins)";

void prepare_batches(db_session& s) {
  if (!s.initialized.insert("greylist_batch").second) return;
  s.conn.prepare("gl_read_many", read_many_sql);
  s.conn.prepare("gl_write_triplets", write_triplets_sql);
  s.conn.prepare("gl_write_awl", write_awl_sql);
}

// A PostgreSQL array literal: {"a","b\"c"} or {1,NULL,3}. Text reaching here is valid UTF-8
// without NUL (to_valid_utf8, bounded_key), so quoting '"' and '\\' is all it needs.
class array_literal {
 public:
  void add(std::string_view v) {
    out_ += out_.empty() ? '{' : ',';
    out_ += '"';
    while (!v.empty()) {
      auto special = v.find_first_of("\"\\");
      out_.append(v.substr(0, special));
      if (special == std::string_view::npos) break;
      out_ += '\\';
      out_ += v[special];
      v.remove_prefix(special + 1);
    }
    out_ += '"';
  }
  void add(long long v) {
    out_ += out_.empty() ? '{' : ',';
    out_ += std::to_string(v);
  }
  void add_null() {
    out_ += out_.empty() ? '{' : ',';
    out_ += "NULL";
  }
  bool empty() const { return out_.empty(); }
  std::string str() const { return out_.empty() ? std::string{"{}"} : out_ + '}'; }

 private:
  std::string out_;
};

// The clients' rows of greylist_write_batch (and of greylist_transact's pass and refresh),
// in client order, in tx on s.
void write_awl_rows(db_session& s, pqxx::transaction_base& tx, std::vector<awl_write> awl,
                    std::chrono::milliseconds interval) {
  if (awl.empty()) return;
  prepare_batches(s);
  std::sort(awl.begin(), awl.end(),
            [](const awl_write& a, const awl_write& b) { return a.client_addr < b.client_addr; });
  array_literal addrs, seen, passes, firsts, lasts;
  for (const auto& a : awl) {
    addrs.add(a.client_addr);
    seen.add(to_us(a.seen));
    passes.add(static_cast<long long>(a.passes));
    firsts.add(to_us(a.first_pass));
    lasts.add(to_us(a.last_pass));
  }
  tx.exec_prepared("gl_write_awl", addrs.str(), seen.str(), passes.str(), firsts.str(), lasts.str(),
                   static_cast<long long>(duration_cast<microseconds>(interval).count()));
}

}  // namespace

bool awl_allows(const greylist_db_params& p, int passes, sys_time last_seen, sys_time now) {
  return p.awl_clients > 0 && passes >= static_cast<int>(p.awl_clients) && now - last_seen <= p.awl_max_age;
}

bool needs_touch(sys_time last_seen, sys_time now, std::chrono::milliseconds max_age) {
  auto every = std::min<std::chrono::milliseconds>(std::chrono::hours{1}, max_age / 10);
  return now - last_seen > every;
}

std::vector<greylist_lookup> greylist_read(db_session& s, const std::vector<greylist_key>& keys) {
  std::vector<greylist_lookup> out(keys.size());
  if (keys.empty()) return out;
  auto fill = [](greylist_lookup& l, const pqxx::row& row) {
    if (!row[0].is_null()) {
      l.awl_passes = row[0].as<int>();
      l.awl_last_seen = from_us(row[1].as<long long>());
    }
    if (!row[2].is_null()) l.triplet = to_entry(row, 2);
  };
  pqxx::nontransaction ntx{s.conn};
  if (keys.size() == 1) {
    prepare_greylist(s);
    const auto& k = keys[0];
    fill(out[0], ntx.exec_prepared1("gl_read", k.client_addr, k.client_net, k.sender, k.recipient));
    return out;
  }
  prepare_batches(s);
  array_literal addrs, nets, senders, rcpts;
  for (const auto& k : keys) {
    addrs.add(k.client_addr);
    nets.add(k.client_net);
    senders.add(k.sender);
    rcpts.add(k.recipient);
  }
  auto r = ntx.exec_prepared("gl_read_many", addrs.str(), nets.str(), senders.str(), rcpts.str());
  if (r.size() != keys.size()) throw std::runtime_error{"greylist_read: row count differs from key count"};
  for (std::size_t i = 0; i < keys.size(); ++i) fill(out[i], r[static_cast<pqxx::result::size_type>(i)]);
  return out;
}

void greylist_write_batch(db_session& s, std::vector<triplet_write> triplets, std::vector<awl_write> awl,
                          std::chrono::milliseconds awl_count_interval) {
  if (triplets.empty() && awl.empty()) return;
  prepare_batches(s);
  pqxx::work tx{s.conn};
  if (!triplets.empty()) {
    std::sort(triplets.begin(), triplets.end(), [](const triplet_write& a, const triplet_write& b) {
      return std::tie(a.key.client_net, a.key.sender, a.key.recipient) <
             std::tie(b.key.client_net, b.key.sender, b.key.recipient);
    });
    array_literal nets, senders, rcpts, firsts, lasts, passes, deltas;
    for (const auto& t : triplets) {
      nets.add(t.key.client_net);
      senders.add(t.key.sender);
      rcpts.add(t.key.recipient);
      firsts.add(to_us(t.entry.first_seen));
      lasts.add(to_us(t.entry.last_seen));
      if (t.entry.passed_at) {
        passes.add(to_us(*t.entry.passed_at));
      } else {
        passes.add_null();
      }
      deltas.add(static_cast<long long>(t.attempts_delta));
    }
    tx.exec_prepared("gl_write_triplets", nets.str(), senders.str(), rcpts.str(), firsts.str(), lasts.str(),
                     passes.str(), deltas.str());
  }
  write_awl_rows(s, tx, std::move(awl), awl_count_interval);
  tx.commit();
}

greylist_answer greylist_transact(db_session& s, const greylist_key& key, sys_time now, const greylist_db_params& p) {
  prepare_greylist(s);
  greylist_answer ans;
  const long long now_us = to_us(now);
  // 1. One unlocked read of both rows. Known triplets and auto-allow-listed clients, the
  //    common case, end here: one round trip, no transaction, no write.
  std::optional<greylist_entry> seen;
  {
    pqxx::nontransaction ntx{s.conn};
    auto r = ntx.exec_prepared1("gl_read", key.client_addr, key.client_net, key.sender, key.recipient);
    if (p.awl_clients > 0 && !r[0].is_null()) {
      ans.awl_passes = r[0].as<int>();
      auto last_seen = from_us(r[1].as<long long>());
      if (awl_allows(p, ans.awl_passes, last_seen, now)) {
        ans.auto_allowed = true;
        if (needs_touch(last_seen, now, p.awl_max_age)) {
          write_awl_rows(s, ntx, {awl_write{key.client_addr, now}}, p.awl_count_interval);
        }
        return ans;
      }
    }
    if (r[2].is_null()) {
      // 2. A new triplet: insert it; if another instance did so first, take the locked path.
      ans.step = greylist_step(std::nullopt, now, p.triplet);
      auto ins = ntx.exec_prepared("gl_insert", key.client_net, key.sender, key.recipient, now_us);
      if (!ins.empty()) return ans;
    } else {
      seen = to_entry(r, 2);
      ans.step = greylist_step(seen, now, p.triplet);
      if (ans.step.outcome == greylist_outcome::passed_before &&
          !needs_touch(seen->last_seen, now, p.triplet.max_age)) {
        return ans;
      }
    }
  }
  // 3. A state change: lock the row so that instances deciding the same triplet at the same
  //    moment agree (one of them passes it, the other sees it passed), then write.
  pqxx::work tx{s.conn};
  auto r = tx.exec_prepared("gl_lock", key.client_net, key.sender, key.recipient);
  std::optional<greylist_entry> prior;
  if (!r.empty()) prior = to_entry(r[0], 0);
  ans.step = greylist_step(prior, now, p.triplet);
  const auto& e = ans.step.entry;
  if (!prior) {
    // Deleted by maintenance between the two reads: start it again.
    tx.exec_prepared("gl_insert", key.client_net, key.sender, key.recipient, now_us);
  } else if (ans.step.outcome != greylist_outcome::passed_before ||
             needs_touch(prior->last_seen, now, p.triplet.max_age)) {
    tx.exec_prepared("gl_update", key.client_net, key.sender, key.recipient, to_us(e.first_seen), to_us(e.last_seen),
                     e.passed_at ? std::optional<long long>{to_us(*e.passed_at)} : std::nullopt, e.attempts);
  }
  if (ans.step.outcome == greylist_outcome::passed_now && p.awl_clients > 0) {
    write_awl_rows(s, tx, {awl_write{key.client_addr, now, 1, now, now}}, p.awl_count_interval);
  }
  tx.commit();
  return ans;
}

std::vector<std::pair<std::string, std::string>> load_allowlist_rows(db_session& s) {
  pqxx::read_transaction tx{s.conn};
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& row : tx.exec("SELECT kind, value FROM allowlist ORDER BY id")) {
    out.emplace_back(row[0].as<std::string>(), row[1].as<std::string>());
  }
  return out;
}

bool write_event_rows(db_session& s, const std::vector<event_row>& rows, const std::string& spill_segment) {
  static const std::vector<std::string> columns{"ts",
                                                "policyd",
                                                "postfix_instance",
                                                "queue_id",
                                                "protocol_state",
                                                "client_address",
                                                "client_name",
                                                "reverse_client_name",
                                                "helo_name",
                                                "sender",
                                                "recipient",
                                                "recipient_count",
                                                "size",
                                                "sasl_username",
                                                "sasl_method",
                                                "policy_context",
                                                "verdict",
                                                "action",
                                                "reason",
                                                "score",
                                                "elapsed_us",
                                                "detail"};
  pqxx::work tx{s.conn};
  // The log may be evidence: its commits wait for the disk even though the pool's
  // connections default to synchronous_commit = off (db.cpp).
  tx.exec("SET LOCAL synchronous_commit = on");
  if (!spill_segment.empty()) {
    // A segment may hold many rows: give it longer than a decision's statement_timeout.
    tx.exec("SET LOCAL statement_timeout = '120s'");
    auto done = tx.exec_params(
        "INSERT INTO event_log_spill (segment, policyd, rows) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
        spill_segment, rows.empty() ? std::string{} : to_valid_utf8(rows.front().policyd),
        static_cast<long long>(rows.size()));
    if (done.empty()) return false;
  }
  // Each row is one line of COPY's text format, built in one buffer: pqxx's per-field
  // conversion (stream_to) was a tenth of policyd's instructions (callgrind). pqxx 6 writes
  // a raw line only through tablewriter, deprecated there in favour of stream_to, whose
  // write_raw_line is private until pqxx 7.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  pqxx::tablewriter out{tx, "event_log", columns.begin(), columns.end()};
#pragma GCC diagnostic pop
  std::string line;
  for (const auto& r : rows) {
    line.clear();
    line += iso(r.ts);
    for (const std::string* f : {&r.policyd, &r.postfix_instance, &r.queue_id, &r.protocol_state}) {
      line += '\t';
      append_copy_text(line, *f);
    }
    line += '\t';
    if (parse_ip(r.client_address)) {
      line += r.client_address;  // an address as parse_ip accepts it: nothing to escape
    } else {
      line += "\\N";
    }
    for (const std::string* f : {&r.client_name, &r.reverse_client_name, &r.helo_name, &r.sender, &r.recipient}) {
      line += '\t';
      append_copy_text(line, *f);
    }
    fmt::format_to(std::back_inserter(line), "\t{}\t{}", r.recipient_count, r.size);
    for (const std::string* f :
         {&r.sasl_username, &r.sasl_method, &r.policy_context, &r.verdict, &r.action, &r.reason}) {
      line += '\t';
      append_copy_text(line, *f);
    }
    fmt::format_to(std::back_inserter(line), "\t{}\t{}\t", r.score, r.elapsed_us);
    append_copy_text(line, r.detail);
    out.write_raw_line(line);
  }
  out.complete();
  tx.commit();
  return true;
}

maintenance_report run_maintenance(db_session& s, sys_time now, const maintenance_params& p) {
  maintenance_report rep;
  const long long now_us = to_us(now);
  // One instance at a time: a session-level lock held until the end of this function.
  {
    pqxx::nontransaction ntx{s.conn};
    if (!ntx.exec_params1("SELECT pg_try_advisory_lock($1)", maintenance_lock_key)[0].as<bool>()) {
      return rep;
    }
  }
  struct unlock {
    db_session& s;
    ~unlock() {
      try {
        pqxx::nontransaction ntx{s.conn};
        ntx.exec_params("SELECT pg_advisory_unlock($1)", maintenance_lock_key);
      } catch (const std::exception&) {
        // The lock ends with the session anyway.
      }
    }
  } guard{s};
  rep.ran = true;
  {
    // Partitions need the owner's rights: lupine_event_log_maintain (sql/005) is SECURITY
    // DEFINER, so policyd's role creates and drops them without owning event_log, and
    // never keeps less than the owner's event_log_policy.min_retention.
    pqxx::work tx{s.conn};
    auto retention_s = duration_cast<std::chrono::seconds>(p.retention).count();
    auto r = tx.exec_params1(
        "SELECT created, dropped FROM lupine_event_log_maintain(2, $1::bigint * interval '1 second')", retention_s);
    rep.partitions_created = r[0].as<int>();
    rep.partitions_dropped = r[1].as<int>();
    tx.commit();
  }
  auto us = [](std::chrono::milliseconds d) { return duration_cast<microseconds>(d).count(); };
  // Pending rows expire after the retry window, passed rows after max_age.
  for (int round = 0; round < 1000; ++round) {
    pqxx::work tx{s.conn};
    auto r = tx.exec_params(
        "DELETE FROM greylist WHERE ctid IN (SELECT ctid FROM greylist"
        " WHERE last_seen < to_timestamp(($1::bigint - least($2::bigint, $3::bigint)) / 1000000.0)"
        "   AND ((passed_at IS NULL AND last_seen < to_timestamp(($1::bigint - $2::bigint) / 1000000.0))"
        "     OR (passed_at IS NOT NULL AND last_seen < to_timestamp(($1::bigint - $3::bigint) / 1000000.0)))"
        " LIMIT $4)",
        now_us, us(p.triplet.retry_window), us(p.triplet.max_age), p.batch_rows);
    tx.commit();
    rep.greylist_deleted += r.affected_rows();
    if (r.affected_rows() < p.batch_rows) break;
  }
  for (int round = 0; round < 1000; ++round) {
    pqxx::work tx{s.conn};
    auto r = tx.exec_params(
        "DELETE FROM greylist_awl WHERE ctid IN (SELECT ctid FROM greylist_awl"
        " WHERE last_seen < to_timestamp(($1::bigint - $2::bigint) / 1000000.0) LIMIT $3)",
        now_us, us(p.awl_max_age), p.batch_rows);
    tx.commit();
    rep.awl_deleted += r.affected_rows();
    if (r.affected_rows() < p.batch_rows) break;
  }
  // Sending counters: the longest window a limit may have is 7 days; keep a day more.
  for (int round = 0; round < 1000; ++round) {
    pqxx::work tx{s.conn};
    auto n = tx.exec_params1("SELECT lupine_send_prune(to_timestamp($1::bigint / 1000000.0), interval '8 days', $2)",
                             now_us, p.batch_rows)[0]
                 .as<long long>();
    tx.commit();
    rep.counters_deleted += n;
    if (n == 0) break;
  }
  return rep;
}

namespace {

std::string window_array(const std::vector<send_limit>& limits) {
  std::string out = "{";
  for (const auto& l : limits) {
    if (out.size() > 1) out += ',';
    out += std::to_string(l.window.count());
  }
  return out + "}";
}

std::string max_array(const std::vector<send_limit>& limits) {
  std::string out = "{";
  for (const auto& l : limits) {
    if (out.size() > 1) out += ',';
    out += std::to_string(l.max.value_or(0));
  }
  return out + "}";
}

std::string measure_array(const std::vector<send_limit>& limits) {
  std::string out = "{";
  for (const auto& l : limits) {
    if (out.size() > 1) out += ',';
    out += to_string(l.what);
  }
  return out + "}";
}

// A text[] literal: every element quoted, with backslash and quote escaped.
std::string text_array(const std::vector<std::string>& items) {
  array_literal out;
  for (const auto& it : items) out.add(it);
  return out.str();
}

constexpr const char* send_check_sql =
    "SELECT allowed, measure, window_s, max_value, value,"
    " (extract(epoch FROM frees_at) * 1000000)::bigint, flag_opened, restricted"
    " FROM lupine_send_check($1, to_timestamp($2::bigint / 1000000.0), $3, $4::text[], $5::text[], $6, $7, $8,"
    " $9::text[], $10::integer[], $11::bigint[], $12::text[], $13::integer[], $14::bigint[], $15)";

}  // namespace

send_check_answer send_check(db_session& s, const send_check_args& a) {
  if (s.initialized.insert("send_check").second) s.conn.prepare("send_check", send_check_sql);
  pqxx::nontransaction ntx{s.conn};
  auto row = ntx.exec_prepared1("send_check", a.login, to_us(a.now), a.end_of_message ? "eom" : "rcpt",
                                text_array(a.recipients), text_array(a.domains), a.messages, a.recipient_count, a.bytes,
                                measure_array(a.limits), window_array(a.limits), max_array(a.limits),
                                measure_array(a.auto_restrict), window_array(a.auto_restrict),
                                max_array(a.auto_restrict), a.policyd);
  send_check_answer ans;
  ans.allowed = row[0].as<bool>();
  if (!ans.allowed) {
    send_limit l;
    l.what = parse_measure(row[1].as<std::string>()).value_or(measure::messages);
    l.window = std::chrono::seconds{row[2].as<long long>()};
    l.max = row[3].as<long long>();
    ans.tripped = l;
    ans.value = row[4].as<long long>();
    if (!row[5].is_null()) ans.frees_at = from_us(row[5].as<long long>());
  }
  ans.flag_opened = row[6].as<bool>();
  ans.restricted = row[7].as<bool>();
  return ans;
}

}  // namespace lupine::policyd
