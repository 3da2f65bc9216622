// An account's outbound statistics from the event log; see stats.hpp. The SQL is here, the
// words and the output forms too (pure, below compute_stats()).
#include "abusectl/stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "abusectl/output.hpp"
#include "abusectl/when.hpp"
#include "core/config.hpp"
#include "core/db_session.hpp"

namespace lupine::abusectl {

namespace {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::seconds;

constexpr long long day_seconds = 86400;

// The account's rows: a WHERE condition on event_log `e`. $1 is the login (lower-case), and
// $first .. are the case variants of its first `start` bytes (see login_ranges()). One index
// range per variant P, from P || upper(rest) to P || rest (least/greatest: byte order puts
// upper case first, glibc and ICU collations lower case), holds every spelling that starts
// with P, so the planner walks event_log_sasl_idx (sasl_username, ts) although the match is
// on lower(sasl_username). The bounds are constants once the parameters are bound
// (exec_params plans with their values), so the planner sees how narrow they are.
// `sasl_username <> ''` is repeated so that the partial index applies.
// XXX: an expression index on lower(sasl_username) would make this unnecessary; policyd
// logs the login as the client sent it, and sql/ has no such index.
std::string account_rows(std::size_t variants, std::size_t start, int first) {
  const std::string rest = fmt::format("substr($1::text, {})", start + 1);
  std::string ranges;
  for (std::size_t i = 0; i < variants; ++i) {
    ranges += fmt::format(
        "{1}e.sasl_username BETWEEN least(${0}::text || upper({2}), ${0}::text || {2})"
        " AND greatest(${0}::text || upper({2}), ${0}::text || {2})",
        static_cast<std::size_t>(first) + i, i == 0 ? "" : " OR ", rest);
  }
  if (ranges.empty()) return "e.sasl_username <> '' AND lower(e.sasl_username) = $1::text";
  return fmt::format("e.sasl_username <> '' AND lower(e.sasl_username) = $1::text AND ({})", ranges);
}

constexpr std::string_view sent_verdicts = "('dunno', 'prepend', 'pass', 'accept')";
constexpr std::string_view refused_verdicts = "('defer', 'reject', 'hold')";

// The aggregates of one traffic bucket over rows of `mine` (see account_query()).
constexpr std::string_view traffic_columns =
    "count(*) FILTER (WHERE ok AND eom),"
    " coalesce(sum(rc) FILTER (WHERE ok AND eom), 0)::bigint,"
    " least(coalesce(sum(size) FILTER (WHERE ok AND eom), 0), 9223372036854775807)::bigint,"
    " count(DISTINCT rcpt) FILTER (WHERE ok AND NOT eom AND rcpt <> ''),"
    " count(DISTINCT nullif(substring(rcpt FROM '@([^@]*)$'), '')) FILTER (WHERE ok AND NOT eom),"
    " count(*) FILTER (WHERE NOT ok)";

// One scan of the account's rows from the baseline's start to until, grouped five ways.
// chunk numbers the periods: 0 .. N-1 the baseline, N the period itself.
// $1 and $6.. as for account_rows, $2 baseline start, $3 until, $4 period length in seconds,
// $5 N.
std::string account_query(std::size_t variants, std::size_t start) {
  return fmt::format(
      "WITH mine AS MATERIALIZED ("
      " SELECT e.ts, floor(extract(epoch FROM e.ts - $2::timestamptz) / $4::bigint)::int AS chunk,"
      "  e.protocol_state = 'END-OF-MESSAGE' AS eom, e.verdict IN {0} AS ok, lower(e.recipient) AS rcpt,"
      "  e.recipient_count::bigint AS rc, e.size, e.client_address AS client"
      " FROM event_log e"
      " WHERE {1} AND e.ts >= $2::timestamptz AND e.ts < $3::timestamptz"
      "  AND e.protocol_state IN ('RCPT', 'END-OF-MESSAGE') AND (e.verdict IN {0} OR e.verdict IN {2}))"
      " SELECT 'chunk' AS kind, chunk::bigint AS k, NULL::text AS client, {3}, NULL::bigint, NULL::bigint"
      "  FROM mine GROUP BY chunk"
      " UNION ALL"
      " SELECT 'peak', chunk::bigint, NULL, max(n), 0, 0, 0, 0, 0, NULL, NULL FROM"
      "  (SELECT chunk, date_trunc('hour', ts) AS h, count(*) AS n FROM mine WHERE ok AND eom GROUP BY 1, 2) p"
      "  GROUP BY chunk"
      " UNION ALL"
      " SELECT 'hour', extract(epoch FROM date_trunc('hour', ts))::bigint, NULL, {3}, NULL, NULL"
      "  FROM mine WHERE chunk = $5::int GROUP BY 2"
      " UNION ALL"
      " SELECT 'day', extract(epoch FROM date_trunc('day', ts))::bigint, NULL, {3}, NULL, NULL"
      "  FROM mine WHERE chunk = $5::int GROUP BY 2"
      " UNION ALL"
      " SELECT 'client', NULL, coalesce(host(client), ''), count(*), 0, 0, 0, 0, 0,"
      "  floor(extract(epoch FROM min(ts)) * 1000000)::bigint, floor(extract(epoch FROM max(ts)) * 1000000)::bigint"
      "  FROM mine WHERE chunk = $5::int AND ok AND eom GROUP BY client",
      sent_verdicts, account_rows(variants, start, 6), refused_verdicts, traffic_columns);
}

// Every account's figures in [since, until): volume and hourly peak from END-OF-MESSAGE
// rows, breadth from RCPT rows (two scans of the period's authenticated rows, no more),
// then how many other accounts lie below this one's figures, and the medians and 95th
// percentiles. Only accounts with a message in the period are in the population.
// $1 login, $2 since, $3 until, $4..$9 this account's messages, recipients, bytes,
// distinct recipients, distinct domains, peak per hour.
std::string population_query() {
  return fmt::format(
      "WITH hourly AS ("
      " SELECT lower(sasl_username) AS login, date_trunc('hour', ts) AS h, count(*) AS n,"
      "  sum(recipient_count) AS r, sum(size) AS b"
      " FROM event_log"
      " WHERE sasl_username <> '' AND ts >= $2::timestamptz AND ts < $3::timestamptz"
      "  AND protocol_state = 'END-OF-MESSAGE' AND verdict IN {0}"
      " GROUP BY 1, 2),"
      " vol AS (SELECT login, sum(n) AS m, sum(r) AS r, sum(b) AS b, max(n) AS peak FROM hourly GROUP BY login),"
      " breadth AS ("
      " SELECT lower(sasl_username) AS login, count(DISTINCT lower(recipient)) AS dr,"
      "  count(DISTINCT nullif(substring(lower(recipient) FROM '@([^@]*)$'), '')) AS dd"
      " FROM event_log"
      " WHERE sasl_username <> '' AND ts >= $2::timestamptz AND ts < $3::timestamptz"
      "  AND protocol_state = 'RCPT' AND verdict IN {0} AND recipient <> ''"
      " GROUP BY 1),"
      " acct AS (SELECT v.login, v.m, v.r, v.b, coalesce(d.dr, 0) AS dr, coalesce(d.dd, 0) AS dd, v.peak"
      "  FROM vol v LEFT JOIN breadth d USING (login))"
      " SELECT count(*), count(*) FILTER (WHERE login <> $1::text),"
      "  count(*) FILTER (WHERE login <> $1::text AND m < $4::bigint),"
      "  count(*) FILTER (WHERE login <> $1::text AND r < $5::bigint),"
      "  count(*) FILTER (WHERE login <> $1::text AND b < $6::bigint),"
      "  count(*) FILTER (WHERE login <> $1::text AND dr < $7::bigint),"
      "  count(*) FILTER (WHERE login <> $1::text AND dd < $8::bigint),"
      "  count(*) FILTER (WHERE login <> $1::text AND peak < $9::bigint),"
      "  percentile_cont(0.5) WITHIN GROUP (ORDER BY m::float8),"
      "  percentile_cont(0.5) WITHIN GROUP (ORDER BY r::float8),"
      "  percentile_cont(0.5) WITHIN GROUP (ORDER BY b::float8),"
      "  percentile_cont(0.5) WITHIN GROUP (ORDER BY dr::float8),"
      "  percentile_cont(0.5) WITHIN GROUP (ORDER BY dd::float8),"
      "  percentile_cont(0.5) WITHIN GROUP (ORDER BY peak::float8),"
      "  percentile_cont(0.95) WITHIN GROUP (ORDER BY m::float8),"
      "  percentile_cont(0.95) WITHIN GROUP (ORDER BY r::float8),"
      "  percentile_cont(0.95) WITHIN GROUP (ORDER BY b::float8),"
      "  percentile_cont(0.95) WITHIN GROUP (ORDER BY dr::float8),"
      "  percentile_cont(0.95) WITHIN GROUP (ORDER BY dd::float8),"
      "  percentile_cont(0.95) WITHIN GROUP (ORDER BY peak::float8)"
      " FROM acct",
      sent_verdicts);
}

// The start of login for account_rows(): every case variant of it (at most 16: it ends with
// the fourth letter) and its length. A login with a byte outside ASCII gets no variants, so
// no ranges (every authenticated row in the time range is read): the bounds need each
// letter's upper case on the same side of its lower case, and in byte order É sorts before
// é but Ÿ (U+0178) after ÿ (U+00FF).
std::pair<std::vector<std::string>, std::size_t> login_ranges(const std::string& login) {
  for (char c : login) {
    if (static_cast<unsigned char>(c) >= 0x80) return {{}, 0};
  }
  std::size_t end = 0;
  int letters = 0;
  while (end < login.size() && letters < 4) {
    if (login[end] >= 'a' && login[end] <= 'z') ++letters;
    ++end;
  }
  std::vector<std::string> variants{login.substr(0, end)};
  for (std::size_t i = 0; i < end; ++i) {
    if (login[i] < 'a' || login[i] > 'z') continue;
    const std::size_t n = variants.size();
    for (std::size_t k = 0; k < n; ++k) {
      auto v = variants[k];
      v[i] = static_cast<char>(v[i] - 'a' + 'A');
      variants.push_back(std::move(v));
    }
  }
  return {variants, end};
}

time_point from_unix_seconds(long long s) {
  return time_point{seconds{s}};
}
time_point from_unix_micros(long long us) {
  return time_point{duration_cast<time_point::duration>(microseconds{us})};
}

long long unix_seconds(time_point t) {
  return std::chrono::floor<seconds>(t).time_since_epoch().count();
}

// How many UTC days (day partitions) [a, b) touches.
long long days_touched(time_point a, time_point b) {
  long long from = unix_seconds(a);
  long long to = unix_seconds(b) - 1;
  if (to < from) return 0;
  auto day = [](long long s) { return s >= 0 ? s / day_seconds : (s - day_seconds + 1) / day_seconds; };
  return day(to) - day(from) + 1;
}

template <class Row>
traffic read_traffic(const Row& row, int first) {
  traffic t;
  t.messages = row[first].template as<long long>();
  t.recipients = row[first + 1].template as<long long>();
  t.bytes = row[first + 2].template as<long long>();
  t.distinct_recipients = row[first + 3].template as<long long>();
  t.distinct_domains = row[first + 4].template as<long long>();
  t.refused = row[first + 5].template as<long long>();
  return t;
}

double figure_of(const traffic& t, figure f, double days) {
  switch (f) {
    case figure::messages_per_day: return static_cast<double>(t.messages) / days;
    case figure::recipients_per_day: return static_cast<double>(t.recipients) / days;
    case figure::bytes_per_day: return static_cast<double>(t.bytes) / days;
    case figure::distinct_recipients: return static_cast<double>(t.distinct_recipients);
    case figure::distinct_domains: return static_cast<double>(t.distinct_domains);
    case figure::peak_messages_per_hour: return static_cast<double>(t.peak_messages_per_hour);
  }
  return 0;
}

bool per_day(figure f) {
  return f == figure::messages_per_day || f == figure::recipients_per_day || f == figure::bytes_per_day;
}

// ---- words -------------------------------------------------------------------------------

// 840, 8.5, 0.25: whole numbers from 100 up, else at most two significant decimals.
std::string number(double v) {
  if (!std::isfinite(v)) return "?";
  if (std::fabs(v) >= 100 || v == std::floor(v)) return fmt::format("{:.0f}", v);
  std::string s = std::fabs(v) >= 1 ? fmt::format("{:.1f}", v) : fmt::format("{:.2f}", v);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

// 1536 -> "1.5 KiB"; below 1024 "900 B".
std::string human_bytes(double v) {
  static constexpr std::array<const char*, 6> units{"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  std::size_t u = 0;
  while (std::fabs(v) >= 1024 && u + 1 < units.size()) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{:.0f} B", v);
  return fmt::format("{} {}", number(std::fabs(v) >= 100 ? std::round(v) : std::round(v * 10) / 10), units.at(u));
}

std::string figure_value(figure f, double v) {
  return f == figure::bytes_per_day ? human_bytes(v) : number(v);
}

std::string ratio_text(double r) {
  return r >= 10 ? fmt::format("{:.0f}×", r) : fmt::format("{}×", number(std::round(r * 10) / 10));
}

// Rounded down: 99.96 is "99.9", never "100" unless every other account is below.
std::string percent_text(double p) {
  return number(std::floor(p * 10) / 10);
}

std::string_view label(figure f) {
  switch (f) {
    case figure::messages_per_day: return "messages per day";
    case figure::recipients_per_day: return "recipients per day";
    case figure::bytes_per_day: return "bytes per day";
    case figure::distinct_recipients: return "distinct recipients";
    case figure::distinct_domains: return "distinct domains";
    case figure::peak_messages_per_hour: return "peak messages per hour";
  }
  return "?";
}

// The baseline with its unit: "20/day", "12 per 7d", "3/hour".
std::string baseline_text(const account_stats& st, figure f, double b) {
  if (per_day(f)) return figure_value(f, b) + "/day";
  if (f == figure::peak_messages_per_hour) return number(b) + "/hour";
  return fmt::format("{} per {}", number(b),
                     format_window(unix_seconds(st.request.until) - unix_seconds(st.request.since)));
}

std::string finding(const account_stats& st, const figure_stats& fs) {
  std::string text = fmt::format("{}: {}", label(fs.which), figure_value(fs.which, fs.value));
  if (fs.ratio) {
    text += fmt::format(", {} its own baseline ({})", ratio_text(*fs.ratio), baseline_text(st, fs.which, *fs.baseline));
  } else if (fs.baseline) {
    text += ", none in its baseline";
  } else if (st.log_first_day) {
    text += fmt::format(", no baseline (the event log starts {})", format_utc_day(*st.log_first_day));
  } else {
    text += ", no baseline";
  }
  const long long others = st.population - (st.totals.messages > 0 ? 1 : 0);
  if (fs.percentile) {
    if (*fs.percentile >= 100) {
      text += others == 1 ? std::string{", above the only other account"}
                          : fmt::format(", above all {} other accounts", others);
    } else {
      text += fmt::format(", above {}% of the other {} account{}", percent_text(*fs.percentile), others,
                          others == 1 ? "" : "s");
    }
  }
  return text + " — unusual";
}

// ---- JSON --------------------------------------------------------------------------------

std::string json_num(double v) {
  if (!std::isfinite(v)) return "null";
  double r = std::round(v * 1000) / 1000;
  if (r == 0) r = 0;  // no "-0"
  return fmt::format("{}", r);
}

std::string json_opt(const std::optional<double>& v) {
  return v ? json_num(*v) : "null";
}

std::string json_traffic(const traffic& t) {
  return fmt::format(
      "\"messages\":{},\"recipients\":{},\"bytes\":{},\"distinct_recipients\":{},\"distinct_domains\":{},"
      "\"refused\":{}",
      t.messages, t.recipients, t.bytes, t.distinct_recipients, t.distinct_domains, t.refused);
}

template <class Get>
std::string json_by_figure(const account_stats& st, Get get) {
  std::string out = "{";
  for (const auto& fs : st.figures) {
    if (out.size() > 1) out += ",";
    out += json_string(to_string(fs.which)) + ":" + get(fs);
  }
  return out + "}";
}

}  // namespace

std::string_view to_string(figure f) {
  switch (f) {
    case figure::messages_per_day: return "messages_per_day";
    case figure::recipients_per_day: return "recipients_per_day";
    case figure::bytes_per_day: return "bytes_per_day";
    case figure::distinct_recipients: return "distinct_recipients";
    case figure::distinct_domains: return "distinct_domains";
    case figure::peak_messages_per_hour: return "peak_messages_per_hour";
  }
  return "unknown";
}

std::optional<account_stats> compute_stats(db_session& s, const stats_request& r,
                                           const std::function<void(std::string_view)>& progress) {
  auto note = [&](const std::string& text) {
    if (progress) progress(text);
  };
  const long long period_s = unix_seconds(r.until) - unix_seconds(r.since);
  if (period_s <= 0) throw std::invalid_argument{"stats: until must be after since"};
  const int n = std::max(r.baseline_periods, 0);

  account_stats st;
  st.request = r;
  st.days = static_cast<double>(period_s) / day_seconds;
  st.baseline_since = r.since - seconds{period_s * n};
  const std::string since = format_utc(r.since);
  const std::string until = format_utc(r.until);
  const std::string baseline_since = format_utc(st.baseline_since);

  // One snapshot for all statements: the account's rows and the population agree even while
  // policyd keeps writing. Read-only, so it also runs on a hot standby.
  pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx{s.conn};
  tx.exec("SET LOCAL TIME ZONE 'UTC'");  // date_trunc() buckets are UTC hours and days

  // Lower-cased by PostgreSQL, as the comparisons below and lupine_set_account_state do.
  st.request.account = tx.exec_params1("SELECT lower($1::text)", r.account)[0].as<std::string>();
  const std::string& login = st.request.account;
  const auto [variants, prefix_len] = login_ranges(login);
  const auto head =
      tx.exec_params1(fmt::format("SELECT EXISTS (SELECT 1 FROM account WHERE login = $1::text)"
                                  "  OR EXISTS (SELECT 1 FROM event_log e WHERE {}),"
                                  " (SELECT extract(epoch FROM date_trunc('day', min(ts)))::bigint FROM event_log)",
                                  account_rows(variants.size(), prefix_len, 2)),
                      login, pqxx::prepare::make_dynamic_params(variants));
  if (!head[0].as<bool>()) return std::nullopt;
  if (!head[1].is_null()) st.log_first_day = from_unix_seconds(head[1].as<long long>());

  const long long account_days = days_touched(st.baseline_since, r.until);
  note(fmt::format("scanning {} day partition{} for {}'s requests...", account_days, account_days == 1 ? "" : "s",
                   printable(login)));
  std::map<long long, traffic> chunks;
  const auto rows = tx.exec_params(account_query(variants.size(), prefix_len), login, baseline_since, until, period_s,
                                   n, pqxx::prepare::make_dynamic_params(variants));
  for (const auto& row : rows) {
    const auto kind = row[0].as<std::string>();
    if (kind == "chunk") {
      auto& t = chunks[row[1].as<long long>()];
      const auto peak = t.peak_messages_per_hour;
      t = read_traffic(row, 3);
      t.peak_messages_per_hour = peak;
    } else if (kind == "peak") {
      chunks[row[1].as<long long>()].peak_messages_per_hour = row[3].as<long long>();
    } else if (kind == "hour" || kind == "day") {
      auto& list = kind == "hour" ? st.per_hour : st.per_day;
      list.push_back({from_unix_seconds(row[1].as<long long>()), read_traffic(row, 3)});
    } else if (kind == "client") {
      auto addr = row[2].as<std::string>();
      st.clients.push_back({addr.empty() ? "unknown" : addr, row[3].as<long long>(),
                            from_unix_micros(row[9].as<long long>()), from_unix_micros(row[10].as<long long>())});
    }
  }
  auto by_start = [](const bucket& a, const bucket& b) { return a.start < b.start; };
  std::sort(st.per_hour.begin(), st.per_hour.end(), by_start);
  std::sort(st.per_day.begin(), st.per_day.end(), by_start);
  std::sort(st.clients.begin(), st.clients.end(), [](const client_use& a, const client_use& b) {
    return a.messages != b.messages ? a.messages > b.messages : a.address < b.address;
  });
  st.clients_total = static_cast<long long>(st.clients.size());
  if (auto it = chunks.find(n); it != chunks.end()) st.totals = it->second;

  // The baseline: periods that lie wholly within the event log's span (retention drops whole
  // day partitions; an older period would look quiet only because its rows are gone).
  traffic base_sum;
  for (int k = 0; k < n; ++k) {
    const auto start = st.baseline_since + seconds{period_s * k};
    if (!st.log_first_day || start < *st.log_first_day) continue;
    ++st.baseline_covered;
    if (auto it = chunks.find(k); it != chunks.end()) {
      base_sum.messages += it->second.messages;
      base_sum.recipients += it->second.recipients;
      base_sum.bytes += it->second.bytes;
      base_sum.distinct_recipients += it->second.distinct_recipients;
      base_sum.distinct_domains += it->second.distinct_domains;
      base_sum.peak_messages_per_hour += it->second.peak_messages_per_hour;
    }
  }

  const long long period_days = days_touched(r.since, r.until);
  note(fmt::format("scanning {} day partition{} for every account's messages...", period_days,
                   period_days == 1 ? "" : "s"));
  const auto& t = st.totals;
  const auto pop = tx.exec_params1(population_query(), login, since, until, t.messages, t.recipients, t.bytes,
                                   t.distinct_recipients, t.distinct_domains, t.peak_messages_per_hour);
  st.population = pop[0].as<long long>();
  const long long others = pop[1].as<long long>();
  for (std::size_t i = 0; i < all_figures.size(); ++i) {
    const figure f = all_figures.at(i);
    figure_stats fs;
    fs.which = f;
    fs.value = figure_of(t, f, st.days);
    if (st.baseline_covered > 0) {
      fs.baseline = figure_of(base_sum, f, st.days) / st.baseline_covered;
      if (*fs.baseline > 0) fs.ratio = fs.value / *fs.baseline;
    }
    if (others > 0) {
      fs.percentile =
          100.0 * static_cast<double>(pop[static_cast<int>(2 + i)].as<long long>()) / static_cast<double>(others);
    }
    const double scale = per_day(f) ? st.days : 1.0;
    const auto& med = pop[static_cast<int>(8 + i)];
    const auto& p95 = pop[static_cast<int>(14 + i)];
    fs.population_median = med.is_null() ? 0 : med.as<double>() / scale;
    fs.population_p95 = p95.is_null() ? 0 : p95.as<double>() / scale;
    st.figures.push_back(fs);
  }
  tx.commit();
  judge(st);
  return st;
}

void judge(account_stats& st, const thresholds& t) {
  st.findings.clear();
  for (auto& fs : st.figures) {
    const bool high = fs.percentile && *fs.percentile >= t.min_percentile && fs.value > 0;
    const bool above_own = !fs.ratio || *fs.ratio >= t.min_ratio;  // no baseline, or zero: percentile alone
    fs.unusual = high && above_own;
    if (fs.unusual) st.findings.push_back(finding(st, fs));
  }
  if (st.totals.refused > 0) {
    st.findings.push_back(
        fmt::format("refused requests: {} (deferred, rejected or held: the account hit a limit "
                    "or was blocked)",
                    st.totals.refused));
  }
  if (st.findings.empty()) st.findings.emplace_back("nothing unusual");
}

std::string stats_json(const account_stats& st) {
  std::string out = "{";
  out += "\"account\":" + json_string(st.request.account);
  out += ",\"since\":" + json_string(format_utc(st.request.since));
  out += ",\"until\":" + json_string(format_utc(st.request.until));
  out += ",\"days\":" + json_num(st.days);
  out += fmt::format(",\"totals\":{{{},\"peak_messages_per_hour\":{},\"clients\":{}}}", json_traffic(st.totals),
                     st.totals.peak_messages_per_hour, st.clients_total);
  out += ",\"figures\":" + json_by_figure(st, [](const figure_stats& fs) { return json_num(fs.value); });
  out += ",\"per_hour\":[";
  for (std::size_t i = 0; i < st.per_hour.size(); ++i) {
    const auto& b = st.per_hour[i];
    out +=
        fmt::format("{}{{\"hour\":{},{}}}", i == 0 ? "" : ",", json_string(format_utc(b.start)), json_traffic(b.sent));
  }
  out += "],\"per_day\":[";
  for (std::size_t i = 0; i < st.per_day.size(); ++i) {
    const auto& b = st.per_day[i];
    out += fmt::format("{}{{\"day\":{},{}}}", i == 0 ? "" : ",", json_string(format_utc_day(b.start)),
                       json_traffic(b.sent));
  }
  out += "],\"clients\":[";
  for (std::size_t i = 0; i < st.clients.size(); ++i) {
    const auto& c = st.clients[i];
    out += fmt::format("{}{{\"address\":{},\"messages\":{},\"first_seen\":{},\"last_seen\":{}}}", i == 0 ? "" : ",",
                       json_string(c.address), c.messages, json_string(format_utc(c.first_seen)),
                       json_string(format_utc(c.last_seen)));
  }
  out += "]";
  out += fmt::format(
      ",\"baseline\":{{\"since\":{},\"until\":{},\"periods\":{},\"periods_covered\":{},\"log_first_day\":{},"
      "\"values\":{},\"ratios\":{}}}",
      json_string(format_utc(st.baseline_since)), json_string(format_utc(st.request.since)),
      std::max(st.request.baseline_periods, 0), st.baseline_covered,
      st.log_first_day ? json_string(format_utc_day(*st.log_first_day)) : "null",
      json_by_figure(st, [](const figure_stats& fs) { return json_opt(fs.baseline); }),
      json_by_figure(st, [](const figure_stats& fs) { return json_opt(fs.ratio); }));
  out += fmt::format(",\"population\":{{\"accounts\":{},\"percentiles\":{},\"medians\":{},\"p95\":{}}}", st.population,
                     json_by_figure(st, [](const figure_stats& fs) { return json_opt(fs.percentile); }),
                     json_by_figure(st, [](const figure_stats& fs) { return json_num(fs.population_median); }),
                     json_by_figure(st, [](const figure_stats& fs) { return json_num(fs.population_p95); }));
  out += ",\"unusual\":[";
  bool first = true;
  for (const auto& fs : st.figures) {
    if (!fs.unusual) continue;
    out += (first ? "" : ",") + json_string(to_string(fs.which));
    first = false;
  }
  out += "],\"findings\":[";
  for (std::size_t i = 0; i < st.findings.size(); ++i) out += (i == 0 ? "" : ",") + json_string(st.findings[i]);
  out += "]}\n";
  return out;
}

void print_stats(std::ostream& out, const account_stats& st, std::size_t max_clients) {
  const long long period_s = unix_seconds(st.request.until) - unix_seconds(st.request.since);
  const auto& t = st.totals;
  std::string text = fmt::format("{}: {} to {} ({})\n", printable(st.request.account), format_utc(st.request.since),
                                 format_utc(st.request.until), format_window(period_s));
  if (st.baseline_covered > 0) {
    text += fmt::format("baseline: {} period{} of {} before, from {}", st.baseline_covered,
                        st.baseline_covered == 1 ? "" : "s", format_window(period_s),
                        format_utc(st.request.since - seconds{period_s * st.baseline_covered}));
    if (st.baseline_covered < st.request.baseline_periods && st.log_first_day) {
      text += fmt::format(" ({} asked for; the event log starts {})", st.request.baseline_periods,
                          format_utc_day(*st.log_first_day));
    }
    text += "\n";
  } else if (st.request.baseline_periods > 0) {
    text += fmt::format("baseline: none (the event log does not reach back to {})\n", format_utc(st.baseline_since));
  }
  text += fmt::format("population: {} account{} sent in the period\n\n", st.population, st.population == 1 ? "" : "s");
  text += fmt::format(
      "messages {}, recipients {}, bytes {} ({})\n"
      "distinct recipients {}, distinct domains {}, client addresses {}, refused requests {}\n\n",
      t.messages, t.recipients, t.bytes, human_bytes(static_cast<double>(t.bytes)), t.distinct_recipients,
      t.distinct_domains, st.clients_total, t.refused);
  out << text;

  listing l{{{"figure"}, {"value"}, {"baseline"}, {"ratio"}, {"above"}, {"median"}, {"p95"}, {"note"}}, {}};
  for (const auto& fs : st.figures) {
    auto& row = l.rows.emplace_back();
    row.push_back(std::string{label(fs.which)});
    row.push_back(figure_value(fs.which, fs.value));
    row.push_back(fs.baseline ? cell{figure_value(fs.which, *fs.baseline)} : cell{});
    row.push_back(fs.ratio ? cell{ratio_text(*fs.ratio)} : cell{});
    row.push_back(fs.percentile ? cell{percent_text(*fs.percentile) + "%"} : cell{});
    row.push_back(figure_value(fs.which, fs.population_median));
    row.push_back(figure_value(fs.which, fs.population_p95));
    row.push_back(std::string{fs.unusual ? "unusual" : ""});
  }
  print_table(out, l);

  text = "\nfindings:\n";
  for (const auto& f : st.findings) text += "  " + printable(f) + "\n";
  out << text;

  if (!st.clients.empty()) {
    out << fmt::format("\nclient addresses ({}{}):\n", st.clients_total,
                       st.clients.size() > max_clients ? fmt::format(", the {} busiest", max_clients) : "");
    listing c{{{"address"}, {"messages", true}, {"first_seen"}, {"last_seen"}}, {}};
    for (std::size_t i = 0; i < st.clients.size() && i < max_clients; ++i) {
      const auto& u = st.clients[i];
      c.rows.push_back({u.address, std::to_string(u.messages), format_utc(u.first_seen), format_utc(u.last_seen)});
    }
    print_table(out, c);
  }
}

void print_chart(std::ostream& out, const account_stats& st, const chart_style& style) {
  if (st.per_hour.empty()) return;
  static constexpr std::array<const char*, 8> eighths{"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
  auto chart = [&](std::string_view title, long long traffic::*measure) {
    long long top = 0;
    for (const auto& b : st.per_hour) top = std::max(top, b.sent.*measure);
    const std::size_t num_width = std::to_string(top).size();
    constexpr std::size_t label_width = 16;  // "2026-11-20 14:00"
    const std::size_t fixed = label_width + 2 + 1 + num_width;
    const std::size_t bar_width = style.width > fixed + 10 ? style.width - fixed : 10;
    std::string text = fmt::format("\n{} per hour (UTC)\n", title);
    for (const auto& b : st.per_hour) {
      const long long v = b.sent.*measure;
      std::string bar;
      if (top > 0 && v > 0) {
        const double share = static_cast<double>(v) / static_cast<double>(top);
        if (style.unicode) {
          auto units = static_cast<std::size_t>(std::llround(share * static_cast<double>(bar_width * 8)));
          units = std::max<std::size_t>(units, 1);
          for (std::size_t i = 0; i < units / 8; ++i) bar += "█";
          bar += eighths.at(units % 8);
        } else {
          auto cells = static_cast<std::size_t>(std::llround(share * static_cast<double>(bar_width)));
          bar.assign(std::max<std::size_t>(cells, 1), '#');
        }
      }
      text += fmt::format("{} {}:00  {}{}{}\n", format_utc_day(b.start), format_utc(b.start).substr(11, 2), bar,
                          bar.empty() ? "" : " ", v);
    }
    out << text;
  };
  chart("messages", &traffic::messages);
  chart("distinct recipients", &traffic::distinct_recipients);
}

}  // namespace lupine::abusectl
