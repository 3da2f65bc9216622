// policyd's SQL; see store.hpp. Runs on db_pool threads only.
#include "policyd/store.hpp"

#include <ctime>

#include <fmt/format.h>

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

constexpr long long maintenance_lock_key = 0x4c7570696e66;

}  // namespace

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      len = c == 0 ? 0 : 1;
      cp = c;
    } else if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1fU;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0fU;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07U;
    }
    bool ok = len != 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc & 0xc0) == 0x80;
      cp = (cp << 6) | (cc & 0x3fU);
    }
    // No overlong forms, no UTF-16 surrogates, nothing above U+10FFFF (what PostgreSQL refuses).
    if (ok && len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ok = false;
    if (ok && len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ok = false;
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += fmt::format("\\x{:02x}", c);
      ++i;
    }
  }
  return out;
}

greylist_answer greylist_transact(db_session& s, const greylist_key& key, sys_time now, const greylist_db_params& p) {
  greylist_answer ans;
  const long long now_us = to_us(now);
  pqxx::work tx{s.conn};
  if (p.awl_clients > 0) {
    auto r = tx.exec_params(
        "SELECT passes, extract(epoch FROM last_seen)::float8 * 1000000 FROM greylist_awl WHERE client_addr = $1",
        key.client_addr);
    if (!r.empty()) {
      ans.awl_passes = r[0][0].as<int>();
      auto last_seen = from_us(static_cast<long long>(r[0][1].as<double>()));
      bool fresh = now - last_seen <= p.awl_max_age;
      if (ans.awl_passes >= static_cast<int>(p.awl_clients) && fresh) {
        ans.auto_allowed = true;
        // Keep it alive, but write at most about once per hour per client.
        if (now - last_seen > std::chrono::hours{1} || now - last_seen > p.awl_max_age / 10) {
          tx.exec_params(
              "UPDATE greylist_awl SET last_seen = to_timestamp($2::bigint / 1000000.0) "
              "WHERE client_addr = $1",
              key.client_addr, now_us);
        }
        tx.commit();
        return ans;
      }
    }
  }
  auto select = [&]() {
    return tx.exec_params(
        "SELECT extract(epoch FROM first_seen)::float8 * 1000000, extract(epoch FROM last_seen)::float8 * 1000000,"
        " extract(epoch FROM passed_at)::float8 * 1000000, attempts"
        " FROM greylist WHERE client_net = $1 AND sender = $2 AND recipient = $3 FOR UPDATE",
        key.client_net, key.sender, key.recipient);
  };
  auto to_entry = [](const pqxx::row& row) {
    greylist_entry e;
    e.first_seen = from_us(static_cast<long long>(row[0].as<double>()));
    e.last_seen = from_us(static_cast<long long>(row[1].as<double>()));
    if (!row[2].is_null()) e.passed_at = from_us(static_cast<long long>(row[2].as<double>()));
    e.attempts = row[3].as<int>();
    return e;
  };
  auto r = select();
  if (r.empty()) {
    ans.step = greylist_step(std::nullopt, now, p.triplet);
    auto ins = tx.exec_params(
        "INSERT INTO greylist (client_net, sender, recipient, first_seen, last_seen, attempts)"
        " VALUES ($1, $2, $3, to_timestamp($4::bigint / 1000000.0), to_timestamp($4::bigint / 1000000.0), 1)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        key.client_net, key.sender, key.recipient, now_us);
    if (!ins.empty()) {
      tx.commit();
      return ans;
    }
    r = select();  // another instance inserted it just now
    if (r.empty()) throw std::runtime_error{"greylist row vanished during insert"};
  }
  auto prior = to_entry(r[0]);
  ans.step = greylist_step(prior, now, p.triplet);
  const auto& e = ans.step.entry;
  // A known, passed triplet needs no write each time: refresh last_seen now and then.
  auto touch_every = std::min<std::chrono::milliseconds>(std::chrono::hours{1}, p.triplet.max_age / 10);
  bool write = ans.step.outcome != greylist_outcome::passed_before || e.last_seen - prior.last_seen > touch_every;
  if (write) {
    tx.exec_params(
        "UPDATE greylist SET first_seen = to_timestamp($4::bigint / 1000000.0),"
        " last_seen = to_timestamp($5::bigint / 1000000.0),"
        " passed_at = CASE WHEN $6::bigint IS NULL THEN NULL ELSE to_timestamp($6::bigint / 1000000.0) END,"
        " attempts = $7"
        " WHERE client_net = $1 AND sender = $2 AND recipient = $3",
        key.client_net, key.sender, key.recipient, to_us(e.first_seen), to_us(e.last_seen),
        e.passed_at ? std::optional<long long>{to_us(*e.passed_at)} : std::nullopt, e.attempts);
  }
  bool counts = ans.step.outcome == greylist_outcome::passed_now;
  if (counts && p.awl_clients > 0) {
    auto interval_us = duration_cast<microseconds>(p.awl_count_interval).count();
    tx.exec_params(
        "INSERT INTO greylist_awl (client_addr, passes, last_counted, last_seen)"
        " VALUES ($1, 1, to_timestamp($2::bigint / 1000000.0), to_timestamp($2::bigint / 1000000.0))"
        " ON CONFLICT (client_addr) DO UPDATE SET"
        "  passes = CASE WHEN greylist_awl.last_counted <= to_timestamp(($2::bigint - $3::bigint) / 1000000.0)"
        "           THEN greylist_awl.passes + 1 ELSE greylist_awl.passes END,"
        "  last_counted = CASE WHEN greylist_awl.last_counted <= to_timestamp(($2::bigint - $3::bigint) / 1000000.0)"
        "           THEN EXCLUDED.last_counted ELSE greylist_awl.last_counted END,"
        "  last_seen = EXCLUDED.last_seen",
        key.client_addr, now_us, interval_us);
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

void write_event_rows(db_session& s, const std::vector<event_row>& rows) {
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
                                                "elapsed_us"};
  pqxx::work tx{s.conn};
  pqxx::stream_to out{tx, "event_log", columns};
  for (const auto& r : rows) {
    std::optional<std::string> addr;
    if (parse_ip(r.client_address)) addr = r.client_address;
    auto u = [](const std::string& v) { return to_valid_utf8(v); };
    out << std::make_tuple(iso(r.ts), u(r.policyd), u(r.postfix_instance), u(r.queue_id), u(r.protocol_state), addr,
                           u(r.client_name), u(r.reverse_client_name), u(r.helo_name), u(r.sender), u(r.recipient),
                           r.recipient_count, r.size, u(r.sasl_username), u(r.sasl_method), u(r.policy_context),
                           r.verdict, u(r.action), u(r.reason), r.score, r.elapsed_us);
  }
  out.complete();
  tx.commit();
}

maintenance_report run_maintenance(db_session& s, sys_time now, const maintenance_params& p) {
  maintenance_report rep;
  const long long now_us = to_us(now);
  {
    pqxx::work tx{s.conn};
    bool got = tx.exec1("SELECT pg_try_advisory_xact_lock(" + std::to_string(maintenance_lock_key) + ")")[0].as<bool>();
    if (!got) return rep;
    rep.ran = true;
    rep.partitions_created = tx.exec1("SELECT event_log_ensure_partitions(2)")[0].as<int>();
    auto retention_s = duration_cast<std::chrono::seconds>(p.retention).count();
    rep.partitions_dropped =
        tx.exec_params1("SELECT event_log_prune($1::bigint * interval '1 second')", retention_s)[0].as<int>();
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
  return rep;
}

}  // namespace lupine::policyd
