// IP addresses and networks: parsing client addresses, grouping them into the greylist
// network (/24 and /64 by default), and CIDR matching for allow-lists. Pure; never resolves
// names. IPv4-mapped IPv6 addresses (::ffff:192.0.2.1) are treated as IPv4.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/ip/address.hpp>

namespace lupine::policyd {

using ip_address = boost::asio::ip::address;

// nullopt when text is not an IPv4 or IPv6 address (Postfix sends bare text forms).
std::optional<ip_address> parse_ip(std::string_view text);

// The address's text form ("192.0.2.7", "2001:db8::1"). IPv4 without inet_ntop, whose
// sprintf was a visible cost with several calls per request.
std::string ip_to_string(const ip_address& a);

struct cidr {
  ip_address network;  // host bits cleared
  unsigned prefix = 0;
  bool contains(const ip_address& a) const;
  std::string to_string() const;  // "192.0.2.0/24"
};

// "192.0.2.0/24", "2001:db8::/32", a bare address (a /32 or /128), or a postgrey-style
// partial IPv4 address "10.1." / "10.1" (the octets given). nullopt when malformed.
std::optional<cidr> parse_cidr(std::string_view text);

// The network of a with the given prefix lengths: what greylisting keys on.
cidr group_network(const ip_address& a, unsigned v4_prefix, unsigned v6_prefix);

}  // namespace lupine::policyd
