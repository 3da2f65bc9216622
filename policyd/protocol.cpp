// Policy protocol codec; see protocol.hpp. Pure: no I/O, no logging.
#include "policyd/protocol.hpp"

#include <algorithm>
#include <cstring>

namespace lupine::policyd {

std::string_view policy_request::get(std::string_view name) const {
  for (const auto& [n, v] : attrs_) {
    if (n == name) return v;
  }
  return {};
}

bool policy_request::has(std::string_view name) const {
  return std::any_of(attrs_.begin(), attrs_.end(), [&](const attribute& a) { return a.first == name; });
}

std::string_view to_string(protocol_error e) {
  switch (e) {
    case protocol_error::none: return "none";
    case protocol_error::no_equals: return "line without '='";
    case protocol_error::empty_name: return "empty attribute name";
    case protocol_error::nul_byte: return "NUL byte in request";
    case protocol_error::line_too_long: return "line too long";
    case protocol_error::too_many_attributes: return "too many attributes";
    case protocol_error::request_too_large: return "request too large";
    case protocol_error::not_a_policy_request: return "not an smtpd_access_policy request";
  }
  return "unknown";
}

parse_result parse_request(std::string_view buf, const protocol_limits& limits, policy_request& req) {
  req.clear();
  parse_result r;
  auto fail = [&](protocol_error e) {
    r.state = parse_result::status::error;
    r.error = e;
    req.clear();
    return r;
  };
  std::size_t pos = 0;
  std::size_t count = 0;
  while (true) {
    if (pos > limits.max_request_bytes) return fail(protocol_error::request_too_large);
    auto nl = buf.find('\n', pos);
    if (nl == std::string_view::npos) {
      // Incomplete line: enforce the limits on what has arrived so far.
      if (std::memchr(buf.data() + pos, '\0', buf.size() - pos) != nullptr) return fail(protocol_error::nul_byte);
      // A CR at the end may be the first half of a CRLF whose LF is still on its way: the
      // verdict must not depend on where the reads split the stream.
      std::size_t partial = buf.size() - pos;
      if (partial > 0 && buf.back() == '\r') --partial;
      if (partial > limits.max_line_bytes) return fail(protocol_error::line_too_long);
      if (buf.size() > limits.max_request_bytes) return fail(protocol_error::request_too_large);
      req.clear();
      return r;
    }
    std::string_view line = buf.substr(pos, nl - pos);
    pos = nl + 1;
    // A NUL can never be part of a request (names and values never hold one).
    if (std::memchr(line.data(), '\0', line.size()) != nullptr) return fail(protocol_error::nul_byte);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > limits.max_line_bytes) return fail(protocol_error::line_too_long);
    if (line.empty()) {
      if (pos > limits.max_request_bytes) return fail(protocol_error::request_too_large);
      if (req.get("request") != "smtpd_access_policy") return fail(protocol_error::not_a_policy_request);
      r.state = parse_result::status::complete;
      r.consumed = pos;
      return r;
    }
    auto eq = line.find('=');
    if (eq == std::string_view::npos) return fail(protocol_error::no_equals);
    if (eq == 0) return fail(protocol_error::empty_name);
    if (++count > limits.max_attributes) return fail(protocol_error::too_many_attributes);
    req.add(std::string{line.substr(0, eq)}, std::string{line.substr(eq + 1)});
  }
}

std::string format_reply(std::string_view action) {
  std::string out;
  out.reserve(action.size() + 9);
  out += "action=";
  out += action;
  out += "\n\n";
  return out;
}

}  // namespace lupine::policyd
