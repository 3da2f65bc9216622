// Account-state check; see account_check.hpp.
#include "policyd/checks/account_check.hpp"

#include <fmt/format.h>

namespace lupine::policyd {

check_result judge_account(const policyd_config& cfg, const directory& dir, const account_info& info,
                           std::string_view client_address) {
  check_result r;
  switch (info.state) {
    case account_state::active: break;
    case account_state::terminated:
      r.v = verdict::reject;
      r.reason = "account_terminated";
      r.action = fmt::format("550 5.7.1 {}", cfg.accounts_terminated_text);
      break;
    case account_state::restricted: {
      auto addr = parse_ip(client_address);
      if (addr && dir.from_webmail(*addr)) {
        r.reason = "account_restricted_webmail";
        break;
      }
      r.v = verdict::reject;
      r.reason = "account_restricted";
      r.action = fmt::format("550 5.7.1 {}", cfg.accounts_restricted_text);
      break;
    }
  }
  return r;
}

boost::asio::awaitable<check_result> account_check::evaluate(const request_context& ctx) {
  auto login = ctx.req.get("sasl_username");
  if (login.empty()) co_return check_result{};
  co_return judge_account(cfg_, dir_, dir_.account(normalize_login(login)), ctx.req.get("client_address"));
}

}  // namespace lupine::policyd
