// Unit tests for address parsing, greylist network grouping and CIDR matching.
#include <doctest/doctest.h>

#include <optional>
#include <string>

#include <boost/asio/ip/address.hpp>

#include "policyd/net.hpp"

namespace {

using lupine::policyd::cidr;
using lupine::policyd::group_network;
using lupine::policyd::ip_address;
using lupine::policyd::ip_to_string;
using lupine::policyd::parse_cidr;
using lupine::policyd::parse_ip;

std::string show(const std::optional<ip_address>& a) {
  return a ? a->to_string() : std::string{"nullopt"};
}
std::string show(const std::optional<cidr>& c) {
  return c ? c->to_string() : std::string{"nullopt"};
}

// An address as boost parses it, without parse_ip's v4-mapped unwrapping.
ip_address raw(const char* text) {
  return boost::asio::ip::make_address(text);
}

}  // namespace

TEST_SUITE("net") {
  TEST_CASE("parses the address forms Postfix sends and refuses anything else") {
    struct tc {
      const char* label;
      std::string input;
      std::string want;  // canonical text, "" for nullopt
      bool v4;
    };
    const tc cases[] = {
        {"IPv4", "192.0.2.1", "192.0.2.1", true},
        {"IPv6", "2001:db8::1", "2001:db8::1", false},
        {"IPv6 long form", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1", false},
        {"IPv6 loopback", "::1", "::1", false},
        {"IPv4-mapped becomes IPv4", "::ffff:192.0.2.1", "192.0.2.1", true},
        {"IPv4-mapped upper-case", "::FFFF:198.51.100.7", "198.51.100.7", true},
        {"empty", "", "", false},
        {"hostname", "mail.example.com", "", false},
        {"unknown", "unknown", "", false},
        {"three octets", "192.0.2", "", false},
        {"five octets", "192.0.2.1.5", "", false},
        {"octet over 255", "256.0.2.1", "", false},
        {"trailing space", "192.0.2.1 ", "", false},
        {"with a prefix", "192.0.2.0/24", "", false},
        {"bracketed IPv6", "[2001:db8::1]", "", false},
        {"two double colons", "2001::db8::1", "", false},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = parse_ip(c.input);
        if (c.want.empty()) {
          CHECK_MESSAGE(!got, "input \"", c.input, "\": got ", show(got), ", want nullopt");
        } else {
          REQUIRE_MESSAGE(got, "input \"", c.input, "\": got nullopt, want ", c.want);
          CHECK_MESSAGE(got->to_string() == c.want, "got ", show(got), ", want ", c.want);
          CHECK_MESSAGE(got->is_v4() == c.v4, "got is_v4=", got->is_v4(), ", want ", c.v4);
        }
      }
    }
  }

  TEST_CASE("prints an address as inet_ntop does") {
    for (const char* text :
         {"0.0.0.0", "1.2.3.4", "9.10.99.100", "192.0.2.255", "255.255.255.255", "10.0.100.7", "2001:db8::1", "::1"}) {
      auto a = parse_ip(text);
      REQUIRE(a);
      CHECK(ip_to_string(*a) == a->to_string());
      CHECK(ip_to_string(*a) == text);
    }
    CHECK(ip_to_string(*parse_ip("::ffff:192.0.2.7")) == "192.0.2.7");  // mapped: IPv4
  }

  TEST_CASE("groups a client into its greylist network by the configured prefix lengths") {
    struct tc {
      const char* label;
      const char* address;
      unsigned v4_prefix;
      unsigned v6_prefix;
      std::string want;
    };
    const tc cases[] = {
        {"IPv4 default /24", "192.0.2.77", 24, 64, "192.0.2.0/24"},
        {"IPv6 default /64", "2001:db8:1:2:3:4:5:6", 24, 64, "2001:db8:1:2::/64"},
        {"IPv4 /16", "198.51.100.200", 16, 64, "198.51.0.0/16"},
        {"IPv4 /32 keeps the address", "198.51.100.200", 32, 64, "198.51.100.200/32"},
        {"IPv4 /8", "10.20.30.40", 8, 64, "10.0.0.0/8"},
        {"IPv4 not on an octet boundary", "192.0.2.77", 26, 64, "192.0.2.64/26"},
        {"IPv6 /48", "2001:db8:1:2:3:4:5:6", 24, 48, "2001:db8:1::/48"},
        {"IPv6 /128", "2001:db8:1:2:3:4:5:6", 24, 128, "2001:db8:1:2:3:4:5:6/128"},
        {"IPv6 not on a byte boundary", "2001:db8:1:2f:3:4:5:6", 24, 60, "2001:db8:1:20::/60"},
        {"IPv4-mapped uses the IPv4 prefix", "::ffff:192.0.2.77", 24, 64, "192.0.2.0/24"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = group_network(raw(c.address), c.v4_prefix, c.v6_prefix);
        CHECK_MESSAGE(got.to_string() == c.want, c.address, ": got ", got.to_string(), ", want ", c.want);
      }
    }
  }

  TEST_CASE("neighbours in one /24 share a greylist network and others do not") {
    auto a = group_network(raw("192.0.2.1"), 24, 64);
    auto b = group_network(raw("192.0.2.254"), 24, 64);
    auto c = group_network(raw("192.0.3.1"), 24, 64);
    CHECK(a.network == b.network);
    CHECK(a.prefix == b.prefix);
    CHECK(a.network != c.network);
    CHECK_MESSAGE(group_network(raw("::ffff:192.0.2.9"), 24, 64).to_string() == a.to_string(),
                  "a client seen over IPv4 and as v4-mapped IPv6 must be one greylist network");
  }

  TEST_CASE("parses CIDRs, bare addresses and postgrey partial addresses") {
    struct tc {
      const char* label;
      std::string input;
      std::string want;  // "" for nullopt
    };
    const tc cases[] = {
        {"IPv4 CIDR", "192.0.2.0/24", "192.0.2.0/24"},
        {"IPv4 CIDR with host bits", "192.0.2.77/24", "192.0.2.0/24"},
        {"IPv4 /0", "0.0.0.0/0", "0.0.0.0/0"},
        {"IPv6 CIDR", "2001:db8::/32", "2001:db8::/32"},
        {"IPv6 CIDR with host bits", "2001:db8:ffff::1/32", "2001:db8::/32"},
        {"bare IPv4 is a /32", "192.0.2.1", "192.0.2.1/32"},
        {"bare IPv6 is a /128", "2001:db8::1", "2001:db8::1/128"},
        {"bare v4-mapped is IPv4", "::ffff:192.0.2.1", "192.0.2.1/32"},
        {"partial with dot", "10.1.", "10.1.0.0/16"},
        {"partial without dot", "10.1", "10.1.0.0/16"},
        {"partial one octet", "10.", "10.0.0.0/8"},
        {"partial three octets", "192.168.1.", "192.168.1.0/24"},
        {"empty", "", ""},
        {"empty octet", "10..1", ""},
        {"leading dot", ".10.1", ""},
        {"double trailing dot", "10.1..", ""},
        {"octet over 255", "10.256.", ""},
        {"IPv4 prefix over 32", "1.2.3.4/33", ""},
        {"IPv6 prefix over 128", "2001:db8::/129", ""},
        {"empty prefix", "1.2.3.4/", ""},
        {"non-numeric prefix", "1.2.3.4/abc", ""},
        {"negative prefix", "1.2.3.4/-1", ""},
        {"prefix with trailing text", "1.2.3.4/24x", ""},
        {"no address", "/24", ""},
        {"hostname", "example.com", ""},
        {"five octets", "1.2.3.4.5", ""},
        {"letters in a partial", "10.a.", ""},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = parse_cidr(c.input);
        if (c.want.empty()) {
          CHECK_MESSAGE(!got, "input \"", c.input, "\": got ", show(got), ", want nullopt");
        } else {
          CHECK_MESSAGE(show(got) == c.want, "input \"", c.input, "\": got ", show(got), ", want ", c.want);
        }
      }
    }
  }

  TEST_CASE("a CIDR contains exactly the addresses of its network and family") {
    struct tc {
      const char* label;
      const char* net;
      const char* address;
      bool want;
    };
    const tc cases[] = {
        {"inside a /24", "192.0.2.0/24", "192.0.2.200", true},
        {"first address", "192.0.2.0/24", "192.0.2.0", true},
        {"next /24", "192.0.2.0/24", "192.0.3.1", false},
        {"just below", "192.0.2.0/24", "192.0.1.255", false},
        {"IPv6 never in an IPv4 net", "192.0.2.0/24", "2001:db8::1", false},
        {"v4-mapped inside an IPv4 net", "192.0.2.0/24", "::ffff:192.0.2.5", true},
        {"v4-mapped outside an IPv4 net", "192.0.2.0/24", "::ffff:192.0.9.5", false},
        {"inside an IPv6 /32", "2001:db8::/32", "2001:db8:ffff::1", true},
        {"outside an IPv6 /32", "2001:db8::/32", "2001:db9::1", false},
        {"IPv4 never in an IPv6 net", "::/0", "192.0.2.1", false},
        {"IPv4 /0 holds any IPv4", "0.0.0.0/0", "203.0.113.9", true},
        {"IPv4 /0 holds no IPv6", "0.0.0.0/0", "2001:db8::1", false},
        {"bare address holds itself", "192.0.2.1", "192.0.2.1", true},
        {"bare address holds nothing else", "192.0.2.1", "192.0.2.2", false},
        {"partial 10.1. holds 10.1.x.x", "10.1.", "10.1.200.3", true},
        {"partial 10.1. not 10.10.x.x", "10.1.", "10.10.0.1", false},
        {"IPv6 /60 boundary inside", "2001:db8:1:20::/60", "2001:db8:1:2f::1", true},
        {"IPv6 /60 boundary outside", "2001:db8:1:20::/60", "2001:db8:1:30::1", false},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto n = parse_cidr(c.net);
        REQUIRE_MESSAGE(n, "could not parse ", c.net);
        bool got = n->contains(raw(c.address));
        CHECK_MESSAGE(got == c.want, n->to_string(), " contains ", c.address, ": got ", got, ", want ", c.want);
      }
    }
  }

  TEST_CASE("an IPv4-mapped IPv6 network is the IPv4 network it maps") {
    auto c = parse_cidr("::ffff:192.0.2.0/120");
    REQUIRE(c.has_value());
    CHECK_MESSAGE(c->to_string() == "192.0.2.0/24", "got ", c->to_string());
    CHECK(c->contains(*parse_ip("192.0.2.77")));
    CHECK_FALSE(parse_cidr("::ffff:192.0.2.0/90").has_value());
  }
}
