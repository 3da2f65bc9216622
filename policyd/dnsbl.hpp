// DNSBL/DNSWL list entries and the pure parts of DNS reputation: postscreen-style
// `zone[=filter]*weight` parsing, answer filtering, error-code detection, reverse-DNS
// classification. No I/O.
//
// Filter syntax (postscreen_dnsbl_sites): four dot-separated octet patterns, each a number,
// `[n..m]`, or `[a;b;n..m]`; e.g. `zen.spamhaus.org=127.0.0.[2..11]*3`. No filter means any
// answer in 127.0.0.0/8 except the error codes. A negative weight makes an allow-list.
#pragma once

#include <array>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lupine::policyd {

struct octet_pattern {
  std::vector<std::pair<unsigned, unsigned>> ranges;  // inclusive
  bool matches(unsigned v) const;
};

struct dnsbl_list {
  std::string zone;  // lower-case, no trailing dot
  std::optional<std::array<octet_pattern, 4>> filter;
  int weight = 1;
  std::string text;  // as configured, for logs
  bool allow() const { return weight < 0; }
};

// Parses one entry; on error returns nullopt and sets error to a sentence naming the problem.
std::optional<dnsbl_list> parse_dnsbl_entry(std::string_view entry, std::string& error);

// Is this answer address one of the "query refused / public resolver / typo" codes that
// mean the list is not usable (127.255.255.0/24; for allow-lists also 127.0.0.255)?
bool is_dnsbl_error_code(const dnsbl_list& l, std::string_view answer);

// Does the answer address count as a listing for l (filter, or 127/8 when none)?
bool dnsbl_matches(const dnsbl_list& l, std::string_view answer);

// What a client's summed DNS score means, by the dnsbl.* thresholds.
struct score_policy {
  int reject_score = 3;  // >= : reject
  int trust_score = -1;  // <= : trusted, skip greylisting
  bool selective_greylist = false;
  int greylist_score = 1;  // with selective greylisting: greylist only from this score
};
enum class score_outcome { reject, trusted, clean, neutral };
std::string_view to_string(score_outcome o);
// Reject wins over trust (validation keeps trust_score < reject_score anyway).
score_outcome judge_score(int score, const score_policy& p);

enum class rdns_result { confirmed, no_ptr, unconfirmed, unknown };
std::string_view to_string(rdns_result r);

// Forward-confirmed reverse DNS: the PTR name's addresses contain the client.
rdns_result classify_rdns(bool ptr_found, const std::vector<std::string>& forward_addresses,
                          std::string_view client_address);

// Does a name look dynamic or generic: it matches one of the patterns, or it carries the
// client's address in its labels (192-0-2-7, 7.2.0.192, 192.0.2.7, 3221226247)?
bool looks_dynamic(std::string_view name, std::string_view client_address, const std::vector<std::regex>& patterns);

// The default dynamic-name patterns (documented in docs/dns.md).
const std::vector<std::string>& default_dynamic_patterns();

}  // namespace lupine::policyd
