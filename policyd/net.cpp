// Address grouping and CIDR matching; see net.hpp.
#include "policyd/net.hpp"

#include <charconv>

#include <boost/asio/ip/address_v4.hpp>
#include <boost/asio/ip/address_v6.hpp>

namespace lupine::policyd {
namespace ip = boost::asio::ip;

namespace {

ip_address unmap(const ip_address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  }
  return a;
}

ip_address mask(const ip_address& a, unsigned prefix) {
  if (a.is_v4()) {
    auto v = a.to_v4().to_uint();
    std::uint32_t m = prefix == 0 ? 0 : (prefix >= 32 ? 0xffffffffU : ~((1U << (32 - prefix)) - 1));
    return ip::address_v4{v & m};
  }
  auto bytes = a.to_v6().to_bytes();
  for (unsigned i = 0; i < 16; ++i) {
    unsigned bit = i * 8;
    if (bit >= prefix) {
      bytes[i] = 0;
    } else if (prefix - bit < 8) {
      bytes[i] = static_cast<unsigned char>(bytes[i] & (0xff << (8 - (prefix - bit))));
    }
  }
  return ip::address_v6{bytes};
}

}  // namespace

std::optional<ip_address> parse_ip(std::string_view text) {
  // Postfix never sends a scope ("fe80::1%eth0"), and PostgreSQL's inet refuses one.
  if (text.find('%') != std::string_view::npos) return std::nullopt;
  boost::system::error_code ec;
  auto a = ip::make_address(std::string{text}, ec);
  if (ec) return std::nullopt;
  return unmap(a);
}

bool cidr::contains(const ip_address& a) const {
  auto u = unmap(a);
  if (u.is_v4() != network.is_v4()) return false;
  return mask(u, prefix) == network;
}

std::string ip_to_string(const ip_address& a) {
  if (!a.is_v4()) return a.to_string();
  auto b = a.to_v4().to_bytes();
  char buf[16];
  char* p = buf;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i > 0) *p++ = '.';
    unsigned v = b[i];
    if (v >= 100) *p++ = static_cast<char>('0' + v / 100);
    if (v >= 10) *p++ = static_cast<char>('0' + v / 10 % 10);
    *p++ = static_cast<char>('0' + v % 10);
  }
  return std::string{buf, p};
}

std::string cidr::to_string() const {
  auto out = ip_to_string(network);
  out += '/';
  out += std::to_string(prefix);
  return out;
}

std::optional<cidr> parse_cidr(std::string_view text) {
  if (text.empty()) return std::nullopt;
  auto slash = text.find('/');
  if (slash != std::string_view::npos) {
    boost::system::error_code ec0;
    auto raw = ip::make_address(std::string{text.substr(0, slash)}, ec0);
    std::optional<ip_address> a;
    if (!ec0) a = raw;
    auto ptext = text.substr(slash + 1);
    unsigned p = 0;
    auto [end, ec] = std::from_chars(ptext.data(), ptext.data() + ptext.size(), p);
    if (!a || ec != std::errc{} || end != ptext.data() + ptext.size() || ptext.empty()) return std::nullopt;
    if (p > (a->is_v4() ? 32U : 128U)) return std::nullopt;
    // ::ffff:192.0.2.0/120 is the IPv4 network 192.0.2.0/24 (clients arrive unmapped).
    if (a->is_v6() && a->to_v6().is_v4_mapped()) {
      if (p < 96) return std::nullopt;
      auto v4 = unmap(*a);
      return cidr{mask(v4, p - 96), p - 96};
    }
    return cidr{mask(*a, p), p};
  }
  if (auto a = parse_ip(text)) return cidr{*a, a->is_v4() ? 32U : 128U};
  // postgrey partial IPv4: "10.", "10.1", "192.168.1." -> the octets given.
  std::string_view t = text;
  if (t.back() == '.') t.remove_suffix(1);
  unsigned octets[4] = {0, 0, 0, 0};
  unsigned n = 0;
  while (!t.empty()) {
    if (n == 4) return std::nullopt;
    auto dot = t.find('.');
    auto part = t.substr(0, dot);
    unsigned v = 0;
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc{} || end != part.data() + part.size() || part.empty() || v > 255) return std::nullopt;
    octets[n++] = v;
    if (dot == std::string_view::npos) break;
    t.remove_prefix(dot + 1);
    if (t.empty()) return std::nullopt;  // "10..1"
  }
  if (n == 0 || n == 4) return std::nullopt;
  std::uint32_t v = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3];
  return cidr{ip::address_v4{v}, n * 8};
}

cidr group_network(const ip_address& a, unsigned v4_prefix, unsigned v6_prefix) {
  auto u = unmap(a);
  unsigned p = u.is_v4() ? v4_prefix : v6_prefix;
  return cidr{mask(u, p), p};
}

}  // namespace lupine::policyd
