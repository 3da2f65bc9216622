// The Postfix policy delegation protocol (SMTPD_POLICY_README): requests are `name=value`
// lines ended by an empty line; replies are `action=...` plus an empty line.
//
// Input is untrusted. parse_request() never allocates past the limits and never throws:
// a line without `=`, an empty name, a NUL byte, a line, request or attribute count over its
// limit, or a request without `request=smtpd_access_policy` is a protocol_error, and the
// caller closes the connection without a reply (the protocol's "in case of trouble").
// Values are split at the first `=`, so values may hold `=` (SRS, BATV). A trailing CR is
// tolerated. Unknown and repeated attributes are kept in order; get() returns the first.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lupine::policyd {

struct protocol_limits {
  std::size_t max_line_bytes = 4096;
  std::size_t max_attributes = 100;
  std::size_t max_request_bytes = 32768;
};

class policy_request {
 public:
  using attribute = std::pair<std::string, std::string>;

  void add(std::string name, std::string value) { attrs_.emplace_back(std::move(name), std::move(value)); }
  // The first value of name, or "" when absent.
  std::string_view get(std::string_view name) const;
  bool has(std::string_view name) const;
  const std::vector<attribute>& attributes() const { return attrs_; }
  void clear() { attrs_.clear(); }

 private:
  std::vector<attribute> attrs_;
};

enum class protocol_error {
  none,
  no_equals,   // a line without '='
  empty_name,  // "=value"
  nul_byte,    // a NUL anywhere
  line_too_long,
  too_many_attributes,
  request_too_large,
  not_a_policy_request,  // missing or other `request=` value
};

std::string_view to_string(protocol_error e);

struct parse_result {
  enum class status { need_more, complete, error } state = status::need_more;
  std::size_t consumed = 0;  // bytes of the buffer that made the complete request
  protocol_error error = protocol_error::none;
};

// Looks for one complete request at the start of buf. On complete, req holds it and
// consumed says how many bytes to drop; on need_more nothing is consumed (req is cleared).
parse_result parse_request(std::string_view buf, const protocol_limits& limits, policy_request& req);

// "action=<action>\n\n"
std::string format_reply(std::string_view action);

}  // namespace lupine::policyd
