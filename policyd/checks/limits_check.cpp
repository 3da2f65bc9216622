// Outbound sending limits; see limits_check.hpp.
#include "policyd/checks/limits_check.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "core/config.hpp"

#include "core/log.hpp"
#include "policyd/checks/account_check.hpp"
#include "policyd/checks/greylist_check.hpp"
#include "policyd/store.hpp"

namespace lupine::policyd {

std::string limits_check::limit_action(const std::string& action, const send_limit& l, std::optional<sys_time> frees_at,
                                       sys_time now) {
  auto what = describe_limit(l.what, l.max.value_or(0), l.window);
  if (action == "hold") return fmt::format("HOLD Sending limit reached: {}; held for review", what);
  if (action == "reject") return fmt::format("550 5.7.1 Sending limit reached: {}", what);
  return fmt::format("452 4.7.1 Sending limit reached: {}; {}", what, retry_after_text(frees_at, now));
}

boost::asio::awaitable<check_result> limits_check::evaluate(const request_context& ctx) {
  check_result r;
  const auto& req = ctx.req;
  auto sasl = req.get("sasl_username");
  if (!cfg_.limits_enable || sasl.empty()) co_return r;
  auto state = req.get("protocol_state");
  bool eom = state == "END-OF-MESSAGE";
  if (!eom && state != "RCPT") co_return r;

  auto login = bounded_key(normalize_login(to_valid_utf8(sasl)));
  std::string instance{req.get("instance")};
  send_check_args a;
  a.login = login;
  a.now = ctx.now;
  a.end_of_message = eom;
  a.policyd = cfg_.name;
  a.limits = effective_limits(cfg_.limits_defaults, dir_.overrides(), login);
  a.auto_restrict = cfg_.limits_auto_restrict;
  if (a.limits.empty() && a.auto_restrict.empty() && !eom) co_return r;

  std::string rcpt;
  if (!req.get("recipient").empty()) rcpt = bounded_key(to_valid_utf8(normalize_recipient(req.get("recipient"))));
  if (const auto* t = instance.empty() ? nullptr : tracker_.find(instance, login, ctx.now)) {
    a.recipients = t->recipients;
    a.domains = t->domains;
  }
  auto add_unique = [](std::vector<std::string>& v, std::string s) {
    if (!s.empty() && std::find(v.begin(), v.end(), s) == v.end()) v.push_back(std::move(s));
  };
  if (!eom || a.recipients.empty()) {
    add_unique(a.recipients, rcpt);
    add_unique(a.domains, domain_of(rcpt));
  }
  // Absurd values from a client are clamped, never wrapped.
  constexpr std::uint64_t max_size = 1ULL << 50;
  constexpr std::uint64_t max_count = 1000000;
  auto size = std::min(parse_uint(req.get("size")).value_or(0), max_size);
  a.messages = 1;
  if (eom) {
    auto count = parse_uint(req.get("recipient_count"));
    a.recipient_count =
        count ? static_cast<long long>(std::min(*count, max_count)) : static_cast<long long>(a.recipients.size());
    a.bytes = static_cast<long long>(size);
    tracker_.erase(instance);  // the transaction ends here, whatever the answer
  } else {
    a.recipient_count = static_cast<long long>(a.recipients.size());
    a.bytes = static_cast<long long>(std::max<std::uint64_t>(size, 1));
  }

  std::function<send_check_answer(db_session&)> job = [a](db_session& s) { return send_check(s, a); };
  auto ans = co_await db_.run<send_check_answer>(std::move(job), ctx.deadline);
  if (!ans) {
    r.degraded = true;
    r.reason = "degraded:limits";
    r.detail = ans.error().message();
    if (cfg_.limits_on_db_error == "defer") {
      r.v = verdict::defer;
      r.action = "451 4.3.0 Temporary failure checking sending limits, please try again later";
    }
    co_return r;
  }
  if (ans->restricted) {
    log(log_level::warning, "account_auto_restricted", "{} {}", kv("login", login), kv("policyd", cfg_.name));
    account_info info{account_state::restricted, "automatic"};
    dir_.set_account(login, info);  // NOTIFY brings the same a moment later
    auto judged = judge_account(cfg_, dir_, info, req.get("client_address"));
    if (is_final(judged.v)) {
      judged.reason = "account_auto_restricted";
      co_return judged;
    }
  }
  if (!ans->allowed) {
    const auto& l = *ans->tripped;
    r.reason = fmt::format("limit_{}", to_string(l.what));
    r.detail =
        fmt::format("{}={}/{} per {}", to_string(l.what), ans->value, l.max.value_or(0), format_window(l.window));
    if (ans->flag_opened) {
      log(log_level::info, "limit_tripped", "{} {} value={} max={} window={} action={}", kv("login", login),
          kv("measure", to_string(l.what)), ans->value, l.max.value_or(0), format_window(l.window), cfg_.limits_action);
    }
    if (l.what == measure::bytes && !ans->frees_at && cfg_.limits_action == "defer") {
      // Larger than the whole allowance: retrying can never help.
      r.v = verdict::reject;
      r.action = fmt::format("552 5.3.4 Message too big for the sending limit: {}",
                             describe_limit(l.what, l.max.value_or(0), l.window));
      co_return r;
    }
    r.action = limit_action(cfg_.limits_action, l, ans->frees_at, ctx.now);
    r.v = cfg_.limits_action == "hold"     ? verdict::hold
          : cfg_.limits_action == "reject" ? verdict::reject
                                           : verdict::defer;
    co_return r;
  }
  if (!eom && !instance.empty() && !rcpt.empty()) tracker_.add(instance, login, rcpt, ctx.now);
  co_return r;
}

}  // namespace lupine::policyd
