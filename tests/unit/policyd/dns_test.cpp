// Unit tests for the pure parts of policyd's DNS client: reverse query names.
#include <doctest/doctest.h>

#include <string>

#include "policyd/dns.hpp"

namespace {

using lupine::policyd::reverse_name;

}  // namespace

TEST_SUITE("dns") {
  TEST_CASE("reverse names are reversed octets for IPv4 and reversed nibbles for IPv6") {
    struct tc {
      const char* label;
      const char* address;
      std::string want;
    };
    const tc cases[] = {
        {"IPv4", "192.0.2.2", "2.2.0.192"},
        {"IPv4 with zeros", "10.0.0.1", "1.0.0.10"},
        {"IPv4 RFC 5782 test address", "127.0.0.2", "2.0.0.127"},
        {"IPv4 all ones", "255.255.255.255", "255.255.255.255"},
        {"IPv4-mapped IPv6 is queried as IPv4", "::ffff:192.0.2.2", "2.2.0.192"},
        {"IPv6", "2001:db8::2", "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"},
        {"IPv6 long form", "2001:0DB8:0000:0000:0000:0000:0000:0010",
         "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"},
        {"IPv6 loopback", "::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"},
        {"IPv6 all nibbles", "0123:4567:89ab:cdef:fedc:ba98:7654:3210",
         "0.1.2.3.4.5.6.7.8.9.a.b.c.d.e.f.f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.0"},
        {"empty", "", ""},
        {"unknown", "unknown", ""},
        {"hostname", "mail.example.net", ""},
        {"three octets", "192.0.2", ""},
        {"octet over 255", "192.0.2.256", ""},
        {"network", "192.0.2.0/24", ""},
        {"bracketed IPv6", "[2001:db8::2]", ""},
        {"trailing space", "192.0.2.2 ", ""},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = reverse_name(c.address);
        CHECK_MESSAGE(got == c.want, "address \"", c.address, "\": got \"", got, "\", want \"", c.want, "\"");
      }
    }
  }

  TEST_CASE("an IPv6 reverse name has 32 nibble labels") {
    auto got = reverse_name("2001:db8:1:2:3:4:5:6");
    std::size_t labels = 1;
    for (char ch : got) labels += ch == '.' ? 1U : 0U;
    CHECK_MESSAGE(labels == 32, "got ", labels, " labels in \"", got, "\", want 32");
    CHECK_MESSAGE(got.size() == 63, "got length ", got.size(), ", want 63");
  }
}
