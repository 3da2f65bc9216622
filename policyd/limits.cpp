// Outbound sending limits, the pure parts; see limits.hpp.
#include "policyd/limits.hpp"

#include <algorithm>
#include <ctime>
#include <tuple>

#include <fmt/format.h>

#include "core/config.hpp"
#include "core/text.hpp"

namespace lupine::policyd {

namespace {
constexpr std::chrono::seconds min_window{60};
constexpr std::chrono::seconds max_window{7 * 24 * 3600};
}  // namespace

std::string_view to_string(measure m) {
  switch (m) {
    case measure::messages: return "messages";
    case measure::recipients: return "recipients";
    case measure::bytes: return "bytes";
    case measure::distinct_recipients: return "distinct_recipients";
    case measure::distinct_domains: return "distinct_domains";
  }
  return "messages";
}

std::optional<measure> parse_measure(std::string_view s) {
  for (auto m : {measure::messages, measure::recipients, measure::bytes, measure::distinct_recipients,
                 measure::distinct_domains}) {
    if (to_string(m) == s) return m;
  }
  return std::nullopt;
}

std::string describe_limit(measure m, std::int64_t max, std::chrono::seconds window) {
  std::string what;
  switch (m) {
    case measure::messages: what = fmt::format("{} message{}", max, max == 1 ? "" : "s"); break;
    case measure::recipients: what = fmt::format("{} recipient{}", max, max == 1 ? "" : "s"); break;
    case measure::bytes:
      if (max >= (1LL << 30) && max % (1LL << 30) == 0) {
        what = fmt::format("{} GB", max >> 30);
      } else if (max >= (1LL << 20) && max % (1LL << 20) == 0) {
        what = fmt::format("{} MB", max >> 20);
      } else {
        what = fmt::format("{} bytes", max);
      }
      break;
    case measure::distinct_recipients: what = fmt::format("{} distinct recipient{}", max, max == 1 ? "" : "s"); break;
    case measure::distinct_domains: what = fmt::format("{} recipient domain{}", max, max == 1 ? "" : "s"); break;
  }
  return fmt::format("{} per {}", what, format_window(window));
}

std::string parse_limit(std::string_view text, measure m, send_limit& out) {
  out = send_limit{};
  out.what = m;
  auto slash = text.find('/');
  if (slash == std::string_view::npos) return "expected MAX/WINDOW, e.g. 200/1h";
  auto max_text = text.substr(0, slash);
  auto window_text = text.substr(slash + 1);
  auto w = parse_duration(window_text);
  if (!w || *w % std::chrono::minutes{1} != std::chrono::milliseconds{0}) {
    return fmt::format("window {}: expected whole minutes, e.g. 10m, 1h, 24h", window_text);
  }
  out.window = std::chrono::duration_cast<std::chrono::seconds>(*w);
  if (out.window < min_window || out.window > max_window) {
    return fmt::format("window {}: must be between 1 minute and 7 days", window_text);
  }
  if (max_text == "none") return {};
  std::int64_t scale = 1;
  if (!max_text.empty() && m == measure::bytes) {
    switch (max_text.back()) {
      case 'K':
      case 'k': scale = 1LL << 10; break;
      case 'M':
      case 'm': scale = 1LL << 20; break;
      case 'G':
      case 'g': scale = 1LL << 30; break;
      default: break;
    }
    if (scale != 1) max_text.remove_suffix(1);
  }
  auto n = parse_uint(max_text);
  if (!n || *n > (1ULL << 50) / static_cast<std::uint64_t>(scale))
    return fmt::format("max {}: expected a number (or none)", text.substr(0, slash));
  out.max = static_cast<std::int64_t>(*n) * scale;
  return {};
}

std::string domain_of(std::string_view address) {
  auto at = address.rfind('@');
  if (at == std::string_view::npos) return {};
  return ascii_lower(address.substr(at + 1));
}

std::vector<send_limit> effective_limits(const std::vector<send_limit>& defaults, const limit_overrides& o,
                                         std::string_view login) {
  std::vector<send_limit> all = defaults;
  auto apply = [&all](const std::vector<send_limit>& over) {
    for (const auto& l : over) {
      auto it = std::find_if(all.begin(), all.end(),
                             [&l](const send_limit& x) { return x.what == l.what && x.window == l.window; });
      if (it == all.end()) {
        all.push_back(l);
      } else {
        *it = l;
      }
    }
  };
  if (!o.domains.empty()) {
    if (auto it = o.domains.find(domain_of(login)); it != o.domains.end()) apply(it->second);
  }
  if (!o.accounts.empty()) {
    if (auto it = o.accounts.find(std::string{login}); it != o.accounts.end()) apply(it->second);
  }
  std::erase_if(all, [](const send_limit& l) { return !l.max; });
  std::sort(all.begin(), all.end(), [](const send_limit& a, const send_limit& b) {
    return std::tuple{a.window, static_cast<int>(a.what)} < std::tuple{b.window, static_cast<int>(b.what)};
  });
  return all;
}

std::string retry_after_text(std::optional<sys_time> frees_at, sys_time now) {
  if (!frees_at) return "retry later";
  auto t = std::chrono::ceil<std::chrono::minutes>(std::max(*frees_at, now));
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::time_t now_secs = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  std::tm now_tm{};
  gmtime_r(&secs, &tm);
  gmtime_r(&now_secs, &now_tm);
  char buf[64];
  bool same_day = tm.tm_year == now_tm.tm_year && tm.tm_yday == now_tm.tm_yday;
  std::strftime(buf, sizeof buf, same_day ? "%H:%M UTC" : "%Y-%m-%d %H:%M UTC", &tm);
  return fmt::format("retry after {}", buf);
}

void transaction_tracker::expire(sys_time now) {
  while (!order_.empty() &&
         (map_.size() > max_entries_ || order_.size() > 4 * max_entries_ || now - order_.front().first > max_idle_)) {
    auto it = map_.find(order_.front().second);
    // Only the queue entry matching the transaction's current sighting removes it.
    if (it != map_.end() && it->second.last_seen <= order_.front().first) map_.erase(it);
    order_.pop_front();
  }
}

const transaction_tracker::entry* transaction_tracker::find(const std::string& instance, std::string_view login,
                                                            sys_time now) {
  expire(now);
  auto it = map_.find(instance);
  if (it == map_.end() || it->second.login != login) return nullptr;
  return &it->second;
}

void transaction_tracker::add(const std::string& instance, std::string_view login, const std::string& recipient,
                              sys_time now) {
  if (instance.empty()) return;
  auto& e = map_[instance];
  if (e.login != login) e = entry{std::string{login}, {}, {}, now};
  if (std::find(e.recipients.begin(), e.recipients.end(), recipient) == e.recipients.end()) {
    e.recipients.push_back(recipient);
    auto d = domain_of(recipient);
    if (!d.empty() && std::find(e.domains.begin(), e.domains.end(), d) == e.domains.end()) e.domains.push_back(d);
  }
  e.last_seen = now;
  order_.emplace_back(now, instance);
  expire(now);
}

void transaction_tracker::erase(const std::string& instance) {
  map_.erase(instance);
}

}  // namespace lupine::policyd
