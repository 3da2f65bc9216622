// Allow-list check; see allowlist_check.hpp.
#include "policyd/checks/allowlist_check.hpp"

namespace lupine::policyd {

boost::asio::awaitable<check_result> allowlist_check::evaluate(const request_context& ctx) {
  check_result r;
  // Allow-lists exempt inbound mail from the reputation and greylist checks; they never
  // exempt an account from its sending limits.
  if (!ctx.req.get("sasl_username").empty()) co_return r;
  auto snapshot = holder_.get();
  if (auto m = snapshot->match(ctx.req)) {
    r.v = verdict::pass;
    r.reason = "allowlist";
    r.detail = *m;
  }
  co_return r;
}

}  // namespace lupine::policyd
