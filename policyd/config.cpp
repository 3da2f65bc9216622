// policyd's key table; docs/config.md documents every key listed here (a test checks).
#include "policyd/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <regex>

#include <fmt/format.h>

#include "policyd/allowlist.hpp"
#include "policyd/net.hpp"

namespace lupine::policyd {
namespace {

using cfg = policyd_config;
using spec = option_spec<cfg>;
using values = std::vector<std::string>;
using std::chrono::hours;
using std::chrono::seconds;

const std::string& one(const values& v) {
  static const std::string empty;
  return v.empty() ? empty : v.back();
}

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "policyd";
  return buf;
}

spec dur(std::string key, std::string def, std::string help, milliseconds cfg::*m, milliseconds min, milliseconds max) {
  return {std::move(key),  std::move(def),
          std::move(help), false,
          false,           [m, min, max](cfg& c, const values& v) { return set_duration(c.*m, one(v), min, max); }};
}

spec num(std::string key, std::string def, std::string help, unsigned cfg::*m, unsigned min, unsigned max) {
  return {std::move(key),  std::move(def),
          std::move(help), false,
          false,           [m, min, max](cfg& c, const values& v) { return set_uint(c.*m, one(v), min, max); }};
}

spec score(std::string key, std::string def, std::string help, int cfg::*m) {
  return {std::move(key), std::move(def), std::move(help), false, false, [m](cfg& c, const values& v) {
            const auto& t = one(v);
            int n = 0;
            auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
            if (ec != std::errc{} || p != t.data() + t.size() || t.empty() || n < -10000 || n > 10000) {
              return std::string{"expected an integer score -10000..10000"};
            }
            c.*m = n;
            return std::string{};
          }};
}

spec flag(std::string key, std::string def, std::string help, bool cfg::*m) {
  return {std::move(key), std::move(def), std::move(help),
          false,          false,          [m](cfg& c, const values& v) { return set_bool(c.*m, one(v)); }};
}

spec files(std::string key, std::string help, std::vector<std::string> cfg::*m) {
  return {std::move(key), "", std::move(help), true, false, [m](cfg& c, const values& v) {
            c.*m = split_list(v);
            return std::string{};
          }};
}

spec text_key(std::string key, std::string def, std::string help, std::string cfg::*m) {
  return {std::move(key), std::move(def), std::move(help), false, false, [m](cfg& c, const values& v) {
            c.*m = one(v);
            for (char ch : c.*m) {
              if (static_cast<unsigned char>(ch) < ' ') return std::string{"control characters not allowed"};
            }
            return (c.*m).empty() ? std::string{"must not be empty"} : std::string{};
          }};
}

// limits.MEASURE = MAX/WINDOW ...: the defaults of one measure ("none" or empty: no limit).
spec limit_key(measure m, std::string def, std::string help) {
  return {"limits." + std::string{to_string(m)},
          std::move(def),
          std::move(help),
          true,
          false,
          [m](cfg& c, const values& v) {
            std::erase_if(c.limits_defaults, [m](const send_limit& l) { return l.what == m; });
            for (const auto& item : split_list(v)) {
              if (item == "none") continue;
              send_limit l;
              if (auto err = parse_limit(item, m, l); !err.empty()) return item + ": " + err;
              if (!l.max) continue;
              std::erase_if(c.limits_defaults,
                            [&l](const send_limit& x) { return x.what == l.what && x.window == l.window; });
              c.limits_defaults.push_back(l);
            }
            return std::string{};
          }};
}

spec rate_key(std::string key, std::string def, std::string help, flood_rate cfg::*member) {
  return {std::move(key), std::move(def), std::move(help), false, false, [member](cfg& c, const values& v) {
            const auto& t = one(v);
            flood_rate r;
            if (t != "off" && t != "0") {
              auto slash = t.find('/');
              auto n = parse_uint(t.substr(0, slash));
              auto w = slash == std::string::npos ? std::nullopt : parse_duration(t.substr(slash + 1));
              if (!n || *n == 0 || *n > 100000000 || !w || *w < seconds{1} || *w > hours{24}) {
                return std::string{"expected COUNT/WINDOW such as 600/1m (window 1s..1d), or off"};
              }
              r.count = *n;
              r.window = std::chrono::duration_cast<sys_time::duration>(*w);
            }
            c.*member = r;
            return std::string{};
          }};
}

std::vector<spec> make_table() {
  std::vector<spec> t;
  t.push_back({"name", "", "Instance name written to logs and the event log (default: the host name).", false, false,
               [](cfg& c, const values& v) {
                 c.name = one(v).empty() ? hostname() : one(v);
                 return std::string{};
               }});
  t.push_back({"listen", "inet:127.0.0.1:10031",
               "Where to listen: inet:HOST:PORT (IPv4, [IPv6] or * for all) or unix:PATH; several allowed.", true,
               false, [](cfg& c, const values& v) {
                 c.listen.clear();
                 auto items = split_list(v);
                 if (items.empty()) return std::string{"at least one endpoint is required"};
                 for (const auto& item : items) {
                   listen_endpoint e;
                   if (auto err = parse_listen(item, e); !err.empty()) return err;
                   c.listen.push_back(e);
                 }
                 return std::string{};
               }});
  t.push_back({"database", "", "libpq connection string (\"host=/run/postgresql dbname=lupine\") or URI; required.",
               false, true, [](cfg& c, const values& v) {
                 c.database = one(v);
                 return std::string{};
               }});
  t.push_back(
      num("db.threads", "4", "Database worker threads, each with its own connection.", &cfg::db_threads, 1, 64));
  t.push_back(num("db.max_inflight", "512",
                  "Database jobs in flight at most; beyond it requests are decided degraded, not queued.",
                  &cfg::db_max_inflight, 1, 100000));
  t.push_back(dur("db.statement_timeout", "2s", "PostgreSQL statement_timeout for policyd's connections.",
                  &cfg::db_statement_timeout, milliseconds{10}, hours{1}));
  t.push_back(flag("db.migrate", "yes", "Apply pending migrations from sql/ at start.", &cfg::db_migrate));
  t.push_back({"db.password_file", "",
               "File whose first line is the database password (mode 0600, or 0640 for the daemon's group; "
               "owned by root or policyd's user). Read once at start, before dropping privileges; a password in "
               "`-o database=...` is refused.",
               false, false, [](cfg& c, const values& v) {
                 c.db_password_file = one(v);
                 return std::string{};
               }});
  t.push_back({"server.user", "",
               "Started as root, policyd binds its sockets, then runs as this user (required then: it refuses to "
               "keep root). Ignored when not started as root (systemd's User= does the same).",
               false, false, [](cfg& c, const values& v) {
                 c.run_user = one(v);
                 return std::string{};
               }});
  t.push_back({"server.group", "", "Group to run as after binding (default: server.user's primary group).", false,
               false, [](cfg& c, const values& v) {
                 c.run_group = one(v);
                 return std::string{};
               }});
  t.push_back(num("server.max_connections", "1000",
                  "Concurrent client connections at most; more are closed at once with a log line.",
                  &cfg::max_connections, 1, 1000000));
  t.push_back(dur("server.idle_timeout", "330s",
                  "Close a connection idle between requests this long (keep above Postfix's "
                  "smtpd_policy_service_max_idle, 300s).",
                  &cfg::idle_timeout, milliseconds{100}, hours{24}));
  t.push_back(dur("server.request_timeout", "10s",
                  "Close a connection that started a request but did not finish it within this time.",
                  &cfg::request_timeout, milliseconds{100}, hours{1}));
  t.push_back(dur("server.shutdown_grace", "10s",
                  "On SIGTERM, how long in-flight requests and the event-log flush may take.", &cfg::shutdown_grace,
                  milliseconds{0}, hours{1}));
  t.push_back({"server.unix_socket_mode", "0660", "Permissions of unix: sockets (octal).", false, false,
               [](cfg& c, const values& v) {
                 unsigned m = 0;
                 const auto& s = one(v);
                 auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), m, 8);
                 if (ec != std::errc{} || p != s.data() + s.size() || s.empty() || m > 0777) {
                   return std::string{"expected an octal mode such as 0660"};
                 }
                 c.unix_socket_mode = m;
                 return std::string{};
               }});
  t.push_back({"protocol.max_line_bytes", "4096", "Longest accepted request line; longer closes the connection.", false,
               false, [](cfg& c, const values& v) {
                 std::uint64_t n = 0;
                 auto e = set_uint(n, one(v), 64, 1 << 20);
                 c.limits.max_line_bytes = n;
                 return e;
               }});
  t.push_back({"protocol.max_attributes", "100", "Most attributes in one request (Postfix 3.7 sends about 30).", false,
               false, [](cfg& c, const values& v) {
                 std::uint64_t n = 0;
                 auto e = set_uint(n, one(v), 8, 100000);
                 c.limits.max_attributes = n;
                 return e;
               }});
  t.push_back(
      {"protocol.max_request_bytes", "32768", "Largest accepted request.", false, false, [](cfg& c, const values& v) {
         std::uint64_t n = 0;
         auto e = set_uint(n, one(v), 256, 16 << 20);
         c.limits.max_request_bytes = n;
         return e;
       }});
  t.push_back(dur("policy.request_budget", "5s",
                  "Time one decision may take in all (far below Postfix's smtpd_policy_service_timeout, 100s); "
                  "a check still waiting then is decided degraded.",
                  &cfg::request_budget, milliseconds{10}, seconds{90}));
  t.push_back(flag("greylist.enable", "yes", "Greylist unknown (client network, sender, recipient) triplets.",
                   &cfg::greylist_enable));
  t.push_back(
      {"greylist.delay", "300s", "How long a new triplet is deferred.", false, false,
       [](cfg& c, const values& v) { return set_duration(c.greylist.delay, one(v), milliseconds{0}, hours{24}); }});
  t.push_back({"greylist.retry_window", "2d",
               "A retry must come within this time after the first attempt, or greylisting starts over.", false, false,
               [](cfg& c, const values& v) {
                 return set_duration(c.greylist.retry_window, one(v), seconds{1}, hours{24 * 30});
               }});
  t.push_back(
      {"greylist.max_age", "35d", "Passed triplets not seen for this long are forgotten.", false, false,
       [](cfg& c, const values& v) { return set_duration(c.greylist.max_age, one(v), seconds{1}, hours{24 * 3650}); }});
  t.push_back({"greylist.early_retry_grace", "5",
               "Early retries of a greylisted triplet (before its delay is over) that cost nothing.", false, false,
               [](cfg& c, const values& v) { return set_uint(c.greylist.early_retry_grace, one(v), 0, 1000000); }});
  t.push_back({"greylist.early_retry_penalty", "60s",
               "Each early retry beyond the grace adds this to the triplet's delay (0 disables the penalty).", false,
               false, [](cfg& c, const values& v) {
                 return set_duration(c.greylist.early_retry_penalty, one(v), milliseconds{0}, hours{24});
               }});
  t.push_back({"greylist.max_delay", "1h",
               "The penalty never makes a triplet's delay longer than this (nor longer than halfway to "
               "greylist.retry_window).",
               false, false, [](cfg& c, const values& v) {
                 return set_duration(c.greylist.max_delay, one(v), milliseconds{0}, hours{24 * 7});
               }});
  t.push_back(num("greylist.ipv4_prefix", "24", "IPv4 clients are grouped by this prefix length.",
                  &cfg::greylist_ipv4_prefix, 8, 32));
  t.push_back(num("greylist.ipv6_prefix", "64", "IPv6 clients are grouped by this prefix length.",
                  &cfg::greylist_ipv6_prefix, 16, 128));
  t.push_back(num("greylist.awl_clients", "5",
                  "A client address that passed greylisting this many times skips it (0 disables).",
                  &cfg::greylist_awl_clients, 0, 1000000));
  t.push_back(dur("greylist.awl_max_age", "35d", "An auto-allow-listed client not seen this long loses it.",
                  &cfg::greylist_awl_max_age, seconds{1}, hours{24 * 3650}));
  t.push_back(dur("greylist.awl_count_interval", "1h",
                  "Passes of one client are counted at most once per this interval (postgrey: hourly).",
                  &cfg::greylist_awl_count_interval, milliseconds{0}, hours{24 * 30}));
  t.push_back({"greylist.action", "DEFER_IF_PERMIT",
               "Reply for a greylisted triplet: DEFER_IF_PERMIT (a later REJECT still wins) or DEFER, or a code "
               "450/451.",
               false, false, [](cfg& c, const values& v) {
                 return set_choice(c.greylist_action, one(v), {"DEFER_IF_PERMIT", "DEFER", "450", "451"});
               }});
  t.push_back({"greylist.text", "Greylisted, retry in %s seconds",
               "Reply text after the 4.7.1 status; %s = seconds to wait, %r = recipient domain.", false, false,
               [](cfg& c, const values& v) {
                 c.greylist_text = one(v);
                 for (char ch : c.greylist_text) {
                   if (static_cast<unsigned char>(ch) < ' ') return std::string{"control characters not allowed"};
                 }
                 return c.greylist_text.empty() ? std::string{"must not be empty"} : std::string{};
               }});
  t.push_back(flag("greylist.prepend_header", "yes",
                   "On the first pass of a delayed message, prepend a header saying how long it was delayed.",
                   &cfg::greylist_prepend));
  t.push_back({"greylist.header", "X-Greylist", "Name of that header.", false, false, [](cfg& c, const values& v) {
                 c.greylist_header = one(v);
                 for (char ch : c.greylist_header) {
                   if (ch <= ' ' || ch == ':' || static_cast<unsigned char>(ch) >= 0x7f) {
                     return std::string{"expected a header field name"};
                   }
                 }
                 return c.greylist_header.empty() ? std::string{"must not be empty"} : std::string{};
               }});
  t.push_back({"greylist.on_db_error", "dunno",
               "When the database cannot answer in time: dunno (fail open, let mail through) or defer (451).", false,
               false, [](cfg& c, const values& v) {
                 return set_choice(c.greylist_on_db_error, one(v), {"dunno", "defer"});
               }});
  t.push_back(dur("greylist.write_behind", "200ms",
                  "Triplet changes are decided in memory and written in batches this often (at most a quarter of "
                  "greylist.delay); 0 writes each one, in a locked transaction, before answering.",
                  &cfg::greylist_write_behind, milliseconds{0}, seconds{10}));
  t.push_back(num("greylist.max_pending", "200000",
                  "Triplets and clients held in memory until written; beyond, decisions take the locked transaction.",
                  &cfg::greylist_max_pending, 1, 10000000));
  t.push_back(num("greylist.cache_entries", "100000",
                  "Passed triplets, and auto-allow-listed clients, remembered so that known senders need no "
                  "database read (each up to this many; 0: none).",
                  &cfg::greylist_cache_entries, 0, 10000000));
  t.push_back(files("allowlist.client_files",
                    "postgrey whitelist_clients-style files: address, CIDR, partial IPv4, hostname suffix, /regex/.",
                    &cfg::allowlist_client_files));
  t.push_back(files("allowlist.recipient_files",
                    "postgrey whitelist_recipients-style files: address, user@, domain, /regex/.",
                    &cfg::allowlist_recipient_files));
  t.push_back(files("allowlist.sender_files", "Sender allow-list files, same syntax as recipient files.",
                    &cfg::allowlist_sender_files));
  t.push_back(
      flag("allowlist.database", "yes", "Also load the allowlist table from the database.", &cfg::allowlist_database));
  t.push_back(flag("event_log.enable", "yes", "Record every request's envelope in the event_log table.",
                   &cfg::event_log_enable));
  t.push_back(dur("event_log.flush_interval", "1s", "Write buffered event-log rows at least this often.",
                  &cfg::event_log_flush_interval, milliseconds{10}, std::chrono::minutes{10}));
  t.push_back(num("event_log.flush_rows", "1000", "Write as soon as this many rows are buffered.",
                  &cfg::event_log_flush_rows, 1, 1000000));
  t.push_back(num("event_log.max_buffer_rows", "200000",
                  "Rows kept in memory while the database is away; beyond it the oldest half go to the spill "
                  "directory (or, without one, are dropped and counted).",
                  &cfg::event_log_max_buffer_rows, 100, 100000000));
  t.push_back({"event_log.spill_dir", "/var/lib/lupine/spill",
               "Local directory (created 0700, owned by server.user) for event-log rows the database cannot take "
               "yet; replayed in order, exactly once, when it returns. Empty: no spilling.",
               false, false, [](cfg& c, const values& v) {
                 c.event_log_spill_dir = one(v);
                 return std::string{};
               }});
  t.push_back(num("event_log.spill_max_mb", "1024",
                  "Disk space the spill directory may use at most, in MiB; beyond it rows are dropped and counted.",
                  &cfg::event_log_spill_max_mb, 1, 1000000));
  t.push_back(dur("event_log.spill_after", "10s",
                  "While the database is away, rows in memory go to disk this often (bounds what a crash or kill -9 "
                  "can lose).",
                  &cfg::event_log_spill_after, milliseconds{100}, hours{1}));
  t.push_back(dur("event_log.retention", "180d", "Day partitions older than this are dropped.",
                  &cfg::event_log_retention, hours{24}, hours{24 * 3650}));
  t.push_back({"dns.servers", "",
               "DNS resolvers to ask, ADDRESS[:PORT] or [IPv6]:PORT; several allowed. Empty: /etc/resolv.conf. "
               "DNSBLs such as Spamhaus refuse queries from public resolvers: use a local one.",
               true, false, [](cfg& c, const values& v) {
                 c.dns_servers = split_list(v);
                 for (const auto& srv : c.dns_servers) {
                   std::string host = srv;
                   std::string port;
                   if (!host.empty() && host.front() == '[') {
                     auto close = host.find(']');
                     if (close == std::string::npos) return std::string{"bad server " + srv};
                     if (close + 1 < host.size()) {
                       if (host[close + 1] != ':') return std::string{"bad server " + srv};
                       port = host.substr(close + 2);
                     }
                     host = host.substr(1, close - 1);
                   } else if (std::count(host.begin(), host.end(), ':') == 1) {
                     port = host.substr(host.find(':') + 1);
                     host = host.substr(0, host.find(':'));
                   }
                   if (!parse_ip(host)) return std::string{"expected ADDRESS[:PORT], got " + srv};
                   if (!port.empty()) {
                     auto n = parse_uint(port);
                     if (!n || *n == 0 || *n > 65535) return std::string{"bad port in " + srv};
                   }
                 }
                 return std::string{};
               }});
  t.push_back(dur("dns.timeout", "1s", "Time to wait for one DNS answer before c-ares tries again.", &cfg::dns_timeout,
                  milliseconds{10}, seconds{30}));
  t.push_back(num("dns.tries", "2", "DNS attempts per lookup.", &cfg::dns_tries, 1, 10));
  t.push_back(num("dns.cache_size", "100000", "DNS answers kept in the cache at most (0 disables it).",
                  &cfg::dns_cache_size, 0, 100000000));
  t.push_back(
      dur("dns.ttl_min", "60s", "Cache every answer at least this long.", &cfg::dns_ttl_min, seconds{0}, hours{24}));
  t.push_back(
      dur("dns.ttl_max", "1d", "Cache no answer longer than this.", &cfg::dns_ttl_max, seconds{1}, hours{24 * 7}));
  t.push_back(dur("dns.negative_ttl_max", "1h", "Cache NXDOMAIN / no-data answers no longer than this.",
                  &cfg::dns_negative_ttl_max, seconds{0}, hours{24 * 7}));
  t.push_back(dur("dns.budget", "2s",
                  "All DNS work of one request must end within this; a list still unanswered counts as not listed.",
                  &cfg::dns_budget, milliseconds{10}, seconds{60}));
  t.push_back(num("dns.breaker_failures", "5",
                  "After this many failures in a row (timeout, SERVFAIL) a list is skipped for a while.",
                  &cfg::dns_breaker_failures, 1, 1000000));
  t.push_back(dur("dns.breaker_cooldown", "60s", "How long a failing list is skipped before it is tried again.",
                  &cfg::dns_breaker_cooldown, seconds{1}, hours{24}));
  t.push_back(dur("dns.error_log_interval", "10m",
                  "A list answering with refusal codes (127.255.255.x) is logged at most once per this interval.",
                  &cfg::dns_error_log_interval, seconds{1}, hours{24}));
  t.push_back({"dnsbl.lists", "",
               "DNSBL/DNSWL lists, postscreen syntax zone[=filter]*weight, e.g. zen.spamhaus.org=127.0.0.[2..11]*3, "
               "list.dnswl.org=127.0.[0..255].[1..3]*-5; several allowed.",
               true, false, [](cfg& c, const values& v) {
                 c.dnsbl_lists.clear();
                 std::string problems;
                 for (const auto& item : split_list(v)) {
                   std::string err;
                   auto l = parse_dnsbl_entry(item, err);
                   if (!l) {
                     problems += (problems.empty() ? "" : "; ") + item + ": " + err;
                     continue;
                   }
                   c.dnsbl_lists.push_back(*l);
                 }
                 return problems;
               }});
  t.push_back(score("dnsbl.reject_score", "3", "Reject a client whose summed score is at least this.",
                    &cfg::dnsbl_reject_score));
  t.push_back(score("dnsbl.trust_score", "-1",
                    "A client whose score is at most this is trusted: greylisting is skipped.",
                    &cfg::dnsbl_trust_score));
  t.push_back(flag("dnsbl.selective_greylist", "no", "Greylist only clients whose score reaches dnsbl.greylist_score.",
                   &cfg::dnsbl_selective_greylist));
  t.push_back(score("dnsbl.greylist_score", "1",
                    "With selective greylisting, the score from which a client is greylisted.",
                    &cfg::dnsbl_greylist_score));
  t.push_back({"dnsbl.reply_names", "",
               "Names shown in reject texts instead of the zone queried, zone=shown (postscreen_dnsbl_reply_map), "
               "e.g. a subscription zone shown as zen.spamhaus.org; several allowed.",
               true, false, [](cfg& c, const values& v) {
                 c.dnsbl_reply_names.clear();
                 for (const auto& item : split_list(v)) {
                   auto eq = item.find('=');
                   if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
                     return std::string{"expected zone=shown, got " + item};
                   }
                   c.dnsbl_reply_names.emplace_back(item.substr(0, eq), item.substr(eq + 1));
                 }
                 return std::string{};
               }});
  t.push_back(flag("dnsbl.hide_names", "no", "Say \"a DNS blocklist\" in reject texts, with no list name or TXT.",
                   &cfg::dnsbl_hide_names));
  t.push_back(dur("dnsbl.self_test_interval", "1h",
                  "How often every list is self-tested (RFC 5782: 127.0.0.2 listed, 127.0.0.1 not); a list "
                  "answering for 127.0.0.1 is disarmed until it passes again.",
                  &cfg::dnsbl_self_test_interval, seconds{1}, hours{24 * 7}));
  t.push_back(flag("rdns.enable", "yes", "Score the client's reverse DNS (forward-confirmed PTR).", &cfg::rdns_enable));
  t.push_back(score("rdns.no_ptr_score", "2", "Score added when the client address has no PTR record.",
                    &cfg::rdns_no_ptr_score));
  t.push_back(score("rdns.unconfirmed_score", "1",
                    "Score added when the PTR name does not resolve back to the client address.",
                    &cfg::rdns_unconfirmed_score));
  t.push_back(score("rdns.dynamic_score", "1",
                    "Score added when the PTR name looks dynamic or generic (rdns.dynamic_patterns, or the address "
                    "spelled in the name).",
                    &cfg::rdns_dynamic_score));
  t.push_back(
      {"rdns.dynamic_patterns", "default",
       "Regular expressions (ECMAScript, case-insensitive) for dynamic/generic host names; \"default\" is "
       "the built-in set (docs/dns.md); several allowed.",
       true, false, [](cfg& c, const values& v) {
         c.rdns_dynamic_patterns.clear();
         for (const auto& item : v) {
           if (item == "default") {
             for (const auto& d : default_dynamic_patterns()) c.rdns_dynamic_patterns.push_back(d);
             continue;
           }
           if (item.empty()) continue;
           // libstdc++ compiles a regex recursively, one frame per nesting level: a long one
           // could overflow the stack.
           if (item.size() > max_regex_bytes) {
             return fmt::format("regular expression longer than {} bytes", max_regex_bytes);
           }
           try {
             std::regex re{item, std::regex::ECMAScript | std::regex::icase | std::regex_constants::__polynomial};
           } catch (const std::regex_error& e) {
             return std::string{"bad regular expression "} + item + ": " + e.what();
           }
           c.rdns_dynamic_patterns.push_back(item);
         }
         return std::string{};
       }});
  t.push_back(text_key("accounts.restricted_text",
                       "Account restricted to webmail: sending from mail programs is disabled, webmail still works",
                       "Reply text (after 550 5.7.1) for a restricted account sending from outside the webmail "
                       "networks.",
                       &cfg::accounts_restricted_text));
  t.push_back(text_key("accounts.terminated_text", "Account closed",
                       "Reply text (after 550 5.7.1) for a terminated account.", &cfg::accounts_terminated_text));
  t.push_back(dur("accounts.refresh_interval", "5m",
                  "Full reload of account states, webmail networks and limit overrides, besides the changes "
                  "LISTEN/NOTIFY brings within a second.",
                  &cfg::accounts_refresh_interval, seconds{10}, hours{24}));
  t.push_back(
      flag("limits.enable", "yes", "Count and limit authenticated submission per account.", &cfg::limits_enable));
  t.push_back(limit_key(measure::messages, "200/1h 1000/24h",
                        "Default limits on messages per account: MAX/WINDOW (window 1m..7d, whole minutes); several "
                        "allowed; none for no limit."));
  t.push_back(limit_key(measure::recipients, "300/1h 2000/24h",
                        "Default limits on recipients per account (the sum of each message's recipients)."));
  t.push_back(limit_key(measure::bytes, "1G/24h", "Default limits on bytes sent per account (K, M, G suffixes)."));
  t.push_back(limit_key(measure::distinct_recipients, "200/1h 1000/24h",
                        "Default limits on distinct recipient addresses per account."));
  t.push_back(limit_key(measure::distinct_domains, "100/1h 300/24h",
                        "Default limits on distinct recipient domains per account."));
  t.push_back({"limits.action", "defer",
               "Over a limit: defer (452 4.7.1, the client retries later), hold (accept into Postfix's hold queue) "
               "or reject (550 5.7.1).",
               false, false, [](cfg& c, const values& v) {
                 return set_choice(c.limits_action, one(v), {"defer", "hold", "reject"});
               }});
  t.push_back({"limits.auto_restrict", "",
               "Restrict an account automatically (audited) when its recipient breadth passes a threshold: "
               "distinct_recipients=MAX/WINDOW or distinct_domains=MAX/WINDOW; several allowed; empty: never.",
               true, false, [](cfg& c, const values& v) {
                 c.limits_auto_restrict.clear();
                 for (const auto& item : split_list(v)) {
                   auto eq = item.find('=');
                   auto m = eq == std::string::npos ? std::nullopt : parse_measure(item.substr(0, eq));
                   if (!m || (*m != measure::distinct_recipients && *m != measure::distinct_domains)) {
                     return "expected distinct_recipients=MAX/WINDOW or distinct_domains=MAX/WINDOW, got " + item;
                   }
                   send_limit l;
                   if (auto err = parse_limit(item.substr(eq + 1), *m, l); !err.empty()) return item + ": " + err;
                   if (!l.max) return item + ": a threshold needs a number";
                   c.limits_auto_restrict.push_back(l);
                 }
                 return std::string{};
               }});
  t.push_back({"limits.on_db_error", "dunno",
               "When the database cannot answer in time: dunno (fail open, the message is not counted) or defer "
               "(451).",
               false, false, [](cfg& c, const values& v) {
                 return set_choice(c.limits_on_db_error, one(v), {"dunno", "defer"});
               }});
  t.push_back(flag("flood.enable", "yes", "Limit request rates and concurrent sessions of unauthenticated clients.",
                   &cfg::flood_enable));
  t.push_back(rate_key("flood.client_rate", "600/1m",
                       "Policy requests (about one per recipient) one client address may make: COUNT/WINDOW, "
                       "COUNT at once at most; off disables.",
                       &cfg::flood_client_rate));
  t.push_back(rate_key("flood.subnet_rate", "3000/1m",
                       "The same for a client network (greylist.ipv4_prefix / ipv6_prefix).", &cfg::flood_subnet_rate));
  t.push_back(num("flood.client_sessions", "20",
                  "Concurrent SMTP sessions one client address may hold (0: no cap); more get 421.",
                  &cfg::flood_client_sessions, 0, 1000000));
  t.push_back(num("flood.subnet_sessions", "100", "Concurrent SMTP sessions one client network may hold (0: no cap).",
                  &cfg::flood_subnet_sessions, 0, 1000000));
  t.push_back(dur("flood.session_idle", "60s",
                  "A policy connection without a request for this long no longer counts as an open session.",
                  &cfg::flood_session_idle, seconds{1}, hours{1}));
  t.push_back({"flood.exempt", "127.0.0.0/8 ::1",
               "Client networks flood control never limits (your own relays, monitoring); several allowed.", true,
               false, [](cfg& c, const values& v) {
                 c.flood_exempt.clear();
                 for (const auto& item : split_list(v)) {
                   auto n = parse_cidr(item);
                   if (!n) return "expected an address or CIDR, got " + item;
                   c.flood_exempt.push_back(*n);
                 }
                 return std::string{};
               }});
  t.push_back(num("flood.max_tracked", "200000", "Client addresses and networks tracked at most (memory bound).",
                  &cfg::flood_max_tracked, 1000, 100000000));
  t.push_back(dur("maintenance.interval", "10m",
                  "How often expired greylist rows are deleted and event-log partitions created and pruned.",
                  &cfg::maintenance_interval, seconds{1}, hours{24}));
  t.push_back(num("maintenance.batch_rows", "10000", "Rows deleted per statement by the expiry task.",
                  &cfg::maintenance_batch_rows, 100, 10000000));
  t.push_back(dur("testing.clock_offset", "0s",
                  "Moves the clock policyd decides by this far ahead, so tests can roll a window or expire a "
                  "triplet without waiting. Never set it in production.",
                  &cfg::clock_offset, milliseconds{0}, hours{24 * 3650}));
  return t;
}

}  // namespace

