// Greylisting logic, pure: the triplet key, sender normalization and the state machine.
// No clock reads and no I/O: callers pass `now`, so tests need no sleeping.
//
// The state machine (times from the triplet's first sighting):
//   unknown, or expired           -> record first_seen = now; defer for `delay`
//   pending, before delay         -> defer for what remains; the clock is NOT restarted;
//                                    beyond early_retry_grace early retries, each one
//                                    adds early_retry_penalty to the delay (up to max_delay)
//   pending, after retry_window   -> start over (the sender did not retry in time)
//   pending, within the window    -> pass; passed_at = now (delayed = now - first_seen)
//   passed, seen within max_age   -> pass again; last_seen = now
//   passed, not seen for max_age  -> expired: start over
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace lupine::policyd {

using sys_time = std::chrono::system_clock::time_point;
using std::chrono::seconds;

// Lower-cases; folds +extension, BATV (prvs=/msprvs1=/btv1=), SRS0/SRS1 hash and timestamp
// fields, an embedded recipient (VERP "user=example.org") and numeric/hex bounce tags, so
// that one sender retrying with a fresh bounce address maps to one key. The null sender is
// "<>". recipient may be empty.
std::string normalize_sender(std::string_view sender, std::string_view recipient = {});

// Lower-cased recipient address.
std::string normalize_recipient(std::string_view recipient);

struct greylist_params {
  std::chrono::milliseconds delay{std::chrono::seconds{300}};
  std::chrono::milliseconds retry_window{std::chrono::hours{48}};
  std::chrono::milliseconds max_age{std::chrono::hours{24 * 35}};
  unsigned early_retry_grace = 5;                                           // early retries that cost nothing
  std::chrono::milliseconds early_retry_penalty{std::chrono::seconds{60}};  // 0: no penalty
  std::chrono::milliseconds max_delay{std::chrono::hours{1}};               // the penalty's cap
};

// The delay a pending triplet tried `attempts` times must wait out: delay, plus the
// penalty for each early retry beyond the grace, at most max(delay, max_delay) and never
// past halfway between delay and retry_window (so the triplet can still pass).
std::chrono::milliseconds effective_delay(int attempts, const greylist_params& p);

struct greylist_entry {
  sys_time first_seen{};
  sys_time last_seen{};
  std::optional<sys_time> passed_at;
  int attempts = 1;
  bool operator==(const greylist_entry&) const = default;
};

enum class greylist_outcome {
  first_seen,     // new (or expired / restarted) triplet: deferred
  too_early,      // retried before the delay: deferred, clock kept
  restarted,      // retried after the retry window: deferred as new
  passed_now,     // first retry after the delay: accepted
  passed_before,  // an already passed triplet: accepted
};

struct greylist_step_result {
  greylist_outcome outcome;
  greylist_entry entry;             // the state to store
  std::chrono::seconds wait{0};     // deferred: seconds until the triplet may pass (>= 1)
  std::chrono::seconds delayed{0};  // passed_now: how long it was held back
  std::chrono::seconds penalty{0};  // deferred: what early retries added to the delay
  bool deferred() const {
    return outcome == greylist_outcome::first_seen || outcome == greylist_outcome::too_early ||
           outcome == greylist_outcome::restarted;
  }
};

greylist_step_result greylist_step(const std::optional<greylist_entry>& prior, sys_time now, const greylist_params& p);

std::string_view to_string(greylist_outcome o);

}  // namespace lupine::policyd
