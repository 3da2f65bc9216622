// Greylisting check: at RCPT, unauthenticated mail from an unknown (client network,
// normalized sender, recipient) triplet is deferred until it is retried after the delay.
//
// Skipped for other protocol states, for SASL-authenticated sessions and for requests
// without a usable client address. The triplet lives in PostgreSQL (shared by all
// instances); greylist_engine reads it in batches and writes it behind, bounded by the
// request deadline. When the database cannot answer, greylist.on_db_error decides: dunno (fail
// open: the mail is not greylisted) or defer. Logs nothing itself: the decision line
// carries the reason.
#pragma once

#include <deque>
#include <string>
#include <unordered_set>

#include "policyd/config.hpp"
#include "policyd/greylist_engine.hpp"
#include "policyd/pipeline.hpp"

namespace lupine::policyd {

class greylist_check final : public check {
 public:
  greylist_check(const policyd_config& cfg, greylist_engine& engine);
  std::string_view name() const override { return "greylist"; }
  boost::asio::awaitable<check_result> evaluate(const request_context& ctx) override;

  // Exposed for tests: the deferral reply for `wait` seconds and recipient.
  std::string defer_action(std::chrono::seconds wait, std::string_view recipient) const;

 private:
  // Has this Postfix transaction already had its X-Greylist header? (One per message, not
  // one per recipient; bounded memory.)
  bool first_header_for(std::string_view instance);

  const policyd_config& cfg_;
  greylist_engine& engine_;
  std::deque<std::string> recent_instances_;
  std::unordered_set<std::string> recent_set_;
};

// The greylisting parameters of cfg, as greylist_transact and greylist_engine take them.
greylist_db_params greylist_settings(const policyd_config& cfg);

// v itself when it is at most 320 bytes, else its first 200 bytes plus a 128-bit hash of the
// whole: what greylisting stores as a sender or recipient key.
std::string bounded_key(std::string v);

// "Fri, 27 Nov 2026 18:04:05 +0000"
std::string rfc5322_date(sys_time t);

}  // namespace lupine::policyd
