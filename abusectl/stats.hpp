// Outbound traffic of one account, read from the event log, for the abuse desk: what the
// account sent in a period (totals, per UTC hour and day, client addresses), compared with
// its own past (the baseline) and with every other account that sent in the same period
// (the population), and the findings in words. Used by `abusectl stats`; reusable by any
// command that reports on an account.
//
// Definitions (docs/abusectl.md "stats" says the same for operators):
//   account   the lower-cased SASL login; rows match on lower(sasl_username)
//   message   an END-OF-MESSAGE row whose verdict lets it through (dunno, prepend, pass,
//             accept); recipients = sum(recipient_count), bytes = sum(size)
//   breadth   distinct lower(recipient) of RCPT rows that passed, and their distinct domains
//             (after the last '@')
//   refused   RCPT and END-OF-MESSAGE rows with verdict defer, reject or hold
//             (defer_if_permit counts as neither: it is greylisting's, not a refusal)
// Only compute_stats() touches the database: read-only, one REPEATABLE READ snapshot,
// blocking (abusectl's own connection; never on policyd's loop). The rest is pure.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "core/db.hpp"

namespace lupine::abusectl {

using time_point = std::chrono::system_clock::time_point;

struct stats_request {
  std::string account;       // SASL login, any case (compared lower-cased)
  time_point since;          // the period is [since, until); both whole seconds
  time_point until;          // must be after since
  int baseline_periods = 4;  // the baseline: this many periods right before since (0: none)
};

// What an account sent: one hour, one day, one baseline period, or the whole period.
struct traffic {
  long long messages = 0;
  long long recipients = 0;  // sum of recipient_count
  long long bytes = 0;
  long long distinct_recipients = 0;
  long long distinct_domains = 0;
  long long peak_messages_per_hour = 0;  // most messages in one UTC hour (0 for an hour bucket's own)
  long long refused = 0;                 // refused RCPT and END-OF-MESSAGE requests
};

struct bucket {
  time_point start;  // the UTC hour or day
  traffic sent;
};

struct client_use {
  std::string address;  // client_address as PostgreSQL prints it ("unknown" when NULL)
  long long messages = 0;
  time_point first_seen;
  time_point last_seen;
};

// The figures judged against the baseline and the population. The first three are per day
// (the period's totals divided by its length in days); the others are for the whole period.
enum class figure {
  messages_per_day,
  recipients_per_day,
  bytes_per_day,
  distinct_recipients,
  distinct_domains,
  peak_messages_per_hour
};
inline constexpr std::array<figure, 6> all_figures{figure::messages_per_day, figure::recipients_per_day,
                                                   figure::bytes_per_day,    figure::distinct_recipients,
                                                   figure::distinct_domains, figure::peak_messages_per_hour};
// The JSON key: "messages_per_day", ...
std::string_view to_string(figure f);

struct figure_stats {
  figure which = figure::messages_per_day;
  double value = 0;
  std::optional<double> baseline;    // mean over the covered baseline periods; nullopt: none covered
  std::optional<double> ratio;       // value / baseline; nullopt without a baseline or when it is 0
  std::optional<double> percentile;  // % of the other sending accounts with a smaller value; nullopt: none
  double population_median = 0;      // over all sending accounts, this one included (0 when there are none)
  double population_p95 = 0;
  bool unusual = false;  // set by judge()
};

// When a figure is unusual (judge()): at or above min_percentile of the other accounts, and
// either at least min_ratio times its own baseline, or without a baseline (none covered, or
// zero). Both conditions, so that neither a busy but steady account nor a quiet account
// that merely woke up is reported.
struct thresholds {
  double min_ratio = 5.0;
  double min_percentile = 95.0;
};

struct account_stats {
  stats_request request;  // account lower-cased (PostgreSQL lower())
  double days = 0;        // the period's length in days
  traffic totals;
  long long clients_total = 0;              // distinct client addresses messages came from
  std::vector<bucket> per_hour;             // UTC hours with a message or a refusal, oldest first
  std::vector<bucket> per_day;              // the same by UTC day
  std::vector<client_use> clients;          // most messages first
  time_point baseline_since;                // since - baseline_periods * (until - since)
  int baseline_covered = 0;                 // baseline periods that start on or after the event log's first day
  std::optional<time_point> log_first_day;  // UTC day of the oldest event_log row; nullopt: empty
  long long population = 0;                 // accounts with a message in the period, this one included
  std::vector<figure_stats> figures;        // in all_figures order
  std::vector<std::string> findings;        // set by judge()
};

// Reads the account's statistics. nullopt when the account is unknown: no event_log row
// ever carried that login (any state, any verdict) and it has no `account` row. Progress
// notes ("scanning 35 day partitions ...") go to progress when given. Throws
// std::invalid_argument when until is not after since, and pqxx errors (std::exception;
// text on several lines) when the database fails. Blocks. The account's rows (baseline and
// period in one statement) are read through event_log_sasl_idx; the population costs two
// scans of the period's authenticated RCPT and END-OF-MESSAGE rows.
std::optional<account_stats> compute_stats(db_session& s, const stats_request& r,
                                           const std::function<void(std::string_view)>& progress = {});

// Sets figures[].unusual and the findings from the figures, totals and baseline: one line
// per unusual figure ("messages per day: 840, 42× its own baseline (20/day), above 99.2% of
// the other 311 accounts — unusual"), one for refused requests when there were any, and
// "nothing unusual" when there is neither. compute_stats() calls it with the defaults.
void judge(account_stats& st, const thresholds& t = {});

// The statistics as one JSON object (keys in docs/abusectl.md), then a newline.
std::string stats_json(const account_stats& st);

// The text report: the period, the totals, a table of the figures (value, baseline, ratio,
// percentile), the findings and the busiest client addresses (at most max_clients).
void print_stats(std::ostream& out, const account_stats& st, std::size_t max_clients = 10);

struct chart_style {
  std::size_t width = 80;  // terminal columns
  bool unicode = true;     // block characters (eighths); '#' otherwise
};
// Two bar charts, one line per hour in per_hour: messages, then distinct recipients; each
// line is the hour, the bar (scaled to the largest hour) and the number. Nothing when
// per_hour is empty.
void print_chart(std::ostream& out, const account_stats& st, const chart_style& style);

}  // namespace lupine::abusectl
