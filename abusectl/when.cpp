// WHEN arguments and UTC formatting; see when.hpp.
#include "abusectl/when.hpp"

#include <cstddef>
#include <cstdint>

#include <fmt/format.h>

namespace lupine::abusectl {

namespace {

using namespace std::chrono;

constexpr std::string_view expected_forms =
    "expected a date (2026-11-20), a date-time (2026-11-20T14:00, 2026-11-20T14:00:00Z, "
    "2026-11-20T14:00+01:00), a duration before now (90m, 24h, 7d, 2w) or now";

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Exactly n digits at pos; advances pos.
std::optional<int> digits(std::string_view s, std::size_t& pos, std::size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  int v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (!is_digit(c)) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  pos += n;
  return v;
}

std::optional<system_clock::time_point> parse_relative(std::string_view s, system_clock::time_point now,
                                                       std::string& error) {
  std::size_t i = 0;
  std::uint64_t n = 0;
  while (i < s.size() && is_digit(s[i])) {
    n = n * 10 + static_cast<std::uint64_t>(s[i] - '0');
    if (n > 100000000000ULL) break;  // far past any limit below; stops overflow
    ++i;
  }
  std::string unit;
  for (std::size_t j = i; j < s.size(); ++j) unit.push_back(lower(s[j]));
  std::uint64_t per = 0;
  if (unit == "s") {
    per = 1;
  } else if (unit == "m" || unit == "min") {
    per = 60;
  } else if (unit == "h") {
    per = 3600;
  } else if (unit == "d") {
    per = 86400;
  } else if (unit == "w") {
    per = 7 * 86400;
  } else {
    error = unit.empty() ? "a duration needs a unit (s, m, h, d, w)"
                         : fmt::format("unknown unit '{}': expected s, m (min), h, d or w", unit);
    return std::nullopt;
  }
  constexpr std::uint64_t max_seconds = 100ULL * 366 * 86400;
  if (n > max_seconds / per) {
    error = "too far back: at most 100 years";
    return std::nullopt;
  }
  return now - seconds{static_cast<std::int64_t>(n * per)};
}

std::optional<system_clock::time_point> parse_iso(std::string_view s, std::string& error) {
  std::size_t pos = 0;
  auto y = digits(s, pos, 4);
  bool dash1 = pos < s.size() && s[pos] == '-';
  if (dash1) ++pos;
  auto mo = digits(s, pos, 2);
  bool dash2 = pos < s.size() && s[pos] == '-';
  if (dash2) ++pos;
  auto d = digits(s, pos, 2);
  if (!y || !dash1 || !mo || !dash2 || !d) {
    error = std::string{expected_forms};
    return std::nullopt;
  }
  year_month_day ymd{year{*y}, month{static_cast<unsigned>(*mo)}, day{static_cast<unsigned>(*d)}};
  if (*y < 1970 || !ymd.ok()) {
    error = fmt::format("no such date {:04}-{:02}-{:02} (years 1970..9999)", *y, *mo, *d);
    return std::nullopt;
  }
  system_clock::time_point t = sys_days{ymd};
  if (pos == s.size()) return t;
  if (lower(s[pos]) != 't' && s[pos] != ' ') {
    error = std::string{expected_forms};
    return std::nullopt;
  }
  ++pos;
  auto h = digits(s, pos, 2);
  bool colon = pos < s.size() && s[pos] == ':';
  if (colon) ++pos;
  auto mi = digits(s, pos, 2);
  if (!h || !colon || !mi) {
    error = "expected the time as HH:MM or HH:MM:SS after the date";
    return std::nullopt;
  }
  int sec = 0;
  if (pos < s.size() && s[pos] == ':') {
    ++pos;
    auto sv = digits(s, pos, 2);
    if (!sv) {
      error = "expected two digits of seconds";
      return std::nullopt;
    }
    sec = *sv;
  }
  if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
    error = "fractions of a second are not supported";
    return std::nullopt;
  }
  if (*h > 23 || *mi > 59 || sec > 59) {
    error = fmt::format("no such time of day {:02}:{:02}:{:02}", *h, *mi, sec);
    return std::nullopt;
  }
  t += hours{*h} + minutes{*mi} + seconds{sec};
  if (pos == s.size()) return t;  // no offset: UTC, as abusectl prints times
  if (lower(s[pos]) == 'z' && pos + 1 == s.size()) return t;
  if (s[pos] != '+' && s[pos] != '-') {
    error = "expected Z or an offset such as +01:00 after the time";
    return std::nullopt;
  }
  const bool minus = s[pos] == '-';
  ++pos;
  auto oh = digits(s, pos, 2);
  int om = 0;
  if (oh && pos < s.size()) {
    if (s[pos] == ':') ++pos;
    auto m = digits(s, pos, 2);
    if (!m) oh.reset();
    om = m.value_or(0);
  }
  if (!oh || pos != s.size() || *oh > 23 || om > 59) {
    error = "bad offset: expected Z, +HH:MM, +HHMM or +HH (at most 23:59)";
    return std::nullopt;
  }
  // 14:00+01:00 is 13:00 UTC.
  const auto offset = hours{*oh} + minutes{om};
  return minus ? t + offset : t - offset;
}

}  // namespace

std::optional<std::chrono::system_clock::time_point> parse_when(std::string_view text,
                                                                std::chrono::system_clock::time_point now,
                                                                std::string& error) {
  error.clear();
  if (text.empty()) {
    error = "empty; " + std::string{expected_forms};
    return std::nullopt;
  }
  std::string low;
  for (char c : text) low.push_back(lower(c));
  if (low == "now") return now;
  // A date starts with four digits and a dash; a duration is digits and a unit.
  if (text.size() >= 5 && is_digit(text[0]) && is_digit(text[1]) && is_digit(text[2]) && is_digit(text[3]) &&
      text[4] == '-') {
    return parse_iso(text, error);
  }
  if (is_digit(text[0])) return parse_relative(text, now, error);
  error = std::string{expected_forms};
  return std::nullopt;
}

std::string format_utc(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto secs = floor<seconds>(t);
  const auto dp = floor<days>(secs);
  const year_month_day ymd{dp};
  const hh_mm_ss hms{secs - dp};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()), hms.hours().count(),
                     hms.minutes().count(), hms.seconds().count());
}

std::string format_utc_day(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const year_month_day ymd{floor<days>(t)};
  return fmt::format("{:04}-{:02}-{:02}", static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                     static_cast<unsigned>(ymd.day()));
}

}  // namespace lupine::abusectl
