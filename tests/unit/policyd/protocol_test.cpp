// Unit tests for the Postfix policy protocol codec: parse_request and format_reply.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

#include "policyd/protocol.hpp"

namespace {

using lupine::policyd::parse_request;
using lupine::policyd::parse_result;
using lupine::policyd::policy_request;
using lupine::policyd::protocol_error;
using lupine::policyd::protocol_limits;
using status = parse_result::status;

std::string show(status s) {
  switch (s) {
    case status::need_more: return "need_more";
    case status::complete: return "complete";
    case status::error: return "error";
  }
  return "?";
}

std::string show(protocol_error e) {
  return std::string{lupine::policyd::to_string(e)};
}

const std::string head = "request=smtpd_access_policy\n";

// A typical request as Postfix 3.x sends it (abridged).
const std::string typical =
    "request=smtpd_access_policy\n"
    "protocol_state=RCPT\n"
    "protocol_name=ESMTP\n"
    "client_address=192.0.2.10\n"
    "client_name=mail.example.com\n"
    "reverse_client_name=mail.example.com\n"
    "helo_name=mail.example.com\n"
    "sender=alice@example.com\n"
    "recipient=bob@example.org\n"
    "queue_id=\n"
    "size=12345\n"
    "\n";

}  // namespace

TEST_SUITE("protocol") {
  TEST_CASE("parses a complete request and says how many bytes it used") {
    policy_request req;
    auto r = parse_request(typical, {}, req);
    REQUIRE_MESSAGE(r.state == status::complete, "got ", show(r.state), " (", show(r.error), "), want complete");
    CHECK(r.error == protocol_error::none);
    CHECK_MESSAGE(r.consumed == typical.size(), "got consumed=", r.consumed, ", want ", typical.size());
    CHECK(req.get("request") == "smtpd_access_policy");
    CHECK(req.get("client_address") == "192.0.2.10");
    CHECK(req.get("sender") == "alice@example.com");
    CHECK(req.get("recipient") == "bob@example.org");
    CHECK(req.get("size") == "12345");
    CHECK(req.has("queue_id"));
    CHECK_MESSAGE(req.get("queue_id").empty(), "an empty value stays empty");
    CHECK_FALSE(req.has("ccert_subject"));
    CHECK_MESSAGE(req.get("ccert_subject").empty(), "an absent attribute reads as empty");
    CHECK(req.attributes().size() == 11);
  }

  TEST_CASE("parses two pipelined requests from one buffer one at a time") {
    const std::string first = head + "sender=a@example.com\n\n";
    const std::string second = head + "sender=b@example.com\n\n";
    std::string buf = first + second;
    policy_request req;

    auto r1 = parse_request(buf, {}, req);
    REQUIRE_MESSAGE(r1.state == status::complete, "got ", show(r1.state));
    CHECK_MESSAGE(r1.consumed == first.size(), "got consumed=", r1.consumed, ", want ", first.size());
    CHECK(req.get("sender") == "a@example.com");

    buf.erase(0, r1.consumed);
    auto r2 = parse_request(buf, {}, req);
    REQUIRE_MESSAGE(r2.state == status::complete, "got ", show(r2.state));
    CHECK(r2.consumed == second.size());
    CHECK_MESSAGE(req.get("sender") == "b@example.com", "the second request must not see the first's attributes");
    CHECK(req.attributes().size() == 2);
  }

  TEST_CASE("a line of exactly the limit is accepted wherever the reads split its CRLF") {
    // Regression (fuzz/regressions/fuzz_protocol): a read ending between the CR and the LF
    // used to count the CR and close the connection as line_too_long.
    protocol_limits lim;
    lim.max_line_bytes = 64;
    std::string line = "sender=" + std::string(64 - 7, 'a');
    std::string whole = "request=smtpd_access_policy\r\n" + line + "\r\n\r\n";
    for (std::size_t cut = 1; cut < whole.size(); ++cut) {
      policy_request req;
      auto first = parse_request(std::string_view{whole}.substr(0, cut), lim, req);
      REQUIRE_MESSAGE(first.state == status::need_more, "cut at ", cut, ": got ", show(first.state), " (",
                      show(first.error), ")");
    }
    policy_request req;
    CHECK(parse_request(whole, lim, req).state == status::complete);
    std::string longer = "request=smtpd_access_policy\r\n" + line + "a\r";
    CHECK(parse_request(longer, lim, req).state == status::error);
  }

  TEST_CASE("asks for more input until the empty line arrives, consuming nothing") {
    struct tc {
      const char* label;
      std::string input;
    };
    const tc cases[] = {
        {"empty buffer", ""},
        {"half a line", "request=smtpd_acc"},
        {"one full line", head},
        {"no empty line yet", head + "sender=a@example.com\n"},
        {"a lone CR at the end", head + "sender=a@example.com\n\r"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        policy_request req;
        req.add("stale", "value");
        auto r = parse_request(c.input, {}, req);
        CHECK_MESSAGE(r.state == status::need_more, "got ", show(r.state), " (", show(r.error), "), want need_more");
        CHECK_MESSAGE(r.consumed == 0, "got consumed=", r.consumed, ", want 0");
        CHECK_MESSAGE(req.attributes().empty(), "req must be cleared on need_more");
      }
    }
  }

  TEST_CASE("completes a request once the rest of it arrives byte by byte") {
    policy_request req;
    for (std::size_t n = 0; n < typical.size(); ++n) {
      auto r = parse_request(std::string_view{typical}.substr(0, n), {}, req);
      REQUIRE_MESSAGE(r.state == status::need_more, "prefix of ", n, " bytes: got ", show(r.state), ", want need_more");
    }
    auto r = parse_request(typical, {}, req);
    CHECK(r.state == status::complete);
    CHECK(req.get("recipient") == "bob@example.org");
  }

  TEST_CASE("splits each line at the first '=' so values may hold '=' and spaces") {
    const std::string srs = "SRS0=HHH=TT=example.com=alice@forwarder.example";
    const std::string buf =
        head + "sender=" + srs + "\nhelo_name=  spaced out = host  \nccert_subject=CN=mail,O=Example\n\n";
    policy_request req;
    auto r = parse_request(buf, {}, req);
    REQUIRE_MESSAGE(r.state == status::complete, "got ", show(r.state), " (", show(r.error), ")");
    CHECK_MESSAGE(req.get("sender") == srs, "got ", std::string{req.get("sender")}, ", want ", srs);
    CHECK(req.get("helo_name") == "  spaced out = host  ");
    CHECK(req.get("ccert_subject") == "CN=mail,O=Example");
  }

  TEST_CASE("keeps unknown attributes and repeated ones in order and get() returns the first") {
    const std::string buf =
        head + "x_future_attribute=42\nrecipient=first@example.org\nrecipient=second@example.org\n\n";
    policy_request req;
    auto r = parse_request(buf, {}, req);
    REQUIRE(r.state == status::complete);
    CHECK(req.get("x_future_attribute") == "42");
    CHECK_MESSAGE(req.get("recipient") == "first@example.org", "got ", std::string{req.get("recipient")});
    REQUIRE(req.attributes().size() == 4);
    CHECK(req.attributes()[1].first == "x_future_attribute");
    CHECK(req.attributes()[2].second == "first@example.org");
    CHECK(req.attributes()[3].second == "second@example.org");
  }

  TEST_CASE("tolerates CRLF line endings without keeping the CR in names or values") {
    const std::string buf = "request=smtpd_access_policy\r\nsender=a@example.com\r\n\r\n";
    policy_request req;
    auto r = parse_request(buf, {}, req);
    REQUIRE_MESSAGE(r.state == status::complete, "got ", show(r.state), " (", show(r.error), ")");
    CHECK(r.consumed == buf.size());
    CHECK_MESSAGE(req.get("sender") == "a@example.com", "got \"", std::string{req.get("sender")}, "\"");
    CHECK(req.get("request") == "smtpd_access_policy");
  }

  TEST_CASE("rejects malformed or abusive input with the matching protocol error") {
    const protocol_limits small{64, 12, 256};
    const std::string long_line = "sender=" + std::string(64, 'a') + "\n";  // 71 bytes before the '\n'
    // The 28-byte request line plus 8 lines of 30 bytes: 268 bytes, every line short, the whole too large.
    std::string many_lines = head;
    while (many_lines.size() < 256) many_lines += "x_padding=" + std::string(19, 'p') + "\n";
    std::string thirteen_attributes = head;  // one over max_attributes
    for (char c = 'a'; c < 'a' + 12; ++c) thirteen_attributes += std::string{c} + "=1\n";
    struct tc {
      const char* label;
      std::string input;
      protocol_error want;
    };
    const tc cases[] = {
        {"line without '='", head + "garbage\n\n", protocol_error::no_equals},
        {"line without '=' before the request is complete", head + "garbage\n", protocol_error::no_equals},
        {"empty name", head + "=value\n\n", protocol_error::empty_name},
        {"NUL byte in a value", head + std::string{"sender=a\0b@example.com\n\n", 24}, protocol_error::nul_byte},
        {"NUL byte in an incomplete line", head + std::string{"send\0", 5}, protocol_error::nul_byte},
        {"complete line too long", head + long_line + "\n", protocol_error::line_too_long},
        {"incomplete line already too long", head + "sender=" + std::string(70, 'a'), protocol_error::line_too_long},
        {"too many attributes", thirteen_attributes + "\n", protocol_error::too_many_attributes},
        {"too many attributes still arriving", thirteen_attributes, protocol_error::too_many_attributes},
        {"request too large with its empty line", many_lines + "\n", protocol_error::request_too_large},
        {"request too large still arriving", many_lines, protocol_error::request_too_large},
        {"request too large mid-line", many_lines.substr(0, 28 + 7 * 30) + "x_more=" + std::string(40, 'm'),
         protocol_error::request_too_large},
        {"no request attribute", "sender=a@example.com\n\n", protocol_error::not_a_policy_request},
        {"other request type", "request=junk_mail_policy\n\n", protocol_error::not_a_policy_request},
        {"request value with extra text", "request=smtpd_access_policy2\n\n", protocol_error::not_a_policy_request},
        {"just an empty line", "\n", protocol_error::not_a_policy_request},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        policy_request req;
        auto r = parse_request(c.input, small, req);
        CHECK_MESSAGE(r.state == status::error, "got ", show(r.state), ", want error");
        CHECK_MESSAGE(r.error == c.want, "got error \"", show(r.error), "\", want \"", show(c.want), "\"");
        CHECK_MESSAGE(req.attributes().empty(), "req must be cleared on error");
      }
    }
  }

  TEST_CASE("accepts a line, attribute count and request exactly at their limits") {
    const protocol_limits small{64, 12, 256};
    SUBCASE("line of exactly max_line_bytes") {
      std::string line = "sender=" + std::string(64 - 7, 'a');
      REQUIRE(line.size() == 64);
      policy_request req;
      auto partial = parse_request(head + line, small, req);
      CHECK_MESSAGE(partial.state == status::need_more, "incomplete: got ", show(partial.state), " (",
                    show(partial.error), ")");
      auto r = parse_request(head + line + "\n\n", small, req);
      CHECK_MESSAGE(r.state == status::complete, "got ", show(r.state), " (", show(r.error), ")");
    }
    SUBCASE("exactly max_attributes") {
      policy_request req;
      std::string buf = head;
      for (char c = 'a'; c < 'a' + 11; ++c) buf += std::string{c} + "=1\n";
      auto r = parse_request(buf + "\n", small, req);
      CHECK_MESSAGE(r.state == status::complete, "got ", show(r.state), " (", show(r.error), ")");
      CHECK(req.attributes().size() == 12);
    }
    SUBCASE("request of exactly max_request_bytes") {
      // Attribute lines of at most 64 bytes (with '\n') filling the request up to 256 with its empty line.
      std::string buf = head;
      while (buf.size() < 255) {
        std::size_t len = std::min<std::size_t>(64, 255 - buf.size());
        buf += "x_padding=" + std::string(len - 11, 'p') + "\n";
      }
      buf += "\n";
      REQUIRE(buf.size() == 256);
      policy_request req;
      auto r = parse_request(buf, small, req);
      CHECK_MESSAGE(r.state == status::complete, "got ", show(r.state), " (", show(r.error), ")");
      CHECK(r.consumed == 256);
    }
  }

  TEST_CASE("the default limits accept a realistic request and refuse a flood") {
    policy_request req;
    std::string flood = head;
    for (int i = 0; i < 101; ++i) flood += "x" + std::to_string(i) + "=1\n";
    flood += "\n";
    auto r = parse_request(flood, {}, req);
    CHECK_MESSAGE(r.error == protocol_error::too_many_attributes, "got ", show(r.error));

    std::string endless = head + "sender=" + std::string(5000, 'a');
    r = parse_request(endless, {}, req);
    CHECK_MESSAGE(r.error == protocol_error::line_too_long, "got ", show(r.error));
  }

  TEST_CASE("formats a reply as an action line followed by an empty line") {
    struct tc {
      const char* label;
      std::string action;
      std::string want;
    };
    const tc cases[] = {
        {"dunno", "DUNNO", "action=DUNNO\n\n"},
        {"defer with text", "DEFER_IF_PERMIT 4.7.1 Greylisted, retry in 300 seconds",
         "action=DEFER_IF_PERMIT 4.7.1 Greylisted, retry in 300 seconds\n\n"},
        {"prepend", "PREPEND X-Greylist: delayed 300 seconds", "action=PREPEND X-Greylist: delayed 300 seconds\n\n"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = lupine::policyd::format_reply(c.action);
        CHECK_MESSAGE(got == c.want, "got \"", got, "\", want \"", c.want, "\"");
      }
    }
  }

  TEST_CASE("a complete request is returned even when junk follows it in the buffer") {
    policy_request req;
    std::string buf = typical + std::string{"a=\0b\n", 5};
    auto r = parse_request(buf, protocol_limits{}, req);
    CHECK_MESSAGE(r.state == status::complete, "got ", show(r.state));
    CHECK(r.consumed == typical.size());
    buf.erase(0, r.consumed);
    r = parse_request(buf, protocol_limits{}, req);
    CHECK(r.state == status::error);
    CHECK_MESSAGE(r.error == protocol_error::nul_byte, "got ", show(r.error));
  }
}
