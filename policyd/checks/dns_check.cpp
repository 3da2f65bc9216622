// DNS reputation check; see dns_check.hpp.
#include "policyd/checks/dns_check.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/log.hpp"
#include "policyd/net.hpp"

namespace lupine::policyd {
namespace asio = boost::asio;
using steady = std::chrono::steady_clock;

dns_check::dns_check(const policyd_config& cfg, dns_resolver& resolver)
    : cfg_{cfg}, dns_{resolver}, state_(cfg.dnsbl_lists.size()) {
  for (const auto& p : cfg.rdns_dynamic_patterns) {
    // __polynomial: libstdc++'s non-backtracking matcher; host names come from senders.
    dynamic_.emplace_back(p, std::regex::ECMAScript | std::regex::icase | std::regex_constants::__polynomial);
  }
}

std::string dns_check::shown_name(const std::string& zone) const {
  if (cfg_.dnsbl_hide_names) return "a DNS blocklist";
  for (const auto& [z, shown] : cfg_.dnsbl_reply_names) {
    if (z == zone) return shown;
  }
  return zone;
}

asio::awaitable<std::pair<rdns_result, std::string>> dns_check::reverse_dns(const request_context& ctx,
                                                                            std::string client,
                                                                            steady::time_point deadline) {
  const auto& req = ctx.req;
  auto name = req.get("client_name");
  auto rname = req.get("reverse_client_name");
  // Postfix already did the work: client_name is the verified name, reverse_client_name
  // the PTR name, "unknown" when there was none.
  if (!name.empty() && name != "unknown") co_return std::pair{rdns_result::confirmed, std::string{name}};
  if (!rname.empty() && rname != "unknown") co_return std::pair{rdns_result::unconfirmed, std::string{rname}};
  if (name == "unknown" && rname == "unknown") co_return std::pair{rdns_result::no_ptr, std::string{}};
  // Not sent (another client, or a test): look it up ourselves.
  auto rev = reverse_name(client);
  auto a = parse_ip(client);
  auto ptr = co_await dns_.lookup(rev + (a->is_v4() ? ".in-addr.arpa" : ".ip6.arpa"), dns_type::ptr, deadline);
  if (ptr.status == dns_status::nxdomain || ptr.status == dns_status::nodata) {
    co_return std::pair{rdns_result::no_ptr, std::string{}};
  }
  if (ptr.status != dns_status::ok || ptr.records.empty()) co_return std::pair{rdns_result::unknown, std::string{}};
  std::string host = ptr.records.front();
  auto fwd = co_await dns_.lookup(host, a->is_v4() ? dns_type::a : dns_type::aaaa, deadline);
  if (fwd.status == dns_status::timed_out || fwd.status == dns_status::servfail || fwd.status == dns_status::error) {
    co_return std::pair{rdns_result::unknown, host};
  }
  co_return std::pair{classify_rdns(true, fwd.records, client), host};
}

asio::awaitable<void> dns_check::self_test_loop(const bool& stop) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer t{ex};
  while (!stop) {
    for (std::size_t i = 0; i < cfg_.dnsbl_lists.size() && !stop; ++i) {
      const auto& list = cfg_.dnsbl_lists[i];
      auto& st = state_[i];
      auto deadline = steady::now() + cfg_.dns_budget;
      auto must = dns_.start("2.0.0.127." + list.zone, dns_type::a);
      auto must_not = dns_.start("1.0.0.127." + list.zone, dns_type::a);
      auto yes = co_await dns_.wait(must, deadline);
      auto no = co_await dns_.wait(must_not, deadline);
      bool lists_everything =
          no.status == dns_status::ok && std::any_of(no.records.begin(), no.records.end(),
                                                     [&](const std::string& a) { return dnsbl_matches(list, a); });
      bool lists_test_entry = yes.status == dns_status::ok && !yes.records.empty();
      if (lists_everything) {
        if (!st.disarmed) {
          log(log_level::error, "dnsbl_self_test_failed", "{} answer={} action=disarmed {}", kv("list", list.zone),
              no.records.front(),
              log_quote("the list answers for 127.0.0.1, which RFC 5782 forbids: it would list every client"));
        }
        st.disarmed = true;
      } else if (no.status == dns_status::nxdomain || no.status == dns_status::nodata) {
        if (st.disarmed) log(log_level::info, "dnsbl_self_test_passed", "{} action=rearmed", kv("list", list.zone));
        st.disarmed = false;
        if (!lists_test_entry && (yes.status == dns_status::nxdomain || yes.status == dns_status::nodata)) {
          log(log_level::warning, "dnsbl_self_test_incomplete", "{} {}", kv("list", list.zone),
              log_quote("127.0.0.2 is not listed (RFC 5782 says it must be): check the zone name"));
        }
      }
      // Timeouts and failures prove nothing either way: the breaker handles those.
    }
    t.expires_after(cfg_.dnsbl_self_test_interval);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

asio::awaitable<check_result> dns_check::evaluate(const request_context& ctx) {
  check_result r;
  const auto& req = ctx.req;
  auto state = req.get("protocol_state");
  if (state == "DATA" || state == "END-OF-MESSAGE" || state == "VRFY" || state == "ETRN") co_return r;
  if (!req.get("sasl_username").empty()) co_return r;  // submission: DNSBLs (PBL) do not apply
  if (cfg_.dnsbl_lists.empty() && !cfg_.rdns_enable) co_return r;
  auto addr = parse_ip(req.get("client_address"));
  if (!addr) co_return r;
  std::string client = ip_to_string(*addr);
  auto deadline = std::min(ctx.deadline, steady::now() + cfg_.dns_budget);
  auto now = steady::now();

  // Start every list's lookup first: they run concurrently.
  auto rev = reverse_name(client);
  std::vector<std::shared_ptr<dns_resolver::pending>> lookups(cfg_.dnsbl_lists.size());
  bool incomplete = false;  // a list failed or was skipped: the score may be too low
  std::string skipped;
  for (std::size_t i = 0; i < cfg_.dnsbl_lists.size(); ++i) {
    auto& st = state_[i];
    if (st.disarmed || (st.disabled && now < st.disabled_until)) {
      incomplete = true;
      skipped += (skipped.empty() ? "" : " ") + cfg_.dnsbl_lists[i].zone + (st.disarmed ? "=disarmed" : "=skipped");
      continue;
    }
    lookups[i] = dns_.start(rev + "." + cfg_.dnsbl_lists[i].zone, dns_type::a);
  }
  std::pair<rdns_result, std::string> rdns{rdns_result::unknown, {}};
  if (cfg_.rdns_enable) rdns = co_await reverse_dns(ctx, client, deadline);

  int score = 0;
  std::string detail = skipped;
  const dnsbl_list* top_hit = nullptr;
  auto add_detail = [&detail](const std::string& d) { detail += (detail.empty() ? "" : " ") + d; };
  for (std::size_t i = 0; i < lookups.size(); ++i) {
    if (!lookups[i]) continue;
    const auto& list = cfg_.dnsbl_lists[i];
    auto& st = state_[i];
    auto ans = co_await dns_.wait(lookups[i], deadline);
    bool failed =
        ans.status == dns_status::timed_out || ans.status == dns_status::servfail || ans.status == dns_status::error;
    if (failed) {
      incomplete = true;
      add_detail(fmt::format("{}={}", list.zone, to_string(ans.status)));
      // Requests that shared one lookup share its failure: count it once.
      if (ans.query_id != 0 && ans.query_id == st.last_failed_query) continue;
      st.last_failed_query = ans.query_id;
      if (++st.failures >= cfg_.dns_breaker_failures && !st.disabled) {
        st.disabled = true;
        st.disabled_until = steady::now() + cfg_.dns_breaker_cooldown;
        log(log_level::warning, "dnsbl_list_disabled", "{} failures={} {} for={}", kv("list", list.zone), st.failures,
            kv("last", to_string(ans.status)), format_duration(cfg_.dns_breaker_cooldown));
      } else if (st.disabled) {
        st.disabled_until = steady::now() + cfg_.dns_breaker_cooldown;  // the trial failed
      }
      continue;
    }
    // Only a real answer says the list works again; a cached one says nothing new.
    if (!ans.from_cache) {
      if (st.disabled) {
        log(log_level::info, "dnsbl_list_restored", "{}", kv("list", list.zone));
        st.disabled = false;
      }
      st.failures = 0;
    }
    bool hit = false;
    for (const auto& rec : ans.records) {
      if (is_dnsbl_error_code(list, rec)) {
        ++st.error_codes;
        if (!st.last_error_log || steady::now() - *st.last_error_log > cfg_.dns_error_log_interval) {
          st.last_error_log = steady::now();
          log(log_level::error, "dnsbl_refused", "{} code={} count={} hint={}", kv("list", list.zone), rec,
              st.error_codes,
              log_quote("the list refuses our queries (public resolver, no subscription or excess use); "
                        "treated as not listed"));
        }
        add_detail(fmt::format("{}=refused:{}", list.zone, rec));
        continue;
      }
      if (!hit && dnsbl_matches(list, rec)) {
        hit = true;
        score += list.weight;
        add_detail(fmt::format("{}={}({:+})", list.zone, rec, list.weight));
        if (list.weight > 0 && (top_hit == nullptr || list.weight > top_hit->weight)) top_hit = &list;
      }
    }
  }
  if (cfg_.rdns_enable) {
    int s = 0;
    switch (rdns.first) {
      case rdns_result::no_ptr: s = cfg_.rdns_no_ptr_score; break;
      case rdns_result::unconfirmed: s = cfg_.rdns_unconfirmed_score; break;
      case rdns_result::confirmed:
      case rdns_result::unknown: break;
    }
    bool dyn =
        !rdns.second.empty() && rdns.first != rdns_result::no_ptr && looks_dynamic(rdns.second, client, dynamic_);
    if (dyn) s += cfg_.rdns_dynamic_score;
    score += s;
    add_detail(fmt::format("rdns={}{}{}", to_string(rdns.first), dyn ? ",dynamic" : "",
                           s != 0 ? fmt::format("({:+})", s) : std::string{}));
  }
  r.score = score;
  r.detail = detail;
  if (cfg_.rdns_enable && rdns.first == rdns_result::unknown) incomplete = true;
  auto outcome = judge_score(score, score_policy{cfg_.dnsbl_reject_score, cfg_.dnsbl_trust_score,
                                                 cfg_.dnsbl_selective_greylist, cfg_.dnsbl_greylist_score});
  if (outcome == score_outcome::reject) {
    r.v = verdict::reject;
    r.reason = "dnsbl";
    if (top_hit != nullptr) {
      std::string txt;
      if (!cfg_.dnsbl_hide_names) {
        auto t = co_await dns_.lookup(
            rev + "." + top_hit->zone, dns_type::txt,
            std::min(ctx.deadline, std::max(deadline, steady::now() + std::chrono::milliseconds{200})));
        if (t.status == dns_status::ok && !t.records.empty()) txt = t.records.front();
      }
      // Postfix replaces non-printable characters; we keep the text to one safe line.
      for (auto& c : txt) {
        if (static_cast<unsigned char>(c) < ' ' || static_cast<unsigned char>(c) > '~') c = ' ';
      }
      if (txt.size() > 300) txt.resize(300);
      r.action = fmt::format("554 5.7.1 Service unavailable; client [{}] blocked using {}{}", client,
                             shown_name(top_hit->zone), txt.empty() ? "" : "; " + txt);
    } else {
      r.reason = "dns_score";
      r.action =
          fmt::format("554 5.7.1 Service unavailable; client [{}] has a poor reputation (score {})", client, score);
    }
    co_return r;
  }
  if (outcome == score_outcome::trusted) {
    r.v = verdict::pass;
    r.reason = "dns_trusted";
    co_return r;
  }
  // A failed or skipped check is never evidence of a clean client.
  if (outcome == score_outcome::clean && !incomplete) {
    r.v = verdict::pass;
    r.reason = "dns_clean";
    co_return r;
  }
  if (score != 0) r.reason = "dns_score";
  if (incomplete) {
    r.degraded = true;
    r.reason += r.reason.empty() ? "degraded:dns" : ",degraded:dns";
  }
  co_return r;
}

}  // namespace lupine::policyd
