// Inbound flood control, per policyd instance (a flood hits the MX it connects to):
//  - request rate per client address and per client network (/24, /64 by default), as a
//    generic cell rate (GCRA): N requests per window, N of them at once at most, then one
//    every window/N. Over it: 450 4.7.1 with the seconds to wait.
//  - concurrent SMTP sessions per client address and network. Postfix keeps one policy
//    connection per smtpd process, and one smtpd process serves one client at a time, so a
//    policy connection whose latest request came from a client within flood.session_idle
//    is one open session of that client. Over the cap: 421 4.7.0, which makes Postfix
//    close that SMTP session.
// Authenticated requests (limited per account instead) and flood.exempt networks are not
// counted. Rate replies are always 4xx. Memory is bounded by flood.max_tracked keys.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include "policyd/config.hpp"
#include "policyd/pipeline.hpp"

namespace lupine::policyd {

// Generic cell rate algorithm for `n` events per `window`, burst n. Pure.
struct gcra {
  sys_time tat{};  // theoretical arrival time
  // How long to wait before one more event conforms (zero: it conforms now).
  static sys_time::duration wait(sys_time tat, sys_time now, std::uint64_t n, sys_time::duration window);
  static sys_time next_tat(sys_time tat, sys_time now, std::uint64_t n, sys_time::duration window);
};

class flood_check final : public check {
 public:
  explicit flood_check(const policyd_config& cfg) : cfg_{cfg} {}
  std::string_view name() const override { return "flood"; }
  boost::asio::awaitable<check_result> evaluate(const request_context& ctx) override;
  void connection_closed(std::uint64_t connection) override;

  std::size_t tracked() const { return rates_.size(); }

 private:
  struct rate_entry {
    sys_time tat{};
    sys_time logged{};
  };
  struct session {
    std::string client, net;
    sys_time last{};
  };
  check_result decide(const request_context& ctx);
  void end_session(std::uint64_t connection);
  void sweep(sys_time now);

  const policyd_config& cfg_;
  std::unordered_map<std::string, rate_entry> rates_;
  std::unordered_map<std::uint64_t, session> sessions_;
  std::unordered_map<std::string, unsigned> client_sessions_, net_sessions_;
  sys_time last_sweep_{};
};

}  // namespace lupine::policyd
