// Account-state check: an authenticated request (sasl_username set) is judged by its
// account's state in the directory. restricted (webmail-only): allowed only from a webmail
// network, rejected with 5.7.1 elsewhere; terminated: rejected everywhere. Active and
// unknown accounts, and unauthenticated requests, go on. No database round trip: the
// directory is in memory and kept current by LISTEN/NOTIFY (directory.hpp).
#pragma once

#include "policyd/config.hpp"
#include "policyd/directory.hpp"
#include "policyd/pipeline.hpp"

namespace lupine::policyd {

class account_check final : public check {
 public:
  account_check(const policyd_config& cfg, const directory& dir) : cfg_{cfg}, dir_{dir} {}
  std::string_view name() const override { return "account"; }
  boost::asio::awaitable<check_result> evaluate(const request_context& ctx) override;

 private:
  const policyd_config& cfg_;
  const directory& dir_;
};

// The verdict for an account in `state` submitting from client_address (shared with the
// limits check, which may restrict an account in the middle of a transaction).
check_result judge_account(const policyd_config& cfg, const directory& dir, const account_info& info,
                           std::string_view client_address);

}  // namespace lupine::policyd
