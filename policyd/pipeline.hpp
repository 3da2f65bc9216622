// The decision pipeline: checks run in precedence order for each request; each returns a
// check_result, and decide() folds them into the one reply. Pure apart from the checks'
// own awaits; checks get facts from adapters (db, dns) and never read the clock.
//
// Verdicts: continue_ (nothing to say), prepend (a header to add; not final), and the final
// ones: pass (stop checking; reply DUNNO so Postfix goes on), accept (OK), defer_if_permit,
// defer, reject, hold. The first final verdict wins. A prepend header survives only when
// the outcome lets mail through (PREPEND replaces DUNNO); it is dropped otherwise.
// A check that cannot get its facts (database down) returns its configured degraded result
// with degraded = true; the decision line then says reason=degraded:<check>.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/awaitable.hpp>

#include "policyd/greylist.hpp"
#include "policyd/protocol.hpp"

namespace lupine::policyd {

enum class verdict { continue_, prepend, pass, accept, defer_if_permit, defer, reject, hold };

std::string_view to_string(verdict v);
bool is_final(verdict v);

struct check_result {
  verdict v = verdict::continue_;
  std::string action;  // the full reply for final verdicts, e.g. "DEFER_IF_PERMIT 4.7.1 ..."
  std::string header;  // for prepend: "X-Greylist: ..."
  std::string reason;  // short token for logs: "greylist_new", "allowlist"
  std::string detail;  // free text for logs: "client 192.0.2.0/24"
  double score = 0;
  bool degraded = false;
};

struct request_context {
  const policy_request& req;
  sys_time now;                                    // read once per request by the session
  std::chrono::steady_clock::time_point deadline;  // the request's whole budget
  std::uint64_t connection = 0;                    // the policy connection's id (0: none)
};

class check {
 public:
  virtual ~check() = default;
  virtual std::string_view name() const = 0;
  // Must finish by ctx.deadline; must not throw for expected failures.
  virtual boost::asio::awaitable<check_result> evaluate(const request_context& ctx) = 0;
  // The policy connection `connection` closed (per-connection state can go).
  virtual void connection_closed(std::uint64_t /*connection*/) {}
};

struct decision {
  verdict v = verdict::continue_;
  std::string action = "DUNNO";
  std::string reason;  // comma list of the reasons the checks gave
  std::string detail;
  double score = 0;
  bool degraded = false;
};

// Folds results (in check order) into the reply. Pure.
decision decide(const std::vector<check_result>& results);

class pipeline {
 public:
  void add(std::unique_ptr<check> c) { checks_.push_back(std::move(c)); }
  boost::asio::awaitable<decision> run(const request_context& ctx) const;
  void connection_closed(std::uint64_t connection) const {
    for (const auto& c : checks_) c->connection_closed(connection);
  }
  const std::vector<std::unique_ptr<check>>& checks() const { return checks_; }

 private:
  std::vector<std::unique_ptr<check>> checks_;
};

}  // namespace lupine::policyd

template <>
struct fmt::formatter<lupine::policyd::verdict> : fmt::formatter<std::string_view> {
  auto format(lupine::policyd::verdict v, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(lupine::policyd::to_string(v), ctx);
  }
};
