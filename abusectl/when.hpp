// Time arguments of abusectl commands (WHEN): an ISO 8601 date or date-time, a duration
// before now, or "now"; and the UTC form abusectl prints times in. Pure: the caller passes
// `now`, nothing here reads the clock. Input is the operator's (untrusted only in the sense
// of typos): every malformed or out-of-range value is an error, never a guess.
//
//   2026-11-20                  midnight UTC of that day
//   2026-11-20T14:00            UTC when no offset is given (a space may replace the T)
//   2026-11-20T14:00:05Z        seconds optional; Z, +01:00, -0530 or +01 as the offset
//   90m, 24h, 7d, 2w, 30s       that long before now (m and min are minutes; no months)
//   now
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace lupine::abusectl {

// The time text means, or nullopt with `error` set to a one-line reason (without the text
// itself: the caller names the argument). Years 1970..9999; durations up to 100 years;
// fractions of seconds are refused. Case-insensitive for T, Z, the units and "now".
std::optional<std::chrono::system_clock::time_point> parse_when(std::string_view text,
                                                                std::chrono::system_clock::time_point now,
                                                                std::string& error);

// t as "2026-11-27T18:04:31Z" (UTC, whole seconds rounded down), as abusectl prints times.
std::string format_utc(std::chrono::system_clock::time_point t);
// The UTC day of t as "2026-11-27".
std::string format_utc_day(std::chrono::system_clock::time_point t);

}  // namespace lupine::abusectl
