// DNS reputation check: weighted DNSBL/DNSWL lists and forward-confirmed reverse DNS,
// summed into the client's score.
//
// For each request (states CONNECT..RCPT; never for SASL-authenticated sessions, never
// at DATA/END-OF-MESSAGE) every enabled list is queried at once, within the request's DNS
// budget (dns.budget, and never past the request deadline). A list that times out or fails
// counts as not listed for that request; after dns.breaker_failures consecutive failures
// it is skipped for dns.breaker_cooldown (logged when it goes and comes back). Answers
// that mean "refused / public resolver" (127.255.255.x) count as not listed and are logged
// at most once per dns.error_log_interval per list, with a running count.
// Reverse DNS uses Postfix's client_name / reverse_client_name when they were sent and
// looks up only what is missing. Verdicts: score >= dnsbl.reject_score: reject (the text
// names the list and its TXT; fetching the TXT may take up to 200 ms past dns.budget, never
// past the request deadline); score <= dnsbl.trust_score: pass (skips greylisting); with
// dnsbl.selective_greylist, score < dnsbl.greylist_score: pass too, unless a list failed or
// was skipped or the reverse DNS could not be checked (then the request is greylisted as
// usual and marked degraded: a failure never makes a client look clean); else continue
// with the score. The decision detail lists every hit: "dnsbl.test=127.0.0.2(+3) rdns=no_ptr(+2)".
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "policyd/config.hpp"
#include "policyd/dns.hpp"
#include "policyd/dnsbl.hpp"
#include "policyd/pipeline.hpp"

namespace lupine::policyd {

class dns_check final : public check {
 public:
  dns_check(const policyd_config& cfg, dns_resolver& resolver);
  std::string_view name() const override { return "dns"; }
  boost::asio::awaitable<check_result> evaluate(const request_context& ctx) override;

  // RFC 5782 section 5 self-test of every IPv4 list, now and then every
  // dnsbl.self_test_interval: a list that answers for 127.0.0.1 (which no DNSxL may list:
  // it lists everything, e.g. an expired zone parked behind a wildcard) is disarmed until a
  // later test passes; a list that does not list 127.0.0.2 is only reported. Runs until
  // stop is set; spawn once on the loop.
  boost::asio::awaitable<void> self_test_loop(const bool& stop);

 private:
  struct list_state {
    unsigned failures = 0;
    std::chrono::steady_clock::time_point disabled_until{};
    bool disabled = false;
    std::uint64_t error_codes = 0;
    std::optional<std::chrono::steady_clock::time_point> last_error_log;
    std::uint64_t last_failed_query = 0;  // a shared lookup's failure counts once
    bool disarmed = false;                // failed the RFC 5782 self-test
  };
  boost::asio::awaitable<std::pair<rdns_result, std::string>> reverse_dns(
      const request_context& ctx, std::string client, std::chrono::steady_clock::time_point deadline);
  std::string shown_name(const std::string& zone) const;

  const policyd_config& cfg_;
  dns_resolver& dns_;
  std::vector<std::regex> dynamic_;
  std::vector<list_state> state_;
};

}  // namespace lupine::policyd
