// Fuzz target: the policy protocol parser (policyd/protocol.hpp), fed as policyd's session
// loop feeds it (server.cpp): bytes arrive in chunks of random size, are appended to a buffer,
// parse_request() runs until it needs more, and each complete request is erased from the front.
// Besides crashes and sanitizer reports it checks the parser's contract: the buffer never
// grows past max_request_bytes while waiting, complete requests hold only well-formed
// attributes within the limits, format_reply() frames one line, and the outcome does not
// depend on how the stream was cut into chunks (a whole-buffer run is the reference).
// Each input runs with the default limits and with the smallest ones the config allows.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "fuzz_check.hpp"
#include "policyd/protocol.hpp"

namespace {

using lupine::fuzz::check;
using lupine::policyd::format_reply;
using lupine::policyd::parse_request;
using lupine::policyd::parse_result;
using lupine::policyd::policy_request;
using lupine::policyd::protocol_error;
using lupine::policyd::protocol_limits;
using status = parse_result::status;

struct outcome {
  std::vector<std::vector<policy_request::attribute>> requests;
  status last = status::need_more;
  protocol_error error = protocol_error::none;
  // Which limit is noticed first may depend on what has arrived (an over-long request with too
  // many attributes), and only the log line differs; the requests served and whether the
  // connection is closed must not.
  bool same_effect(const outcome& o) const { return requests == o.requests && last == o.last; }
};

void check_complete(const parse_result& pr, std::string_view buf, const protocol_limits& limits,
                    const policy_request& req) {
  check(pr.consumed > 0 && pr.consumed <= buf.size(), "complete: consumed out of range");
  check(pr.consumed <= limits.max_request_bytes, "complete: request larger than max_request_bytes");
  check(buf[pr.consumed - 1] == '\n', "complete: consumed does not end at a line end");
  check(pr.error == protocol_error::none, "complete: error set");
  const auto& attrs = req.attributes();
  check(!attrs.empty() && attrs.size() <= limits.max_attributes, "complete: attribute count out of range");
  check(req.get("request") == "smtpd_access_policy", "complete: not an smtpd_access_policy request");
  for (const auto& [name, value] : attrs) {
    check(!name.empty(), "complete: empty attribute name");
    check(name.find('=') == std::string::npos, "complete: '=' in a name", name);
    check(name.find_first_of(std::string_view{"\n\0", 2}) == std::string::npos, "complete: LF or NUL in a name", name);
    check(value.find_first_of(std::string_view{"\n\0", 2}) == std::string::npos, "complete: LF or NUL in a value",
          value);
    check(name.size() + 1 + value.size() <= limits.max_line_bytes, "complete: line longer than max_line_bytes", value);
    // Replies are never built from request values today; framing must hold if they were.
    auto reply = format_reply(value);
    check(reply == "action=" + value + "\n\n", "format_reply: unexpected text", reply);
    check(reply.find('\n') == reply.size() - 2, "format_reply: more than one line", reply);
  }
  // What server.cpp derives from a request for the event log.
  (void)lupine::parse_uint(req.get("recipient_count"));
  (void)lupine::parse_uint(req.get("size"));
}

// One session: data arrives in chunks of chunk() bytes (at most what is left).
template <class Chunk>
outcome run_session(std::string_view data, const protocol_limits& limits, Chunk chunk) {
  outcome out;
  std::string buf;
  policy_request req;
  std::size_t fed = 0;
  while (true) {
    auto pr = parse_request(buf, limits, req);
    if (pr.state == status::error) {
      check(pr.error != protocol_error::none, "error: no error code");
      check(req.attributes().empty(), "error: request not cleared");
      out.last = status::error;
      out.error = pr.error;
      return out;
    }
    if (pr.state == status::complete) {
      check_complete(pr, buf, limits, req);
      out.requests.push_back(req.attributes());
      buf.erase(0, pr.consumed);
      continue;
    }
    check(pr.consumed == 0 && pr.error == protocol_error::none, "need_more: consumed or error set");
    check(req.attributes().empty(), "need_more: request not cleared");
    // server.cpp keeps buf between reads: this bound is what keeps a session's memory bounded.
    check(buf.size() <= limits.max_request_bytes, "need_more: buffer past max_request_bytes");
    if (fed == data.size()) return out;
    auto n = std::min(chunk(), data.size() - fed);
    buf.append(data.substr(fed, n));
    fed += n;
  }
}

std::string describe(const outcome& o) {
  std::string s = std::to_string(o.requests.size()) + " requests, then ";
  s += o.last == status::error ? "error " + std::string{to_string(o.error)} : std::string{"need_more"};
  return s;
}

void one_run(std::string_view data, const protocol_limits& limits) {
  auto whole = run_session(data, limits, [] { return std::numeric_limits<std::size_t>::max(); });
  lupine::fuzz::input_rng rng{data};
  // Mostly small reads (segments, partial lines), now and then a full 4 KiB read as server.cpp does.
  auto chunked =
      run_session(data, limits, [&rng] { return rng.next() % 8 == 0 ? rng.between(1, 4096) : rng.between(1, 24); });
  if (!whole.same_effect(chunked)) {
    lupine::fuzz::broken("the outcome depends on how the stream is chunked",
                         "whole buffer: " + describe(whole) + "; in chunks: " + describe(chunked));
  }
  // One byte at a time shows the parser every prefix (every possible segment boundary); each
  // call rescans the buffer, so only for short inputs.
  if (data.size() <= 512) {
    auto bytewise = run_session(data, limits, [] { return std::size_t{1}; });
    if (!whole.same_effect(bytewise)) {
      lupine::fuzz::broken("the outcome depends on how the stream is chunked",
                           "whole buffer: " + describe(whole) + "; byte by byte: " + describe(bytewise));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};
  one_run(in, protocol_limits{});
  // The smallest limits policyd's config accepts (protocol.* keys): limits are reached often.
  one_run(in, protocol_limits{.max_line_bytes = 64, .max_attributes = 8, .max_request_bytes = 256});
  return 0;
}
