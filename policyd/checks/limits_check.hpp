// Outbound sending limits for authenticated submission (sasl_username set).
//
// RCPT: would this recipient fit the account's limits? Messages, recipients (the
// transaction's so far), bytes (the SIZE announced, at least 1) and breadth (a new distinct
// recipient or domain) are checked; nothing is counted. An accepted recipient is
// remembered under the transaction's `instance`.
// END-OF-MESSAGE: the same check with recipient_count and size; when the message fits it is
// counted, with the transaction's recipients recorded for breadth. A refused message is not
// counted.
// Over a limit: limits.action (452 4.7.1 defer, HOLD or 550 5.7.1 reject), with the limit
// and when it frees in the reply; the database opens one review flag per trip. Breadth
// past a limits.auto_restrict threshold restricts the account (audited), and the request is
// then judged as a restricted account's.
//
// Every decision is one statement in PostgreSQL (lupine_send_check), serialized per
// account, so instances sharing the database count exactly. Must run last in the pipeline:
// a later check refusing the message would leave it counted.
#pragma once

#include "core/db.hpp"
#include "policyd/config.hpp"
#include "policyd/directory.hpp"
#include "policyd/limits.hpp"
#include "policyd/pipeline.hpp"

namespace lupine::policyd {

class limits_check final : public check {
 public:
  limits_check(const policyd_config& cfg, db_pool& db, directory& dir) : cfg_{cfg}, db_{db}, dir_{dir} {}
  std::string_view name() const override { return "limits"; }
  boost::asio::awaitable<check_result> evaluate(const request_context& ctx) override;

  // The reply for a tripped limit.
  static std::string limit_action(const std::string& action, const send_limit& l, std::optional<sys_time> frees_at,
                                  sys_time now);

 private:
  const policyd_config& cfg_;
  db_pool& db_;
  directory& dir_;
  transaction_tracker tracker_;
};

}  // namespace lupine::policyd
