// Unit tests for allow-lists: client and address entries, file loading and request matching.
#include <doctest/doctest.h>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "policyd/allowlist.hpp"
#include "policyd/protocol.hpp"
#include "support.hpp"

namespace {

using lupine::test::show;
using lupine::test::temp_dir;

using lupine::policyd::address_list;
using lupine::policyd::allowlist;
using lupine::policyd::client_list;
using lupine::policyd::policy_request;

std::string show(const std::optional<std::string>& m) {
  return m ? "\"" + *m + "\"" : std::string{"nullopt"};
}

client_list clients(std::initializer_list<const char*> entries) {
  client_list l;
  for (const char* e : entries) {
    auto err = l.add(e);
    if (!err.empty()) FAIL("client entry \"", e, "\" rejected: ", err);
  }
  return l;
}

address_list addresses(std::initializer_list<const char*> entries) {
  address_list l;
  for (const char* e : entries) {
    auto err = l.add(e);
    if (!err.empty()) FAIL("address entry \"", e, "\" rejected: ", err);
  }
  return l;
}

policy_request request(const char* address, const char* name, const char* sender, const char* recipient) {
  policy_request r;
  r.add("request", "smtpd_access_policy");
  r.add("client_address", address);
  r.add("client_name", name);
  r.add("reverse_client_name", name);
  r.add("sender", sender);
  r.add("recipient", recipient);
  return r;
}

}  // namespace

