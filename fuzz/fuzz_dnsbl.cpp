// Fuzz target: the small policyd parsers that read configured or DNS-supplied text:
// parse_dnsbl_entry() (postscreen `zone[=filter]*weight`, policyd/dnsbl.hpp) with
// dnsbl_matches() and is_dnsbl_error_code() on answers, parse_ip() and parse_cidr()
// (policyd/net.hpp) with cidr::contains() and group_network(), and parse_limit()
// (policyd/limits.hpp). Input: the first line is a list entry; every further line is tried
// as an answer address, an address or network and a limit; four bytes of each line also
// make an IPv4 answer, so filters are hit without the fuzzer having to spell dotted quads.
// Checked contracts: networks have no host bits set and round-trip through to_string(),
// contains() agrees with a bitwise reference, limit windows are whole minutes in 1m..7d.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "policyd/dnsbl.hpp"
#include "policyd/limits.hpp"
#include "policyd/net.hpp"

namespace {

using lupine::fuzz::check;
using namespace lupine::policyd;

std::vector<std::uint8_t> bytes_of(const ip_address& a) {
  if (a.is_v4()) {
    auto b = a.to_v4().to_bytes();
    return {b.begin(), b.end()};
  }
  auto b = a.to_v6().to_bytes();
  return {b.begin(), b.end()};
}

// Do a and b agree on their first prefix bits?
bool same_prefix(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b, unsigned prefix) {
  for (unsigned bit = 0; bit < prefix; ++bit) {
    unsigned mask = 0x80U >> (bit % 8);
    if ((a.at(bit / 8) & mask) != (b.at(bit / 8) & mask)) return false;
  }
  return true;
}

void check_network(const cidr& c, std::string_view from) {
  auto nb = bytes_of(c.network);
  unsigned width = c.network.is_v4() ? 32 : 128;
  check(c.prefix <= width, "cidr: prefix longer than the address", from);
  check(!(c.network.is_v6() && c.network.to_v6().is_v4_mapped()), "cidr: network is IPv4-mapped", from);
  for (unsigned bit = c.prefix; bit < width; ++bit) {
    check((nb.at(bit / 8) & (0x80U >> (bit % 8))) == 0, "cidr: host bits set in the network", from);
  }
  check(c.contains(c.network), "cidr: does not contain its own network", from);
  auto again = parse_cidr(c.to_string());
  check(again && again->network == c.network && again->prefix == c.prefix, "cidr: to_string() does not round-trip",
        c.to_string());
}

void check_contains(const cidr& c, const ip_address& a) {
  bool want = a.is_v4() == c.network.is_v4() && same_prefix(bytes_of(a), bytes_of(c.network), c.prefix);
  check(c.contains(a) == want, "cidr::contains disagrees with the bitwise reference",
        c.to_string() + " " + a.to_string());
}

void check_limit(std::string_view text, measure m) {
  send_limit l;
  auto err = parse_limit(text, m, l);
  if (!err.empty()) return;
  check(l.what == m, "parse_limit: wrong measure", text);
  check(l.window >= std::chrono::minutes{1} && l.window <= std::chrono::hours{24 * 7} &&
            l.window % std::chrono::minutes{1} == std::chrono::seconds{0},
        "parse_limit: window not whole minutes in 1m..7d", text);
  check(!l.max || *l.max >= 0, "parse_limit: negative max", text);
  if (l.max) (void)describe_limit(m, *l.max, l.window);
}

void check_answer(const dnsbl_list& l, const std::string& answer) {
  bool listed = dnsbl_matches(l, answer);
  bool error = is_dnsbl_error_code(l, answer);
  check(!(listed && error), "dnsbl: an error code counts as a listing", answer);
  if (listed) {
    auto a = parse_ip(answer);
    check(a && a->is_v4(), "dnsbl: a listing that is not an IPv4 address", answer);
    check(l.filter || a->to_v4().to_bytes()[0] == 127, "dnsbl: unfiltered listing outside 127/8", answer);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};
  std::vector<std::string_view> lines;
  while (!in.empty() && lines.size() < 64) {
    auto nl = in.find('\n');
    lines.push_back(in.substr(0, nl));
    if (nl == std::string_view::npos) break;
    in.remove_prefix(nl + 1);
  }
  if (lines.empty()) return 0;

  std::string error;
  auto list = parse_dnsbl_entry(lines[0], error);
  if (list) {
    check(!list->zone.empty() && list->zone.back() != '.', "dnsbl: empty zone or trailing dot", lines[0]);
    check(list->weight != 0 && list->weight >= -1000 && list->weight <= 1000, "dnsbl: weight out of range", lines[0]);
    check(list->text == lines[0], "dnsbl: text is not the entry", lines[0]);
    if (list->filter) {
      for (const auto& o : *list->filter) {
        check(!o.ranges.empty(), "dnsbl: octet without a range", lines[0]);
        for (auto [lo, hi] : o.ranges) check(lo <= hi && hi <= 255, "dnsbl: bad octet range", lines[0]);
      }
    }
  } else {
    check(!error.empty(), "dnsbl: rejected without a reason", lines[0]);
  }

  std::vector<cidr> nets;
  std::vector<ip_address> addrs;
  static constexpr std::array<measure, 5> measures{measure::messages, measure::recipients, measure::bytes,
                                                   measure::distinct_recipients, measure::distinct_domains};
  for (std::size_t i = 1; i < lines.size(); ++i) {
    auto line = lines[i];
    if (list) {
      check_answer(*list, std::string{line});
      if (line.size() >= 4) {
        auto octet = [&line](std::size_t k) { return std::to_string(static_cast<unsigned char>(line[k])); };
        check_answer(*list, "127." + octet(1) + "." + octet(2) + "." + octet(3));
        check_answer(*list, octet(0) + "." + octet(1) + "." + octet(2) + "." + octet(3));
      }
    }
    if (auto a = parse_ip(line)) {
      check(!(a->is_v6() && a->to_v6().is_v4_mapped()), "parse_ip: IPv4-mapped address kept", line);
      auto again = parse_ip(a->to_string());
      check(again && *again == *a, "parse_ip: to_string() does not round-trip", line);
      auto p = static_cast<unsigned>(line.size());
      auto g = group_network(*a, p % 33, p % 129);
      check_network(g, line);
      check(g.contains(*a), "group_network: does not contain the address", line);
      if (addrs.size() < 16) addrs.push_back(*a);
    }
    if (auto c = parse_cidr(line)) {
      check_network(*c, line);
      if (nets.size() < 16) nets.push_back(*c);
    }
    check_limit(line, measures.at(i % measures.size()));
  }
  for (const auto& c : nets) {
    for (const auto& a : addrs) check_contains(c, a);
  }
  return 0;
}
