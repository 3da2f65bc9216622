// Matching spam copies against the event log; see verify.hpp.
#include "abusectl/verify.hpp"

#include <algorithm>
#include <cstdlib>
#include <optional>

#include <fmt/format.h>

#include "core/db_session.hpp"
#include "core/text.hpp"

namespace lupine::abusectl {

namespace {

std::string text(const pqxx::field& f) {
  return f.is_null() ? std::string{} : f.as<std::string>();
}

// The bare addresses of an address-list header value ("A <a@x>, b@y" -> a@x b@y), lower-cased.
std::vector<std::string> addresses(const std::string& header) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < header.size()) {
    auto at = header.find('@', i);
    if (at == std::string::npos) break;
    auto start = at;
    while (start > 0 && header[start - 1] != '<' && header[start - 1] != ' ' && header[start - 1] != ',' &&
           header[start - 1] != '"' && header[start - 1] != '\t')
      --start;
    auto end = at;
    while (end < header.size() && header[end] != '>' && header[end] != ' ' && header[end] != ',' &&
           header[end] != '"' && header[end] != '\t' && header[end] != ';')
      ++end;
    out.push_back(ascii_lower(std::string_view{header}.substr(start, end - start)));
    i = end;
  }
  return out;
}

}  // namespace

std::vector<copy_verdict> verify_case(pqxx::transaction_base& tx, long long case_id) {
  std::vector<copy_verdict> out;
  auto c = tx.exec_params("SELECT coalesce(account, '') FROM abuse_case WHERE id = $1", case_id);
  std::string account = c.empty() ? std::string{} : c[0][0].as<std::string>();
  auto msgs = tx.exec_params(
      "SELECT id, file_name, part, queue_id, sasl_user, client_ip, received_at, envelope_from, to_header,"
      " (extract(epoch FROM received_at))::bigint, notes"
      " FROM case_message WHERE case_id = $1 ORDER BY id",
      case_id);
  for (const auto& m : msgs) {
    copy_verdict v;
    v.message_id = m[0].as<long long>();
    v.file = m[1].as<std::string>();
    v.part = m[2].as<int>();
    auto qid = text(m[3]);
    auto sasl = ascii_lower(text(m[4]));
    auto client = text(m[5]);
    auto envelope_from = ascii_lower(text(m[7]));
    auto to = addresses(text(m[8]));
    if (qid.empty()) {
      bool no_hop = m[6].is_null() && text(m[5]).empty() && sasl.empty();
      v.summary = no_hop ? "no trustworthy Received header by our hosts: the copy did not pass through our servers, "
                           "or that header is forged"
                         : "our Received header carries no queue id: nothing to look up";
      v.checks.push_back({"queue id", "unknown", "not in the copy"});
      out.push_back(std::move(v));
      continue;
    }
    // The END-OF-MESSAGE row of that queue id nearest the hop's time (within a day).
    auto rows = tx.exec_params(
        "SELECT policyd, postfix_instance, lower(sasl_username), host(client_address), lower(sender),"
        " (extract(epoch FROM ts))::bigint, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        " verdict"
        " FROM event_log WHERE queue_id = $1 AND protocol_state = 'END-OF-MESSAGE'"
        "   AND ($2::timestamptz IS NULL OR ts BETWEEN $2::timestamptz - interval '1 day'"
        "                                        AND $2::timestamptz + interval '1 day')"
        " ORDER BY abs(extract(epoch FROM ts) - coalesce($3::bigint, extract(epoch FROM ts))) LIMIT 1",
        qid, m[6].is_null() ? std::optional<std::string>{} : std::optional<std::string>{text(m[6])},
        m[9].is_null() ? std::optional<long long>{} : std::optional<long long>{m[9].as<long long>()});
    if (rows.empty()) {
      v.checks.push_back({"queue id", "mismatch", fmt::format("{}: no END-OF-MESSAGE in the event log", qid)});
      v.summary = fmt::format("no message with queue id {} in our logs (forged or altered headers?)", qid);
      out.push_back(std::move(v));
      continue;
    }
    const auto& r = rows[0];
    v.policyd = r[0].as<std::string>();
    v.instance = r[1].as<std::string>();
    auto log_sasl = text(r[2]);
    auto log_client = text(r[3]);
    auto log_sender = text(r[4]);
    v.checks.push_back({"queue id", "ok", fmt::format("{} at {} on {}", qid, text(r[6]), v.policyd)});
    int bad = 0;
    auto check = [&](const char* what, const std::string& copy, const std::string& log) {
      if (copy.empty()) {
        v.checks.push_back({what, "unknown", fmt::format("not in the copy; log says {}", log.empty() ? "-" : log)});
      } else if (copy == log) {
        v.checks.push_back({what, "ok", copy});
      } else {
        ++bad;
        v.checks.push_back({what, "mismatch", fmt::format("copy says {}, log says {}", copy, log.empty() ? "-" : log)});
      }
    };
    check("sender account", sasl, log_sasl);
    if (!account.empty()) {
      if (log_sasl == account) {
        v.checks.push_back({"case account", "ok", account});
      } else {
        ++bad;
        v.checks.push_back(
            {"case account", "mismatch",
             fmt::format("the case is about {}, the log says {}", account, log_sasl.empty() ? "-" : log_sasl)});
      }
    }
    check("client address", client, log_client);
    check("envelope sender", envelope_from, log_sender);
    if (!m[9].is_null()) {
      auto diff = std::llabs(m[9].as<long long>() - r[5].as<long long>());
      if (diff <= 600) {
        v.checks.push_back({"time", "ok", fmt::format("{} s apart", diff)});
      } else {
        ++bad;
        v.checks.push_back({"time", "mismatch", fmt::format("{} s apart", diff)});
      }
    }
    // Recipients of the transaction (RCPT rows let through) against the copy's To.
    auto rc = tx.exec_params(
        "SELECT DISTINCT lower(recipient) FROM event_log WHERE policyd = $1 AND postfix_instance = $2"
        " AND protocol_state = 'RCPT' AND verdict IN ('dunno', 'prepend', 'pass', 'accept')"
        " AND ts BETWEEN to_timestamp($3::bigint) - interval '1 hour' AND to_timestamp($3::bigint) + interval '1 "
        "minute'",
        v.policyd, v.instance, r[5].as<long long>());
    std::vector<std::string> logged;
    for (const auto& x : rc) logged.push_back(x[0].as<std::string>());
    if (!to.empty()) {
      std::string missing;
      for (const auto& a : to) {
        if (std::find(logged.begin(), logged.end(), a) == logged.end()) missing += (missing.empty() ? "" : " ") + a;
      }
      // A To header may name people who were not envelope recipients (and Bcc spam names
      // none of them): only "none of them" contradicts the log.
      if (logged.empty()) {
        v.checks.push_back({"recipients", "unknown", "no RCPT rows for the transaction"});
      } else if (missing.empty()) {
        v.checks.push_back({"recipients", "ok", fmt::format("{} of {} logged", to.size(), to.size())});
      } else {
        bool any = std::any_of(to.begin(), to.end(), [&logged](const std::string& a) {
          return std::find(logged.begin(), logged.end(), a) != logged.end();
        });
        if (!any) ++bad;
        v.checks.push_back({"recipients", any ? "ok" : "mismatch", fmt::format("not logged: {}", missing)});
      }
    }
    v.matched = bad == 0;
    v.summary = v.matched ? fmt::format("sent by {} from {} at {} (queue id {})", log_sasl.empty() ? "-" : log_sasl,
                                        log_client.empty() ? "-" : log_client, text(r[6]), qid)
                          : fmt::format("queue id {} is in the log, but {} claim{} of the copy contradict{} it", qid,
                                        bad, bad == 1 ? "" : "s", bad == 1 ? "s" : "");
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace lupine::abusectl
