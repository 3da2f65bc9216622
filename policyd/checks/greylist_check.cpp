// Greylisting check; see greylist_check.hpp.
#include "policyd/checks/greylist_check.hpp"

#include <ctime>

#include <fmt/format.h>

#include "core/log.hpp"
#include "core/text.hpp"
#include "policyd/net.hpp"

namespace lupine::policyd {

namespace {
constexpr std::size_t max_recent_instances = 4096;
}

std::string bounded_key(std::string v) {
  // PostgreSQL refuses btree entries over ~2.7 kB, and a refused insert would fail open:
  // an absurdly long address would skip greylisting. Keep a readable head and a hash.
  constexpr std::size_t max_len = 320;
  if (v.size() <= max_len) return v;
  // Two FNV-1a runs from different bases: 128 bits, so distinct addresses keep distinct keys.
  auto h1 = fnv1a(v);
  auto h2 = fnv1a(v, 0x9e3779b97f4a7c15ULL);
  std::string head = v.substr(0, 200);
  while (!head.empty() && (static_cast<unsigned char>(head.back()) & 0xc0) == 0x80) head.pop_back();  // UTF-8
  if (!head.empty() && static_cast<unsigned char>(head.back()) >= 0xc0) head.pop_back();
  return fmt::format("{}#long:{:016x}{:016x}", head, h1, h2);
}

std::string rfc5322_date(sys_time t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  return buf;
}

greylist_db_params greylist_settings(const policyd_config& cfg) {
  greylist_db_params p;
  p.triplet = cfg.greylist;
  p.awl_clients = cfg.greylist_awl_clients;
  p.awl_max_age = cfg.greylist_awl_max_age;
  p.awl_count_interval = cfg.greylist_awl_count_interval;
  return p;
}

greylist_check::greylist_check(const policyd_config& cfg, greylist_engine& engine) : cfg_{cfg}, engine_{engine} {}

std::string greylist_check::defer_action(std::chrono::seconds wait, std::string_view recipient) const {
  std::string text;
  const auto& tmpl = cfg_.greylist_text;
  for (std::size_t i = 0; i < tmpl.size(); ++i) {
    if (tmpl[i] == '%' && i + 1 < tmpl.size()) {
      char k = tmpl[i + 1];
      if (k == 's') {
        text += std::to_string(wait.count());
        ++i;
        continue;
      }
      if (k == 'r') {
        auto at = recipient.rfind('@');
        text += at == std::string_view::npos ? std::string_view{} : recipient.substr(at + 1);
        ++i;
        continue;
      }
      if (k == '%') {
        text += '%';
        ++i;
        continue;
      }
    }
    text += tmpl[i];
  }
  return fmt::format("{} 4.7.1 {}", cfg_.greylist_action, text);
}

bool greylist_check::first_header_for(std::string_view instance) {
  if (instance.empty()) return true;
  std::string key{instance};
  if (recent_set_.count(key) != 0) return false;
  recent_instances_.push_back(key);
  recent_set_.insert(std::move(key));
  if (recent_instances_.size() > max_recent_instances) {
    recent_set_.erase(recent_instances_.front());
    recent_instances_.pop_front();
  }
  return true;
}

boost::asio::awaitable<check_result> greylist_check::evaluate(const request_context& ctx) {
  check_result r;
  const auto& req = ctx.req;
  // Greylisting answers RCPT only: VRFY is not a delivery attempt, and DATA or
  // END-OF-MESSAGE come after the recipients were already judged.
  if (!cfg_.greylist_enable || req.get("protocol_state") != "RCPT") co_return r;
  if (!req.get("sasl_username").empty()) co_return r;  // authenticated: never greylisted
  auto addr = parse_ip(req.get("client_address"));
  if (!addr) {
    r.reason = "greylist_skipped";
    r.detail = "no client address";
    co_return r;
  }
  greylist_key key;
  key.client_net = group_network(*addr, cfg_.greylist_ipv4_prefix, cfg_.greylist_ipv6_prefix).to_string();
  key.client_addr = ip_to_string(*addr);
  // 8-bit addresses must still be greylisted: escape what is not UTF-8 (PostgreSQL would
  // refuse it, and a refused query fails open).
  key.recipient = bounded_key(to_valid_utf8(normalize_recipient(req.get("recipient"))));
  key.sender = bounded_key(to_valid_utf8(normalize_sender(req.get("sender"), req.get("recipient"))));
  auto now = ctx.now;
  auto answer = co_await engine_.decide(key, now, ctx.deadline);
  if (!answer) {
    r.degraded = true;
    r.reason = "degraded:greylist";
    r.detail = answer.error().message();
    if (cfg_.greylist_on_db_error == "defer") {
      r.v = verdict::defer;
      r.action = "451 4.3.0 Temporary greylisting failure, please try again later";
    }
    co_return r;
  }
  if (answer->auto_allowed) {
    r.reason = "greylist_awl";
    co_return r;
  }
  const auto& step = answer->step;
  r.reason = std::string{to_string(step.outcome)};
  if (step.deferred()) {
    r.v = cfg_.greylist_action == "DEFER_IF_PERMIT" ? verdict::defer_if_permit : verdict::defer;
    r.action = defer_action(step.wait, key.recipient);
    r.detail = fmt::format("wait={}s", step.wait.count());
    if (step.penalty.count() > 0) {
      auto early = step.entry.attempts - 1;
      r.detail += fmt::format(" early_retries={} penalty={}s", early, step.penalty.count());
      // Logged when the penalty starts; the decision lines carry it afterwards.
      if (early == static_cast<int>(cfg_.greylist.early_retry_grace) + 1) {
        log(log_level::info, "greylist_early_retry_penalty", "{} {} {} early_retries={} delay={}s",
            kv("client", key.client_addr), kv("sender", key.sender), kv("recipient", key.recipient), early,
            (step.penalty + std::chrono::duration_cast<std::chrono::seconds>(cfg_.greylist.delay)).count());
      }
    }
    co_return r;
  }
  if (step.outcome == greylist_outcome::passed_now) {
    r.detail = fmt::format("delayed={}s", step.delayed.count());
    if (cfg_.greylist_prepend && first_header_for(req.get("instance"))) {
      r.v = verdict::prepend;
      r.header = fmt::format("{}: delayed {} second{} by lupine-policyd at {}; {}", cfg_.greylist_header,
                             step.delayed.count(), step.delayed.count() == 1 ? "" : "s", cfg_.name, rfc5322_date(now));
    }
  }
  co_return r;
}

}  // namespace lupine::policyd
