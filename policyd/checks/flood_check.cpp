// Inbound flood control; see flood_check.hpp.
#include "policyd/checks/flood_check.hpp"

#include <fmt/format.h>

#include "core/log.hpp"
#include "policyd/net.hpp"

namespace lupine::policyd {

using std::chrono::duration_cast;

sys_time::duration gcra::wait(sys_time tat, sys_time now, std::uint64_t n, sys_time::duration window) {
  auto t = window / static_cast<sys_time::rep>(n);
  auto start = std::max(tat, now);
  auto ahead = start - now;  // how far the client is ahead of its allowance
  auto tolerance = window - t;
  return ahead > tolerance ? ahead - tolerance : sys_time::duration::zero();
}

sys_time gcra::next_tat(sys_time tat, sys_time now, std::uint64_t n, sys_time::duration window) {
  return std::max(tat, now) + window / static_cast<sys_time::rep>(n);
}

void flood_check::end_session(std::uint64_t connection) {
  auto it = sessions_.find(connection);
  if (it == sessions_.end()) return;
  auto dec = [](std::unordered_map<std::string, unsigned>& m, const std::string& k) {
    auto c = m.find(k);
    if (c != m.end() && --c->second == 0) m.erase(c);
  };
  dec(client_sessions_, it->second.client);
  dec(net_sessions_, it->second.net);
  sessions_.erase(it);
}

void flood_check::connection_closed(std::uint64_t connection) {
  end_session(connection);
}

void flood_check::sweep(sys_time now) {
  if (now - last_sweep_ < std::chrono::seconds{1} && rates_.size() <= cfg_.flood_max_tracked) return;
  last_sweep_ = now;
  std::vector<std::uint64_t> idle;
  for (const auto& [id, s] : sessions_) {
    if (now - s.last > cfg_.flood_session_idle) idle.push_back(id);
  }
  for (auto id : idle) end_session(id);
  if (rates_.size() > cfg_.flood_max_tracked) {
    // A key whose allowance is full again is the same as no key.
    std::erase_if(rates_, [now](const auto& kv) { return kv.second.tat <= now; });
    if (rates_.size() > cfg_.flood_max_tracked) {
      log(log_level::warning, "flood_table_full", "tracked={} max={}; forgetting all", rates_.size(),
          cfg_.flood_max_tracked);
      rates_.clear();
    }
  }
}

check_result flood_check::decide(const request_context& ctx) {
  check_result r;
  const auto& req = ctx.req;
  if (!cfg_.flood_enable) return r;
  auto addr = parse_ip(req.get("client_address"));
  bool counted = addr && req.get("sasl_username").empty();
  for (const auto& n : cfg_.flood_exempt) {
    if (counted && n.contains(*addr)) counted = false;
  }
  if (!counted) {
    // This connection now serves someone flood control does not count: whatever session
    // it carried before has ended.
    if (ctx.connection != 0) end_session(ctx.connection);
    return r;
  }
  auto now = ctx.now;
  sweep(now);
  auto client = ip_to_string(*addr);
  auto net = group_network(*addr, cfg_.greylist_ipv4_prefix, cfg_.greylist_ipv6_prefix).to_string();

  // Concurrent sessions.
  if (ctx.connection != 0 && (cfg_.flood_client_sessions > 0 || cfg_.flood_subnet_sessions > 0)) {
    auto& s = sessions_[ctx.connection];
    if (s.client != client) {
      if (!s.client.empty()) {
        end_session(ctx.connection);
        return decide(ctx);  // the entry is gone: start the new session afresh
      }
      s.client = client;
      s.net = net;
      ++client_sessions_[client];
      ++net_sessions_[net];
    }
    s.last = now;
    auto nc = client_sessions_[client];
    auto nn = net_sessions_[net];
    bool over_client = cfg_.flood_client_sessions > 0 && nc > cfg_.flood_client_sessions;
    bool over_net = cfg_.flood_subnet_sessions > 0 && nn > cfg_.flood_subnet_sessions;
    if (over_client || over_net) {
      end_session(ctx.connection);  // Postfix closes this SMTP session on 421
      r.v = verdict::defer;
      r.reason = over_client ? "flood_sessions" : "flood_subnet_sessions";
      r.detail = over_client ? fmt::format("sessions={}/{}", nc, cfg_.flood_client_sessions)
                             : fmt::format("subnet={} sessions={}/{}", net, nn, cfg_.flood_subnet_sessions);
      r.action =
          fmt::format("421 4.7.0 Too many concurrent sessions from {}, try again later", over_client ? client : net);
      return r;
    }
  }

  // Request rate.
  struct probe {
    const char* reason;
    std::string key;
    const flood_rate* rate;
  };
  probe probes[] = {{"flood_rate", "c:" + client, &cfg_.flood_client_rate},
                    {"flood_subnet_rate", "n:" + net, &cfg_.flood_subnet_rate}};
  for (auto& p : probes) {
    if (p.rate->count == 0) continue;
    auto it = rates_.find(p.key);
    if (it == rates_.end()) continue;
    auto w = gcra::wait(it->second.tat, now, p.rate->count, p.rate->window);
    if (w <= sys_time::duration::zero()) continue;
    auto secs = std::max<long long>(1, std::chrono::ceil<std::chrono::seconds>(w).count());
    bool is_client = p.key[0] == 'c';
    r.v = verdict::defer;
    r.reason = p.reason;
    r.detail = fmt::format("{}={} wait={}s", is_client ? "client" : "subnet", is_client ? client : net, secs);
    r.action = fmt::format("450 4.7.1 Too many requests from {}, slow down; retry in {} seconds",
                           is_client ? client : net, secs);
    if (now - it->second.logged > std::chrono::minutes{1}) {
      it->second.logged = now;
      log(log_level::info, "flood_limited", "{} {} rate={}/{}s", kv("key", p.key.substr(2)), kv("reason", p.reason),
          p.rate->count, duration_cast<std::chrono::seconds>(p.rate->window).count());
    }
    return r;
  }
  for (auto& p : probes) {
    if (p.rate->count == 0) continue;
    auto& e = rates_[p.key];
    e.tat = gcra::next_tat(e.tat, now, p.rate->count, p.rate->window);
  }
  return r;
}

boost::asio::awaitable<check_result> flood_check::evaluate(const request_context& ctx) {
  co_return decide(ctx);
}

}  // namespace lupine::policyd
