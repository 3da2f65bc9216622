// DNSBL entries and reverse-DNS classification; see dnsbl.hpp.
#include "policyd/dnsbl.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>

#include "core/text.hpp"
#include "policyd/net.hpp"

namespace lupine::policyd {
namespace {

bool parse_num(std::string_view t, unsigned& out) {
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), out);
  return ec == std::errc{} && p == t.data() + t.size() && !t.empty() && out <= 255;
}

bool parse_octet(std::string_view t, octet_pattern& out) {
  if (t.size() >= 2 && t.front() == '[' && t.back() == ']') {
    t = t.substr(1, t.size() - 2);
    while (true) {
      auto semi = t.find(';');
      auto item = t.substr(0, semi);
      auto dots = item.find("..");
      unsigned a = 0, b = 0;
      if (dots == std::string_view::npos) {
        if (!parse_num(item, a)) return false;
        b = a;
      } else if (!parse_num(item.substr(0, dots), a) || !parse_num(item.substr(dots + 2), b) || a > b) {
        return false;
      }
      out.ranges.emplace_back(a, b);
      if (semi == std::string_view::npos) break;
      t.remove_prefix(semi + 1);
    }
    return !out.ranges.empty();
  }
  unsigned v = 0;
  if (!parse_num(t, v)) return false;
  out.ranges.emplace_back(v, v);
  return true;
}

std::optional<std::array<unsigned, 4>> octets(std::string_view a) {
  auto ip = parse_ip(a);
  if (!ip || !ip->is_v4()) return std::nullopt;
  auto b = ip->to_v4().to_bytes();
  return std::array<unsigned, 4>{b[0], b[1], b[2], b[3]};
}

}  // namespace

bool octet_pattern::matches(unsigned v) const {
  return std::any_of(ranges.begin(), ranges.end(), [v](const auto& r) { return v >= r.first && v <= r.second; });
}