std::string parse_listen(std::string_view text, listen_endpoint& out) {
  out = {};
  out.text = std::string{text};
  if (text.substr(0, 5) == "unix:") {
    out.type = listen_endpoint::kind::unix_socket;
    out.path = std::string{text.substr(5)};
    if (out.path.empty() || out.path.front() != '/') return "unix: needs an absolute path";
    if (out.path.size() > 100) return "unix socket path too long";
    return {};
  }
  if (text.substr(0, 5) != "inet:") return "expected inet:HOST:PORT or unix:PATH";
  auto rest = text.substr(5);
  auto colon = rest.rfind(':');
  if (colon == std::string_view::npos) return "expected inet:HOST:PORT";
  auto host = rest.substr(0, colon);
  auto port = rest.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned p = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc{} || end != port.data() + port.size() || p == 0 || p > 65535) return "bad port";
  out.port = static_cast<unsigned short>(p);
  if (host == "*" || host.empty()) {
    out.host = "::";
  } else if (host == "localhost") {
    out.host = "127.0.0.1";
  } else if (parse_ip(host)) {
    out.host = std::string{host};
  } else {
    return "HOST must be an IP address, localhost or *";
  }
  return {};
}

const std::vector<option_spec<policyd_config>>& policyd_options() {
  static const auto table = make_table();
  return table;
}

