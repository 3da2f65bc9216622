// Unit tests for DNSBL/DNSWL list entries (postscreen syntax), answer filtering, refusal
// codes, reverse-DNS classification and dynamic-name detection.
#include <doctest/doctest.h>

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "policyd/dnsbl.hpp"

namespace {

using lupine::policyd::classify_rdns;
using lupine::policyd::default_dynamic_patterns;
using lupine::policyd::dnsbl_list;
using lupine::policyd::dnsbl_matches;
using lupine::policyd::is_dnsbl_error_code;
using lupine::policyd::looks_dynamic;
using lupine::policyd::parse_dnsbl_entry;
using lupine::policyd::rdns_result;

std::string show(rdns_result r) {
  return std::string{lupine::policyd::to_string(r)};
}

// A list parsed from a good entry (fails the test if the entry is refused).
dnsbl_list list(const char* entry) {
  std::string err;
  auto l = parse_dnsbl_entry(entry, err);
  REQUIRE_MESSAGE(l, "entry \"", entry, "\" refused: ", err);
  return *l;
}

// The default patterns compiled the way the DNS check compiles them.
const std::vector<std::regex>& default_regexes() {
  static const std::vector<std::regex> re = [] {
    std::vector<std::regex> out;
    for (const auto& p : default_dynamic_patterns()) out.emplace_back(p, std::regex::ECMAScript | std::regex::icase);
    return out;
  }();
  return re;
}

}  // namespace