TEST_SUITE("allowlist") {
  TEST_CASE("client entries match by network, verified hostname suffix or regex") {
    const auto list = clients({"192.0.2.0/24", "2001:db8:5::/48", "198.51.100.7", "10.1.", "example.com",
                               ".mail.example.net", "/^smtp[0-9]+\\.bulk\\.example$/", "/^203\\.0\\.113\\./"});
    struct tc {
      const char* label;
      const char* address;
      const char* name;
      std::optional<std::string> want;
    };
    const tc cases[] = {
        {"IPv4 CIDR", "192.0.2.44", "unknown", "192.0.2.0/24"},
        {"IPv6 CIDR", "2001:db8:5:1::25", "unknown", "2001:db8:5::/48"},
        {"v4-mapped client in IPv4 CIDR", "::ffff:192.0.2.44", "unknown", "192.0.2.0/24"},
        {"bare address", "198.51.100.7", "unknown", "198.51.100.7/32"},
        {"neighbour of bare address", "198.51.100.8", "unknown", std::nullopt},
        {"partial IPv4", "10.1.77.3", "unknown", "10.1.0.0/16"},
        {"partial IPv4 is not a string prefix", "10.10.1.1", "unknown", std::nullopt},
        {"hostname equal to the suffix", "203.0.114.1", "example.com", "example.com"},
        {"subdomain of the suffix", "203.0.114.1", "mx1.example.com", "example.com"},
        {"upper-case hostname", "203.0.114.1", "MX1.Example.COM", "example.com"},
        {"suffix glued to another name", "203.0.114.1", "badexample.com", std::nullopt},
        {"suffix in the middle", "203.0.114.1", "example.com.evil.test", std::nullopt},
        {"leading-dot entry", "203.0.114.1", "out.mail.example.net", "mail.example.net"},
        {"regex on the hostname", "203.0.114.1", "smtp12.bulk.example", "/^smtp[0-9]+\\.bulk\\.example$/"},
        {"regex on the address", "203.0.113.9", "unknown", "/^203\\.0\\.113\\./"},
        {"unknown never matches a name", "203.0.114.1", "unknown", std::nullopt},
        {"empty name matches nothing", "203.0.114.1", "", std::nullopt},
        {"stranger", "203.0.114.1", "mail.stranger.test", std::nullopt},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = list.match(c.address, c.name);
        CHECK_MESSAGE(got == c.want, c.address, " / ", c.name, ": got ", show(got), ", want ", show(c.want));
      }
    }
  }

  TEST_CASE("a client regex never matches the name 'unknown'") {
    const auto list = clients({"/unknown/", "/^unk/"});
    auto got = list.match("203.0.114.1", "unknown");
    CHECK_MESSAGE(!got, "got ", show(got), ", want nullopt: an unverified client has no name to match");
  }

  TEST_CASE("client entries that are not addresses, CIDRs, hostnames or regexes are rejected") {
    struct tc {
      const char* label;
      const char* entry;
    };
    const tc cases[] = {
        {"prefix over 32", "1.2.3.4/33"}, {"bad prefix", "192.0.2.0/x"}, {"name without a dot", "localhost"},
        {"spaces", "mail example com"},   {"bad regex", "/(unclosed/"},  {"empty", ""},
        {"wildcard", "*.example.com"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        client_list l;
        auto err = l.add(c.entry);
        CHECK_MESSAGE(!err.empty(), "entry \"", c.entry, "\": got no error, want one");
        CHECK_MESSAGE(l.size() == 0, "a rejected entry must not be added; size=", l.size());
      }
    }
  }

  // A mistyped address is not a hostname (empty label, numeric top-level label); taking it as
  // one would silently allow-list nothing.
  TEST_CASE("client entries that are mistyped addresses are rejected, not taken as hostnames") {
    const char* entries[] = {"10..1", "300.1.2.3", "1.2.3.4.5", "192.168.1.1."};
    for (const char* e : entries) {
      SUBCASE(e) {
        client_list l;
        auto err = l.add(e);
        CHECK_MESSAGE(!err.empty(), "entry \"", e, "\": got no error and size=", l.size(), ", want an error");
      }
    }
  }

  TEST_CASE("add_cidr accepts only addresses and networks") {
    client_list l;
    CHECK(l.add_cidr("192.0.2.0/24").empty());
    CHECK_FALSE(l.add_cidr("example.com").empty());
    CHECK(l.size() == 1);
    CHECK(l.match("192.0.2.1", "").has_value());
  }

  TEST_CASE("address entries match full addresses, users, domains with subdomains and regexes") {
    const auto list = addresses({"alice@example.org", "postmaster@", "Partner.Example", "/^noreply-[a-z]+@bank\\./"});
    struct tc {
      const char* label;
      const char* address;
      std::optional<std::string> want;
    };
    const tc cases[] = {
        {"full address", "alice@example.org", "alice@example.org"},
        {"full address in other case", "ALICE@Example.Org", "alice@example.org"},
        {"other user at that domain", "bob@example.org", std::nullopt},
        {"full address does not cover subdomains", "alice@sub.example.org", std::nullopt},
        {"user@ at any domain", "postmaster@anything.test", "postmaster@"},
        {"user@ with +extension", "postmaster+abuse@anything.test", "postmaster@"},
        {"user@ in other case", "PostMaster@anything.test", "postmaster@"},
        {"user@ is not a prefix", "postmasters@anything.test", std::nullopt},
        {"domain", "someone@partner.example", "partner.example"},
        {"subdomain", "someone@eu.mail.partner.example", "partner.example"},
        {"domain glued to another name", "someone@mypartner.example", std::nullopt},
        {"regex", "noreply-alerts@bank.example", "/^noreply-[a-z]+@bank\\./"},
        {"regex ignores case", "NoReply-Alerts@Bank.example", "/^noreply-[a-z]+@bank\\./"},
        {"empty address", "", std::nullopt},
        {"stranger", "eve@evil.test", std::nullopt},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = list.match(c.address);
        CHECK_MESSAGE(got == c.want, c.address, ": got ", show(got), ", want ", show(c.want));
      }
    }
  }

  TEST_CASE("address entries that cannot be an address, user@, domain or regex are rejected") {
    struct tc {
      const char* label;
      const char* entry;
    };
    const tc cases[] = {
        {"empty user with domain", "@example.org"},
        {"bare @", "@"},
        {"space in a domain", "example org"},
        {"bad characters", "exa!mple.org"},
        {"bad regex", "/[unclosed/"},
        {"empty", ""},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        address_list l;
        auto err = l.add(c.entry);
        CHECK_MESSAGE(!err.empty(), "entry \"", c.entry, "\": got no error, want one");
        CHECK_MESSAGE(l.size() == 0, "a rejected entry must not be added; size=", l.size());
      }
    }
  }

  TEST_CASE("loads a client file skipping comments and blank lines, reporting bad lines as file:line") {
    temp_dir dir;
    auto path = dir.write("whitelist_clients",
                          "# postgrey-style whitelist\n"
                          "\n"
                          "192.0.2.0/24\n"
                          "   mail.example.com   # trailing comment\n"
                          "1.2.3.4/33\n"
                          "/^smtp[0-9]+\\.example\\.net$/\n");
    client_list list;
    auto errors = load_client_file(path, list);
    REQUIRE_MESSAGE(errors.size() == 1, "got ", show(errors), ", want one error");
    CHECK_MESSAGE(errors[0].rfind(path + ":5: 1.2.3.4/33: ", 0) == 0, "got ", errors[0], ", want it to start with ",
                  path, ":5: 1.2.3.4/33: ");
    CHECK_MESSAGE(list.size() == 3, "got size=", list.size(), ", want 3 entries");
    CHECK(list.match("192.0.2.9", "") == std::optional<std::string>{"192.0.2.0/24"});
    CHECK(list.match("203.0.113.1", "relay.mail.example.com") == std::optional<std::string>{"mail.example.com"});
    CHECK(list.match("203.0.113.1", "smtp3.example.net").has_value());
  }

  TEST_CASE("loads an address file the same way") {
    temp_dir dir;
    auto path = dir.write("whitelist_recipients",
                          "# comment\n"
                          "postmaster@\n"
                          "abuse@example.org\n"
                          "@broken.example\n"
                          "\n"
                          "Friends.Example   \n");
    address_list list;
    auto errors = load_address_file(path, list);
    REQUIRE_MESSAGE(errors.size() == 1, "got ", show(errors), ", want one error");
    CHECK_MESSAGE(errors[0].rfind(path + ":4: ", 0) == 0, "got ", errors[0], ", want it to start with ", path, ":4: ");
    CHECK(list.size() == 3);
    CHECK(list.match("postmaster@any.test") == std::optional<std::string>{"postmaster@"});
    CHECK(list.match("abuse@example.org").has_value());
    CHECK(list.match("pal@friends.example") == std::optional<std::string>{"friends.example"});
  }

  TEST_CASE("a missing allow-list file is an error naming it") {
    temp_dir dir;
    auto path = (dir.path / "absent").string();
    client_list cl;
    auto errors = load_client_file(path, cl);
    REQUIRE(errors.size() == 1);
    CHECK_MESSAGE(errors[0].find(path) != std::string::npos, "got ", errors[0]);
    address_list al;
    CHECK(load_address_file(path, al).size() == 1);
  }

  TEST_CASE("an allowlist matches a request by client, then recipient, then sender") {
    allowlist al;
    al.clients = clients({"192.0.2.0/24", "trusted.example"});
    al.recipients = addresses({"postmaster@"});
    al.senders = addresses({"newsletter.example"});
    struct tc {
      const char* label;
      policy_request req;
      std::optional<std::string> want;
    };
    const tc cases[] = {
        {"client network", request("192.0.2.5", "unknown", "a@x.test", "b@y.test"), "client 192.0.2.0/24"},
        {"verified client name", request("203.0.113.5", "mx.trusted.example", "a@x.test", "b@y.test"),
         "client trusted.example"},
        {"recipient", request("203.0.113.5", "unknown", "a@x.test", "postmaster@y.test"), "recipient postmaster@"},
        {"sender", request("203.0.113.5", "unknown", "news@newsletter.example", "b@y.test"),
         "sender newsletter.example"},
        {"client wins over recipient", request("192.0.2.5", "unknown", "a@x.test", "postmaster@y.test"),
         "client 192.0.2.0/24"},
        {"recipient wins over sender",
         request("203.0.113.5", "unknown", "news@newsletter.example", "postmaster@y.test"), "recipient postmaster@"},
        {"nothing matches", request("203.0.113.5", "mail.other.test", "a@x.test", "b@y.test"), std::nullopt},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = al.match(c.req);
        CHECK_MESSAGE(got == c.want, "got ", show(got), ", want ", show(c.want));
      }
    }
  }

  TEST_CASE("a client is matched by its verified name only, never by an unverified reverse name") {
    allowlist al;
    al.clients = clients({"trusted.example"});
    policy_request req;
    req.add("request", "smtpd_access_policy");
    req.add("client_address", "203.0.113.5");
    req.add("client_name", "unknown");
    req.add("reverse_client_name", "mx.trusted.example");
    auto got = al.match(req);
    CHECK_MESSAGE(!got, "got ", show(got), ", want nullopt: a forged PTR must not allow-list a client");
  }
}
