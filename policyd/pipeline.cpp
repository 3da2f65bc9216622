// Decision pipeline; see pipeline.hpp.
#include "policyd/pipeline.hpp"

namespace lupine::policyd {

std::string_view to_string(verdict v) {
  switch (v) {
    case verdict::continue_: return "dunno";
    case verdict::prepend: return "prepend";
    case verdict::pass: return "pass";
    case verdict::accept: return "accept";
    case verdict::defer_if_permit: return "defer_if_permit";
    case verdict::defer: return "defer";
    case verdict::reject: return "reject";
    case verdict::hold: return "hold";
  }
  return "unknown";
}

bool is_final(verdict v) {
  return v != verdict::continue_ && v != verdict::prepend;
}

decision decide(const std::vector<check_result>& results) {
  decision d;
  std::string header;
  for (const auto& r : results) {
    if (!r.reason.empty()) {
      if (!d.reason.empty()) d.reason += ',';
      d.reason += r.reason;
    }
    if (!r.detail.empty()) {
      if (!d.detail.empty()) d.detail += "; ";
      d.detail += r.detail;
    }
    d.score += r.score;
    d.degraded = d.degraded || r.degraded;
    if (r.v == verdict::prepend && header.empty()) header = r.header;
    if (is_final(r.v)) {
      d.v = r.v;
      if (r.v == verdict::pass) {
        d.action = "DUNNO";
      } else if (r.v == verdict::accept && r.action.empty()) {
        d.action = "OK";
      } else {
        d.action = r.action;
      }
      break;
    }
  }
  bool lets_through = d.v == verdict::continue_ || d.v == verdict::pass || d.v == verdict::prepend;
  if (lets_through && !header.empty()) {
    d.v = verdict::prepend;
    d.action = "PREPEND " + header;
  }
  return d;
}

boost::asio::awaitable<decision> pipeline::run(const request_context& ctx) const {
  std::vector<check_result> results;
  results.reserve(checks_.size());
  for (const auto& c : checks_) {
    results.push_back(co_await c->evaluate(ctx));
    if (is_final(results.back().v)) break;
  }
  co_return decide(results);
}

}  // namespace lupine::policyd