std::optional<dnsbl_list> parse_dnsbl_entry(std::string_view entry, std::string& error) {
  dnsbl_list l;
  l.text = std::string{entry};
  std::string_view rest = entry;
  if (auto star = rest.rfind('*'); star != std::string_view::npos) {
    auto w = rest.substr(star + 1);
    int weight = 0;
    auto [p, ec] = std::from_chars(w.data(), w.data() + w.size(), weight);
    if (ec != std::errc{} || p != w.data() + w.size() || w.empty() || weight == 0 || weight < -1000 || weight > 1000) {
      error = "weight after '*' must be a non-zero integer between -1000 and 1000";
      return std::nullopt;
    }
    l.weight = weight;
    rest = rest.substr(0, star);
  }
  auto eq = rest.find('=');
  std::string_view zone = rest.substr(0, eq);
  while (!zone.empty() && zone.back() == '.') zone.remove_suffix(1);
  if (zone.empty() || zone.find('.') == std::string_view::npos ||
      !std::all_of(zone.begin(), zone.end(),
                   [](unsigned char c) { return std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_'; })) {
    error = "expected a DNS zone such as zen.spamhaus.org before '=' or '*'";
    return std::nullopt;
  }
  if (zone.front() == '.' || zone.find("..") != std::string_view::npos) {
    error = "the zone has an empty label";
    return std::nullopt;
  }
  l.zone = ascii_lower(zone);
  if (eq != std::string_view::npos) {
    auto f = rest.substr(eq + 1);
    std::array<octet_pattern, 4> pats;
    for (int i = 0; i < 4; ++i) {
      auto dot = i < 3 ? f.find('.') : std::string_view::npos;
      // A '.' inside [n..m] is not an octet separator.
      if (i < 3 && f.substr(0, 1) == "[") dot = f.find(']') == std::string_view::npos ? dot : f.find(']') + 1;
      auto part = f.substr(0, dot);
      if (!parse_octet(part, pats[static_cast<std::size_t>(i)])) {
        error = fmt::format("bad filter '{}': expected 4 octets like 127.0.0.[2..11]", rest.substr(eq + 1));
        return std::nullopt;
      }
      if (i < 3) {
        if (dot == std::string_view::npos || dot >= f.size() || f[dot] != '.') {
          error = fmt::format("bad filter '{}': expected 4 octets like 127.0.0.[2..11]", rest.substr(eq + 1));
          return std::nullopt;
        }
        f.remove_prefix(dot + 1);
      }
    }
    l.filter = pats;
  }
  return l;
}

bool is_dnsbl_error_code(const dnsbl_list& l, std::string_view answer) {
  auto o = octets(answer);
  if (!o) return false;
  if ((*o)[0] == 127 && (*o)[1] == 255 && (*o)[2] == 255) return true;
  return l.allow() && (*o)[0] == 127 && (*o)[1] == 0 && (*o)[2] == 0 && (*o)[3] == 255;
}

bool dnsbl_matches(const dnsbl_list& l, std::string_view answer) {
  auto o = octets(answer);
  if (!o || is_dnsbl_error_code(l, answer)) return false;
  if (!l.filter) return (*o)[0] == 127;
  for (std::size_t i = 0; i < 4; ++i) {
    if (!(*l.filter)[i].matches((*o)[i])) return false;
  }
  return true;
}

std::string_view to_string(score_outcome o) {
  switch (o) {
    case score_outcome::reject: return "reject";
    case score_outcome::trusted: return "trusted";
    case score_outcome::clean: return "clean";
    case score_outcome::neutral: return "neutral";
  }
  return "?";
}

score_outcome judge_score(int score, const score_policy& p) {
  if (score >= p.reject_score) return score_outcome::reject;
  if (score <= p.trust_score) return score_outcome::trusted;
  if (p.selective_greylist && score < p.greylist_score) return score_outcome::clean;
  return score_outcome::neutral;
}

std::string_view to_string(rdns_result r) {
  switch (r) {
    case rdns_result::confirmed: return "confirmed";
    case rdns_result::no_ptr: return "no_ptr";
    case rdns_result::unconfirmed: return "unconfirmed";
    case rdns_result::unknown: return "unknown";
  }
  return "?";
}

rdns_result classify_rdns(bool ptr_found, const std::vector<std::string>& forward, std::string_view client) {
  if (!ptr_found) return rdns_result::no_ptr;
  auto c = parse_ip(client);
  if (!c) return rdns_result::unknown;
  for (const auto& f : forward) {
    if (auto a = parse_ip(f); a && *a == *c) return rdns_result::confirmed;
  }
  return rdns_result::unconfirmed;
}

bool looks_dynamic(std::string_view name, std::string_view client, const std::vector<std::regex>& patterns) {
  std::string n = ascii_lower(name);
  for (const auto& re : patterns) {
    if (std::regex_search(n, re)) return true;
  }
  if (auto o = octets(client)) {
    const auto& v = *o;
    for (auto form :
         {fmt::format("{}-{}-{}-{}", v[0], v[1], v[2], v[3]), fmt::format("{}-{}-{}-{}", v[3], v[2], v[1], v[0]),
          fmt::format("{}.{}.{}.{}", v[3], v[2], v[1], v[0]), fmt::format("{}.{}.{}.{}", v[0], v[1], v[2], v[3]),
          std::to_string((v[0] << 24) | (v[1] << 16) | (v[2] << 8) | v[3])}) {
      if (n.find(form) != std::string::npos) return true;
    }
  }
  return false;
}

const std::vector<std::string>& default_dynamic_patterns() {
  static const std::vector<std::string> p{
      R"((^|[.-])(dyn|dynamic|dhcp|dialup|dial-?in|ppp|pppoe|adsl|dsl|cable|pool|broadband|customer|client|static|res|residential|user)[0-9-])",
      R"((^|[.-])(dyn|dynamic|dhcp|ppp|pppoe|adsl|dsl|pool|broadband)[.-])",
  };
  return p;
}

}  // namespace lupine::policyd