TEST_SUITE("dnsbl") {
  TEST_CASE("parses list entries with zone and optional filter and weight") {
    struct tc {
      const char* label;
      const char* entry;
      std::string zone;
      int weight;
      bool filtered;
    };
    const tc cases[] = {
        {"zone only", "zen.spamhaus.org", "zen.spamhaus.org", 1, false},
        {"zone and weight", "bl.spamcop.net*2", "bl.spamcop.net", 2, false},
        {"filter with a range and weight", "zen.spamhaus.org=127.0.0.[2..11]*3", "zen.spamhaus.org", 3, true},
        {"allow-list with negative weight", "list.dnswl.org=127.0.[0..255].[1..3]*-5", "list.dnswl.org", -5, true},
        {"weight -1", "swl.example=127.0.0.2*-1", "swl.example", -1, true},
        {"filter without weight", "b.barracudacentral.org=127.0.0.2", "b.barracudacentral.org", 1, true},
        {"filter with a list of values", "bl.example=127.0.0.[2;4;10..11]*2", "bl.example", 2, true},
        {"upper-case zone folded", "ZEN.Spamhaus.ORG*3", "zen.spamhaus.org", 3, false},
        {"trailing dot dropped", "zen.spamhaus.org.*3", "zen.spamhaus.org", 3, false},
        {"hyphen and underscore in zone", "my-list_1.example.net", "my-list_1.example.net", 1, false},
        {"largest weight", "bl.example*1000", "bl.example", 1000, false},
        {"smallest weight", "wl.example*-1000", "wl.example", -1000, false},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        std::string err;
        auto got = parse_dnsbl_entry(c.entry, err);
        REQUIRE_MESSAGE(got, "entry \"", c.entry, "\": got error \"", err, "\", want a list");
        CHECK_MESSAGE(got->zone == c.zone, "got zone ", got->zone, ", want ", c.zone);
        CHECK_MESSAGE(got->weight == c.weight, "got weight ", got->weight, ", want ", c.weight);
        CHECK_MESSAGE(got->filter.has_value() == c.filtered, "got filter ", got->filter.has_value(), ", want ",
                      c.filtered);
        CHECK_MESSAGE(got->allow() == (c.weight < 0), "got allow ", got->allow(), " for weight ", c.weight);
        CHECK_MESSAGE(got->text == c.entry, "got text ", got->text, ", want the entry as configured");
      }
    }
  }

  TEST_CASE("refuses bad entries with an error naming the problem") {
    struct tc {
      const char* label;
      const char* entry;
      std::string want_in_error;
    };
    const tc cases[] = {
        {"empty", "", "zone"},
        {"zone without a dot", "localhost*2", "zone"},
        {"space in zone", "zen spamhaus.org", "zone"},
        {"no zone before the filter", "=127.0.0.2*3", "zone"},
        {"no zone before the weight", "*3", "zone"},
        {"weight zero", "zen.spamhaus.org*0", "weight"},
        {"empty weight", "zen.spamhaus.org*", "weight"},
        {"weight not a number", "zen.spamhaus.org*x", "weight"},
        {"weight with junk after it", "zen.spamhaus.org*3x", "weight"},
        {"weight too large", "zen.spamhaus.org*1001", "weight"},
        {"weight too small", "zen.spamhaus.org*-1001", "weight"},
        {"range end not a number", "zen.spamhaus.org=127.0.0.[2..x]*3", "bad filter '127.0.0.[2..x]'"},
        {"range reversed", "zen.spamhaus.org=127.0.0.[11..2]*3", "bad filter '127.0.0.[11..2]'"},
        {"octet over 255", "zen.spamhaus.org=127.0.0.256", "bad filter '127.0.0.256'"},
        {"range over 255", "zen.spamhaus.org=127.0.0.[2..256]", "bad filter"},
        {"three octets", "zen.spamhaus.org=127.0.0*3", "bad filter '127.0.0'"},
        {"five octets", "zen.spamhaus.org=127.0.0.2.5", "bad filter"},
        {"empty filter", "zen.spamhaus.org=*3", "bad filter"},
        {"empty brackets", "zen.spamhaus.org=127.0.0.[]", "bad filter"},
        {"empty list item", "zen.spamhaus.org=127.0.0.[2;]", "bad filter"},
        {"unclosed bracket", "zen.spamhaus.org=127.0.0.[2..11*3", "bad filter"},
        {"letters in an octet", "zen.spamhaus.org=127.0.0.x", "bad filter"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        std::string err;
        auto got = parse_dnsbl_entry(c.entry, err);
        CHECK_MESSAGE(!got, "entry \"", c.entry, "\": got zone ", (got ? got->zone : std::string{}), ", want an error");
        CHECK_MESSAGE(err.find(c.want_in_error) != std::string::npos, "entry \"", c.entry, "\": got error \"", err,
                      "\", want it to contain \"", c.want_in_error, "\"");
      }
    }
  }

  TEST_CASE("an answer is a listing when it passes the filter or is in 127/8 without one") {
    struct tc {
      const char* label;
      const char* entry;
      const char* answer;
      bool want;
    };
    const tc cases[] = {
        {"no filter: 127.0.0.2", "bl.example", "127.0.0.2", true},
        {"no filter: 127.1.2.3", "bl.example", "127.1.2.3", true},
        {"no filter: 127.0.0.255 on a block list", "bl.example", "127.0.0.255", true},
        {"no filter: outside 127/8", "bl.example", "10.0.0.2", false},
        {"no filter: refusal code", "bl.example", "127.255.255.254", false},
        {"no filter: not an address", "bl.example", "listed", false},
        {"no filter: IPv6 answer", "bl.example", "::1", false},
        {"range: low end", "bl.example=127.0.0.[2..11]", "127.0.0.2", true},
        {"range: high end", "bl.example=127.0.0.[2..11]", "127.0.0.11", true},
        {"range: below", "bl.example=127.0.0.[2..11]", "127.0.0.1", false},
        {"range: above", "bl.example=127.0.0.[2..11]", "127.0.0.12", false},
        {"range: other third octet", "bl.example=127.0.0.[2..11]", "127.0.1.2", false},
        {"single value: equal", "bl.example=127.0.0.2", "127.0.0.2", true},
        {"single value: other", "bl.example=127.0.0.2", "127.0.0.3", false},
        {"list: first", "bl.example=127.0.0.[2;4;10..11]", "127.0.0.2", true},
        {"list: not in it", "bl.example=127.0.0.[2;4;10..11]", "127.0.0.3", false},
        {"list: second", "bl.example=127.0.0.[2;4;10..11]", "127.0.0.4", true},
        {"list: in the range", "bl.example=127.0.0.[2;4;10..11]", "127.0.0.10", true},
        {"allow-list: in filter", "wl.example=127.0.[0..255].[1..3]*-5", "127.0.10.2", true},
        {"allow-list: last octet out", "wl.example=127.0.[0..255].[1..3]*-5", "127.0.10.4", false},
        {"allow-list: 127.0.0.255 never matches", "wl.example*-5", "127.0.0.255", false},
        {"filter covering refusal codes still refuses them", "bl.example=127.255.255.[0..255]", "127.255.255.254",
         false},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto l = list(c.entry);
        bool got = dnsbl_matches(l, c.answer);
        CHECK_MESSAGE(got == c.want, c.entry, " answer ", c.answer, ": got ", got, ", want ", c.want);
      }
    }
  }

  TEST_CASE("refusal codes are 127.255.255.x and for allow-lists also 127.0.0.255") {
    struct tc {
      const char* label;
      const char* entry;
      const char* answer;
      bool want;
    };
    const tc cases[] = {
        {"block list: public resolver", "bl.example", "127.255.255.254", true},
        {"block list: typo", "bl.example", "127.255.255.252", true},
        {"block list: excess use", "bl.example", "127.255.255.255", true},
        {"block list: 127.255.255.0", "bl.example", "127.255.255.0", true},
        {"block list: 127.0.0.255 is an answer", "bl.example", "127.0.0.255", false},
        {"block list: listing", "bl.example", "127.0.0.2", false},
        {"block list: 127.255.254.1", "bl.example", "127.255.254.1", false},
        {"block list: not an address", "bl.example", "garbage", false},
        {"allow-list: 127.0.0.255", "wl.example*-5", "127.0.0.255", true},
        {"allow-list: 127.255.255.254", "wl.example*-5", "127.255.255.254", true},
        {"allow-list: listing", "wl.example*-5", "127.0.10.2", false},
        {"allow-list: 127.0.1.255", "wl.example*-5", "127.0.1.255", false},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto l = list(c.entry);
        bool got = is_dnsbl_error_code(l, c.answer);
        CHECK_MESSAGE(got == c.want, c.entry, " answer ", c.answer, ": got ", got, ", want ", c.want);
      }
    }
  }

  TEST_CASE("reverse DNS is confirmed only when the PTR name resolves back to the client") {
    struct tc {
      const char* label;
      bool ptr_found;
      std::vector<std::string> forward;
      const char* client;
      rdns_result want;
    };
    const tc cases[] = {
        {"no PTR", false, {}, "192.0.2.12", rdns_result::no_ptr},
        {"no PTR even with addresses", false, {"192.0.2.12"}, "192.0.2.12", rdns_result::no_ptr},
        {"forward matches", true, {"192.0.2.10"}, "192.0.2.10", rdns_result::confirmed},
        {"one of several matches", true, {"192.0.2.1", "192.0.2.10"}, "192.0.2.10", rdns_result::confirmed},
        {"forward differs", true, {"192.0.2.99"}, "192.0.2.11", rdns_result::unconfirmed},
        {"no forward addresses", true, {}, "192.0.2.11", rdns_result::unconfirmed},
        {"garbage forward ignored", true, {"junk", "192.0.2.10"}, "192.0.2.10", rdns_result::confirmed},
        {"IPv6 in another spelling", true, {"2001:0db8:0:0::0010"}, "2001:db8::10", rdns_result::confirmed},
        {"IPv6 differs", true, {"2001:db8::11"}, "2001:db8::10", rdns_result::unconfirmed},
        {"IPv4-mapped client", true, {"192.0.2.10"}, "::ffff:192.0.2.10", rdns_result::confirmed},
        {"client not an address", true, {"192.0.2.10"}, "unknown", rdns_result::unknown},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = classify_rdns(c.ptr_found, c.forward, c.client);
        CHECK_MESSAGE(got == c.want, "client ", c.client, ": got ", show(got), ", want ", show(c.want));
      }
    }
  }

  TEST_CASE("rdns results have stable names for logs and the event log") {
    CHECK(show(rdns_result::confirmed) == "confirmed");
    CHECK(show(rdns_result::no_ptr) == "no_ptr");
    CHECK(show(rdns_result::unconfirmed) == "unconfirmed");
    CHECK(show(rdns_result::unknown) == "unknown");
  }

  TEST_CASE("names with dynamic words or the client address look dynamic") {
    struct tc {
      const char* label;
      const char* name;
      const char* client;
      bool want;
    };
    const tc cases[] = {
        {"dyn label and address", "13-2-0-192.dyn.isp.test", "192.0.2.13", true},
        {"dyn label for another client", "13-2-0-192.dyn.isp.test", "198.51.100.1", true},
        {"dynamic word with digits", "dynamic-7.example.net", "198.51.100.1", true},
        {"dhcp label", "host.dhcp.example.net", "198.51.100.1", true},
        {"pppoe with digits", "pppoe123.example.net", "198.51.100.1", true},
        {"adsl label", "x.adsl.example.net", "198.51.100.1", true},
        {"pool with digits", "pool-12.example.net", "198.51.100.1", true},
        {"upper case", "HOST.DSL.EXAMPLE.NET", "198.51.100.1", true},
        {"address with dashes", "host-192-0-2-7.example.net", "192.0.2.7", true},
        {"address reversed with dashes", "7-2-0-192.example.net", "192.0.2.7", true},
        {"address reversed with dots", "7.2.0.192.example.net", "192.0.2.7", true},
        {"address with dots", "h192.0.2.7.example.net", "192.0.2.7", true},
        {"address as one number", "c3221225991.example.net", "192.0.2.7", true},
        {"plain mail host", "mail.good.test", "192.0.2.10", false},
        {"mx with a digit", "mx1.example.net", "192.0.2.7", false},
        {"word that merely starts like dyn", "dynamo.example.com", "192.0.2.7", false},
        {"another client's address", "host-192-0-2-8.example.net", "192.0.2.7", false},
        {"IPv6 client and plain name", "mail6.good.test", "2001:db8::10", false},
        {"IPv6 client and dynamic name", "pool-1.dyn.example.net", "2001:db8::10", true},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        bool got = looks_dynamic(c.name, c.client, default_regexes());
        CHECK_MESSAGE(got == c.want, c.name, " for ", c.client, ": got ", got, ", want ", c.want);
      }
    }
  }

  TEST_CASE("without patterns only the client address in the name counts") {
    const std::vector<std::regex> none;
    CHECK_MESSAGE(!looks_dynamic("x.dyn.example.net", "192.0.2.7", none), "a dyn label matched without patterns");
    CHECK_MESSAGE(looks_dynamic("192-0-2-7.example.net", "192.0.2.7", none), "the address in the name did not count");
  }

  TEST_CASE("the default dynamic patterns are valid case-insensitive regular expressions") {
    REQUIRE_FALSE(default_dynamic_patterns().empty());
    for (const auto& p : default_dynamic_patterns()) {
      CHECK_NOTHROW(std::regex(p, std::regex::ECMAScript | std::regex::icase));
    }
  }
}