std::string validate(const policyd_config& c) {
  std::string problems;
  if (c.database.empty()) problems += "database: not set (a libpq connection string is required)\n";
  if (c.greylist.retry_window <= c.greylist.delay) {
    problems += "greylist.retry_window must be longer than greylist.delay\n";
  }
  for (const auto& t : c.limits_auto_restrict) {
    for (const auto& l : c.limits_defaults) {
      // Within a window no longer than the limit's, the count never passes the limit.
      if (l.what == t.what && t.window <= l.window && l.max && t.max && *t.max > *l.max) {
        problems += fmt::format(
            "limits.auto_restrict: {}={}/{} can never be reached: limits.{} stops the account at {} per {} first\n",
            to_string(t.what), *t.max, format_window(t.window), to_string(l.what), *l.max, format_window(l.window));
      }
    }
  }
  if (c.greylist.max_age < c.greylist.retry_window) {
    problems += "greylist.max_age must not be shorter than greylist.retry_window\n";
  }
  if (c.dns_ttl_min > c.dns_ttl_max) problems += "dns.ttl_min must not be longer than dns.ttl_max\n";
  if (c.dnsbl_trust_score >= c.dnsbl_reject_score) {
    problems += "dnsbl.trust_score must be below dnsbl.reject_score\n";
  }
  if (c.request_budget >= c.request_timeout + c.idle_timeout) {
    problems += "policy.request_budget is longer than the connection timeouts\n";
  }
  if (!problems.empty()) problems.pop_back();
  return problems;
}

}  // namespace lupine::policyd
