// Outbound sending limits, the pure parts: limit specs ("200/1h"), merging the configured
// defaults with per-domain and per-account overrides, the reply text, and the tracker of
// the recipients of transactions in progress. Counting itself happens in PostgreSQL
// (lupine_send_check in sql/003_accounts_limits.sql), so every instance sees every count.
//
// Measures: messages, recipients and bytes are counted at END-OF-MESSAGE for accepted
// messages, in one-minute buckets (a window of N minutes sums the N newest buckets);
// distinct recipients and distinct recipient domains are checked at RCPT and recorded at
// END-OF-MESSAGE with the time last seen (a window counts those seen within it).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/config.hpp"
#include "policyd/greylist.hpp"

namespace lupine::policyd {

enum class measure { messages, recipients, bytes, distinct_recipients, distinct_domains };

std::string_view to_string(measure m);  // "distinct_recipients"
std::optional<measure> parse_measure(std::string_view s);
// "recipients", "distinct recipients", "MB" ... as a reply says it: "500 recipients per 24h".
std::string describe_limit(measure m, std::int64_t max, std::chrono::seconds window);

struct send_limit {
  measure what = measure::messages;
  std::chrono::seconds window{3600};  // whole minutes, 1 min .. 7 days
  std::optional<std::int64_t> max;    // nullopt: no limit (an override removing a default)
  bool operator==(const send_limit&) const = default;
};

// "200/1h", "1G/24h" (K, M, G: 1024-based; bytes only), "none/1h". Returns an error text or "".
std::string parse_limit(std::string_view text, measure m, send_limit& out);
// "1h", "24h", "10min": how windows are shown (core/config.hpp).
using lupine::format_window;

// Overrides by subject: account login, or domain. A later entry for the same (measure,
// window) replaces an earlier one.
struct limit_overrides {
  std::unordered_map<std::string, std::vector<send_limit>> accounts;
  std::unordered_map<std::string, std::vector<send_limit>> domains;
};

// The limits that apply to login: the defaults, then its domain's overrides, then its own
// (each replaces the same measure and window; max = nullopt removes it). Sorted by window,
// then measure; only limits with a max.
std::vector<send_limit> effective_limits(const std::vector<send_limit>& defaults, const limit_overrides& o,
                                         std::string_view login);

// The domain of an address or login ("" when there is no '@'), lower-cased.
std::string domain_of(std::string_view address);

// "retry after 14:32 UTC" (or "retry after 2026-11-28 14:32 UTC" when not today), rounded
// up to the minute; "retry later" when nothing frees (nullopt).
std::string retry_after_text(std::optional<sys_time> frees_at, sys_time now);

// Recipients accepted so far in each Postfix transaction (the `instance` attribute), for
// the breadth check at RCPT and the record at END-OF-MESSAGE. Bounded: the oldest
// transactions are forgotten beyond max_entries, and any idle longer than max_idle.
class transaction_tracker {
 public:
  explicit transaction_tracker(std::size_t max_entries = 20000,
                               std::chrono::seconds max_idle = std::chrono::seconds{3600})
      : max_entries_{max_entries}, max_idle_{max_idle} {}

  struct entry {
    std::string login;
    std::vector<std::string> recipients;  // normalized, distinct
    std::vector<std::string> domains;     // distinct
    sys_time last_seen{};
  };

  // The transaction's recipients so far (nullptr if unknown or of another login).
  const entry* find(const std::string& instance, std::string_view login, sys_time now);
  // Records an accepted recipient.
  void add(const std::string& instance, std::string_view login, const std::string& recipient, sys_time now);
  // The transaction ended (END-OF-MESSAGE answered): forget it.
  void erase(const std::string& instance);
  std::size_t size() const { return map_.size(); }

 private:
  void expire(sys_time now);
  std::size_t max_entries_;
  std::chrono::seconds max_idle_;
  std::unordered_map<std::string, entry> map_;
  std::deque<std::pair<sys_time, std::string>> order_;  // insertion order, for eviction
};

}  // namespace lupine::policyd
