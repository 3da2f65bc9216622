// Unit tests for the complaint parser: header blocks, Received hops, the submission hop and
// forged hops, dates, RFC 2047, spam copies in complaints, hostile input, and the sample
// files in tests/data/eml (which the system tests use too).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "abusectl/eml.hpp"
#include "support.hpp"

namespace {

using lupine::abusectl::decode_rfc2047;
using lupine::abusectl::eml_limits;
using lupine::abusectl::extract_messages;
using lupine::abusectl::is_our_host;
using lupine::abusectl::parse_message;
using lupine::abusectl::parse_received;
using lupine::abusectl::parse_rfc5322_date;
using lupine::abusectl::parsed_message;
using lupine::abusectl::received_hop;
using lupine::abusectl::sys_time;
using lupine::test::show;

const std::vector<std::string> ours{"smtp.ourmail.example", "MX1.ourmail.example", ".out.ourmail.example"};

std::string read_sample(const std::string& name) {
  std::ifstream in{std::string{LUPINE_SOURCE_DIR} + "/tests/data/eml/" + name, std::ios::binary};
  REQUIRE_MESSAGE(in.good(), "cannot open tests/data/eml/", name);
  return std::string{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

std::optional<long long> epoch(const std::optional<sys_time>& t) {
  if (!t) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::seconds>(t->time_since_epoch()).count();
}

std::string show(const std::optional<long long>& v) {
  return v ? std::to_string(*v) : "nullopt";
}

bool has_note(const parsed_message& m, std::string_view part) {
  for (const auto& n : m.notes) {
    if (n.find(part) != std::string::npos) return true;
  }
  return false;
}

bool has_note(const std::vector<std::string>& notes, std::string_view part) {
  for (const auto& n : notes) {
    if (n.find(part) != std::string::npos) return true;
  }
  return false;
}

// Runs f and returns how long it took, for the hostile-input bounds.
template <class F>
double seconds_for(F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
constexpr double quick = 5.0;  // generous: sanitizer builds are slow

// A message with these Received values (top first) and ordinary headers.
std::string with_hops(const std::vector<std::string>& hops, std::string_view date = "Fri, 27 Nov 2026 19:04:03 +0100") {
  std::string m;
  for (const auto& h : hops) m += "Received: " + h + "\n";
  m += "Message-ID: <x1@client.example.net>\n";
  m += "Date: " + std::string{date} + "\n";
  m += "From: bob@example.org\nTo: victim@example.com\nSubject: hi\n\nbody\n";
  return m;
}

// The Received headers used by the hop tests.
const std::string submission =
    "from [192.168.1.2] (client.example.net [198.51.100.7])\t(Authenticated sender: bob@example.org)\tby "
    "smtp.ourmail.example (Postfix) with ESMTPSA id 4XABCDEF12\tfor <victim@example.com>; Fri, 27 Nov 2026 18:04:05 "
    "+0000 (UTC)";
const std::string mx_from_smtp =
    "from smtp.ourmail.example (smtp.ourmail.example [192.0.2.25]) by mx.example.com (Postfix) with ESMTPS id "
    "4XmQ7d1Kz9zbtRw for <victim@example.com>; Fri, 27 Nov 2026 18:04:06 +0000 (UTC)";

parsed_message parsed(const std::string& raw, const std::vector<std::string>& hosts = ours) {
  std::string error;
  auto m = parse_message(raw, hosts, error);
  REQUIRE_MESSAGE(error.empty(), "got error '", error, "', want none");
  return m;
}

// A multipart/mixed complaint around the given parts (each with its own headers).
std::string complaint(const std::vector<std::string>& parts, std::string_view boundary = "b0") {
  std::string m =
      "From: abuse@example.com\nTo: abuse@ourmail.example\nSubject: spam\nMIME-Version: 1.0\n"
      "Content-Type: multipart/mixed; boundary=\"" +
      std::string{boundary} + "\"\n\npreamble\n";
  for (const auto& p : parts) m += "--" + std::string{boundary} + "\n" + p + "\n";
  m += "--" + std::string{boundary} + "--\nepilogue\n";
  return m;
}

const std::string spam_copy =
    "Received: from [192.168.1.2] (client.example.net [198.51.100.7]) by smtp.ourmail.example (Postfix) with ESMTPSA "
    "id 4XABCDEF12; Fri, 27 Nov 2026 18:04:05 +0000\n"
    "Message-ID: <copy@client.example.net>\nFrom: bob@example.org\nSubject: buy\n\nspam body\n";

}  // namespace

TEST_SUITE("eml") {
  TEST_CASE("unfolds continuation lines and keeps the folding white space") {
    for (std::string_view eol : {"\n", "\r\n"}) {
      std::string raw = "Subject: part one\n\tpart two\n  part three\nFrom: a@example.org\n\nbody\n";
      std::string text;
      for (char c : raw) text += c == '\n' ? std::string{eol} : std::string{c};
      auto m = parsed(text);
      CHECK_MESSAGE(m.subject == "part one\tpart two  part three", "got '", m.subject, "'");
      CHECK(m.from == "a@example.org");
      CHECK_MESSAGE(m.headers == text.substr(0, text.find(std::string{eol} + std::string{eol}) + eol.size()),
                    "headers are the raw block as in the input");
    }
  }

  TEST_CASE("reads header names case-insensitively and the obsolete space before the colon") {
    auto m = parsed("SUBJECT: upper\nmessage-id: <ID@x>\nFrom : a@example.org\nRETURN-PATH: <b@example.org>\n\n");
    CHECK(m.subject == "upper");
    CHECK(m.message_id == "ID@x");
    CHECK(m.from == "a@example.org");
    CHECK(m.envelope_from == "b@example.org");
  }

  TEST_CASE("parses each form of Received header") {
    struct row {
      const char* label;
      std::string value;
      std::string helo, name, ip, by, with, id, for_addr, auth;
      std::optional<long long> at;
      bool ours;
    };
    const std::vector<row> rows{
        {"postfix authenticated submission", submission, "[192.168.1.2]", "client.example.net", "198.51.100.7",
         "smtp.ourmail.example", "ESMTPSA", "4XABCDEF12", "victim@example.com", "bob@example.org", 1795802645, true},
        {"postfix inbound relay",
         "from mx.other.example (mx.other.example [203.0.113.9]) by mx1.ourmail.example (Postfix) with ESMTPS id "
         "4X0000AAAA for <u@ourmail.example>; Fri, 27 Nov 2026 18:04:06 +0000 (UTC)",
         "mx.other.example", "mx.other.example", "203.0.113.9", "mx1.ourmail.example", "ESMTPS", "4X0000AAAA",
         "u@ourmail.example", "", 1795802646, true},
        {"TLS comments and a long queue id",
         "from mail.client.example (mail.client.example [198.51.100.7])\t(using TLSv1.3 with cipher "
         "TLS_AES_256_GCM_SHA384 (256/256 bits)\t key-exchange X25519 server-signature RSA-PSS (2048 bits) "
         "server-digest SHA256)\t(No client certificate requested)\t(Authenticated sender: bob@example.org)\tby "
         "smtp.ourmail.example (Postfix) with ESMTPSA id 4Pt2mN2VXxznjll\tfor <victim@example.com>; Fri, 27 Nov 2026 "
         "18:04:05 +0000 (UTC)",
         "mail.client.example", "mail.client.example", "198.51.100.7", "smtp.ourmail.example", "ESMTPSA",
         "4Pt2mN2VXxznjll", "victim@example.com", "bob@example.org", 1795802645, true},
        {"IPv6 helo and IPv6: address",
         "from [IPv6:2001:db8::1] (client6.example.net [IPv6:2001:db8::7]) (Authenticated sender: alice@example.org) "
         "by smtp.ourmail.example (Postfix) with ESMTPSA id 4Pt2mN2VXxznjll for <victim@example.com>; Fri, 27 Nov "
         "2026 18:04:05 +0000 (UTC)",
         "[IPv6:2001:db8::1]", "client6.example.net", "2001:db8::7", "smtp.ourmail.example", "ESMTPSA",
         "4Pt2mN2VXxznjll", "victim@example.com", "alice@example.org", 1795802645, true},
        {"bare IPv6 address",
         "from mail6.other.example (mail6.other.example [2001:db8::7]) by mx1.ourmail.example (Postfix) with ESMTPS "
         "id 4X0000AAAB for <u@ourmail.example>; Fri, 27 Nov 2026 18:04:06 +0000 (UTC)",
         "mail6.other.example", "mail6.other.example", "2001:db8::7", "mx1.ourmail.example", "ESMTPS", "4X0000AAAB",
         "u@ourmail.example", "", 1795802646, true},
        {"unknown reverse name",
         "from spamhost (unknown [198.51.100.7]) by mx1.ourmail.example (Postfix) with ESMTP id 4X0000BBBB for "
         "<u@ourmail.example>; Fri, 27 Nov 2026 18:04:06 +0000 (UTC)",
         "spamhost", "unknown", "198.51.100.7", "mx1.ourmail.example", "ESMTP", "4X0000BBBB", "u@ourmail.example", "",
         1795802646, true},
        {"exim without a reverse name",
         "from [198.51.100.7] (helo=client) by mx.other.example with esmtpsa (TLS1.3) tls TLS_AES_256_GCM_SHA384 "
         "(Exim 4.96) (envelope-from <bob@example.org>) id 1tXyZa-0001Ab-2c for carol@example.com; Fri, 27 Nov 2026 "
         "18:04:05 +0000",
         "[198.51.100.7]", "", "198.51.100.7", "mx.other.example", "esmtpsa", "1tXyZa-0001Ab-2c", "carol@example.com",
         "", 1795802645, false},
        {"postfix pickup without a from clause",
         "by smtp.ourmail.example (Postfix, from userid 1000) id 4XABCDEF99; Fri, 27 Nov 2026 18:04:05 +0000 (UTC)", "",
         "", "", "smtp.ourmail.example", "", "4XABCDEF99", "", "", 1795802645, true},
        {"sendmail with a nested comment",
         "from helo.example (rdns.example [198.51.100.7] (may be forged)) by mail.other.example (8.17.1/8.17.1) with "
         "ESMTP id 5ARI45Kx012345 for <x@other.example>; Fri, 27 Nov 2026 18:04:05 +0000",
         "helo.example", "rdns.example", "198.51.100.7", "mail.other.example", "ESMTP", "5ARI45Kx012345",
         "x@other.example", "", 1795802645, false},
        {"an invalid address is not taken",
         "from x (y [999.1.1.1]) by mx1.ourmail.example; Fri, 27 Nov 2026 18:04:05 +0000", "x", "", "",
         "mx1.ourmail.example", "", "", "", "", 1795802645, true},
        {"a semicolon inside a comment",
         "from a.example (a.example [198.51.100.7]) (comment; with semicolon) by mx1.ourmail.example id Q1; Fri, 27 "
         "Nov 2026 18:04:05 +0000",
         "a.example", "a.example", "198.51.100.7", "mx1.ourmail.example", "", "Q1", "", "", 1795802645, true},
    };
    for (const auto& r : rows) {
      SUBCASE(r.label) {
        std::string problem;
        received_hop h = parse_received(r.value, ours, problem);
        CHECK_MESSAGE(problem.empty(), "got problem '", problem, "'");
        CHECK(h.raw == r.value);
        CHECK_MESSAGE(h.from_helo == r.helo, "from_helo: got '", h.from_helo, "', want '", r.helo, "'");
        CHECK_MESSAGE(h.from_name == r.name, "from_name: got '", h.from_name, "', want '", r.name, "'");
        CHECK_MESSAGE(h.from_ip == r.ip, "from_ip: got '", h.from_ip, "', want '", r.ip, "'");
        CHECK_MESSAGE(h.by_host == r.by, "by_host: got '", h.by_host, "', want '", r.by, "'");
        CHECK_MESSAGE(h.with == r.with, "with: got '", h.with, "', want '", r.with, "'");
        CHECK_MESSAGE(h.id == r.id, "id: got '", h.id, "', want '", r.id, "'");
        CHECK_MESSAGE(h.for_addr == r.for_addr, "for_addr: got '", h.for_addr, "', want '", r.for_addr, "'");
        CHECK_MESSAGE(h.auth_user == r.auth, "auth_user: got '", h.auth_user, "', want '", r.auth, "'");
        CHECK_MESSAGE(epoch(h.at) == r.at, "at: got ", show(epoch(h.at)), ", want ", show(r.at));
        CHECK(h.ours == r.ours);
      }
    }
  }

  TEST_CASE("reports malformed Received headers in notes") {
    struct row {
      const char* label;
      std::string value;
      std::string want;
    };
    const std::vector<row> rows{
        {"no by host", "from a.example (a.example [198.51.100.7]); Fri, 27 Nov 2026 18:04:05 +0000", "no 'by' host"},
        {"no date", "from a.example by b.example id X", "no date after ';'"},
        {"bad date", "from a.example by b.example id X; yesterday", "bad date 'yesterday'"},
        {"unbalanced parentheses",
         "from a.example (a.example [198.51.100.7] by b.example; Fri, 27 Nov 2026 18:04:05 +0000",
         "unbalanced parentheses"},
    };
    for (const auto& r : rows) {
      SUBCASE(r.label) {
        std::string problem;
        (void)parse_received(r.value, ours, problem);
        CHECK_MESSAGE(problem.find(r.want) != std::string::npos, "got '", problem, "', want '", r.want, "'");
        auto m = parsed(with_hops({mx_from_smtp, r.value}));
        CHECK_MESSAGE(has_note(m, "malformed Received header 2: "), "notes: ", show(m.notes));
        CHECK_MESSAGE(has_note(m, r.want), "notes: ", show(m.notes));
      }
    }
  }

  TEST_CASE("recognises our host names exactly or by a dotted suffix") {
    CHECK(is_our_host("smtp.ourmail.example", ours));
    CHECK(is_our_host("SMTP.OurMail.Example", ours));
    CHECK(is_our_host("smtp.ourmail.example.", ours));
    CHECK(is_our_host("mx1.ourmail.example", ours));
    CHECK(is_our_host("a.out.ourmail.example", ours));
    CHECK_FALSE(is_our_host("out.ourmail.example", ours));
    CHECK_FALSE(is_our_host("xsmtp.ourmail.example", ours));
    CHECK_FALSE(is_our_host("smtp.ourmail.example.evil.example", ours));
    CHECK_FALSE(is_our_host("", ours));
    CHECK_FALSE(is_our_host("smtp.ourmail.example", {}));
    CHECK_FALSE(is_our_host("anything", {"", "."}));
  }

  TEST_CASE("takes the bottom-most hop of the first run of our hops as the submission hop") {
    const std::string out_hop =
        "from smtp.ourmail.example (smtp.ourmail.example [192.0.2.25]) by o1.out.ourmail.example (Postfix) with "
        "ESMTP id 4XOUT00001; Fri, 27 Nov 2026 18:04:05 +0000";
    const std::string mx_from_out =
        "from o1.out.ourmail.example (o1.out.ourmail.example [192.0.2.30]) by mx.example.com (Postfix) with ESMTPS "
        "id 4XmQ7d1Kz9zbtRw; Fri, 27 Nov 2026 18:04:06 +0000";
    auto m = parsed(with_hops({mx_from_out, out_hop, submission}));
    REQUIRE(m.received.size() == 3);
    CHECK_FALSE(m.received[0].ours);
    CHECK(m.received[1].ours);
    CHECK(m.received[2].ours);
    REQUIRE(m.has_our_hop);
    CHECK(m.our_hop_index == 2);
    CHECK(m.queue_id == "4XABCDEF12");
    CHECK(m.sasl_user == "bob@example.org");
    CHECK(m.client_ip == "198.51.100.7");
    CHECK(m.client_helo == "[192.168.1.2]");
    CHECK(epoch(m.received_at) == 1795802645);
    CHECK_MESSAGE(m.notes.empty(), "notes: ", show(m.notes));
  }

  TEST_CASE("uses our top hop when the copy was saved on our side") {
    auto m = parsed(with_hops({submission}));
    REQUIRE(m.has_our_hop);
    CHECK(m.our_hop_index == 0);
    CHECK(m.queue_id == "4XABCDEF12");
    CHECK_MESSAGE(m.notes.empty(), "notes: ", show(m.notes));
  }

  TEST_CASE("finds the inbound hop of a relayed message with no authenticated sender") {
    const std::string mx1 =
        "from mx.other.example (mx.other.example [203.0.113.9]) by mx1.ourmail.example (Postfix) with ESMTPS id "
        "4X0000AAAA for <u@ourmail.example>; Fri, 27 Nov 2026 18:04:06 +0000 (UTC)";
    const std::string other =
        "from unknown (unknown [198.51.100.99]) by mx.other.example (Postfix) with ESMTP id 1234ABCD; Fri, 27 Nov "
        "2026 18:04:04 +0000";
    auto m = parsed(with_hops({mx1, other}));
    REQUIRE(m.has_our_hop);
    CHECK(m.our_hop_index == 0);
    CHECK(m.queue_id == "4X0000AAAA");
    CHECK(m.sasl_user.empty());
    CHECK(m.client_ip == "203.0.113.9");
    CHECK(m.client_helo == "mx.other.example");
  }

  TEST_CASE("notes a hop that claims to be ours below a foreign hop and does not use it") {
    const std::string foreign =
        "from localhost (localhost [127.0.0.1]) by relay.bulk-mailer.example (Postfix) with ESMTP id 9C1E2A0431; Fri, "
        "27 Nov 2026 18:04:01 +0000";
    const std::string forged =
        "from [10.0.0.1] (x.example [198.51.100.50]) (Authenticated sender: ceo@example.org) by mx1.ourmail.example "
        "(Postfix) with ESMTPSA id 4XFAKE0002; Fri, 27 Nov 2026 18:04:00 +0000";
    auto m = parsed(with_hops({mx_from_smtp, submission, foreign, forged}));
    REQUIRE(m.has_our_hop);
    CHECK(m.our_hop_index == 1);
    CHECK(m.queue_id == "4XABCDEF12");
    CHECK(m.sasl_user == "bob@example.org");
    CHECK_MESSAGE(has_note(m, "hop 4 claims to be ours but is below a foreign hop (forged?): by mx1.ourmail.example"),
                  "notes: ", show(m.notes));
    CHECK_FALSE(has_note(m, "hop 2 claims"));
  }

  TEST_CASE("treats our hops as forged when the hop above received the message from a foreign host") {
    const std::string mx_from_bot =
        "from smtp.ourmail.example (unknown [203.0.113.66]) by mx.example.com (Postfix) with ESMTP id 4Y1Fz0Kp2Qz7vWx; "
        "Fri, 27 Nov 2026 18:04:06 +0000";
    auto m = parsed(with_hops({mx_from_bot, submission}));
    CHECK_FALSE(m.has_our_hop);
    CHECK(m.queue_id.empty());
    CHECK(m.sasl_user.empty());
    CHECK(m.client_ip.empty());
    CHECK_FALSE(m.received_at.has_value());
    CHECK_MESSAGE(has_note(m,
                           "hop 1 (by mx.example.com) received the message from unknown [203.0.113.66], which is "
                           "not one of our hosts"),
                  "notes: ", show(m.notes));
    CHECK_MESSAGE(has_note(m, "hop 2 claims to be ours but is below a foreign hop (forged?): by smtp.ourmail.example"),
                  "notes: ", show(m.notes));
  }

  TEST_CASE("uses our hops with a note when the hop above names no host") {
    const std::string exchange =
        "from AM0PR01MB1234.eurprd01.prod.example (2603:10a6:208:1::14) by AM0PR01MB5678.eurprd01.prod.example with "
        "Microsoft SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.7.1 via "
        "Frontend Transport; Fri, 27 Nov 2026 18:04:06 +0000";
    auto m = parsed(with_hops({exchange, submission}));
    REQUIRE(m.received.size() == 2);
    CHECK(m.received[0].from_ip == "2603:10a6:208:1::14");
    CHECK(m.received[0].with == "Microsoft");
    CHECK(m.received[0].id == "15.20.7.1");
    REQUIRE(m.has_our_hop);
    CHECK(m.queue_id == "4XABCDEF12");
    CHECK_MESSAGE(has_note(m, "could not be confirmed as ours"), "notes: ", show(m.notes));
  }

  TEST_CASE("notes a message without any hop of ours") {
    auto m =
        parsed(with_hops({"from a.example (a.example [198.51.100.7]) by mx.example.com id Z1; Fri, 27 Nov 2026 "
                          "18:04:05 +0000"}));
    CHECK_FALSE(m.has_our_hop);
    CHECK(has_note(m, "no Received header by our hosts"));
    auto none = parsed(with_hops({}));
    CHECK(none.received.empty());
    CHECK(has_note(none, "no Received header by our hosts"));
  }

  TEST_CASE("compares Date with our Received") {
    auto early = parsed(with_hops({submission}, "Tue, 24 Nov 2026 18:04:05 +0000"));
    CHECK_MESSAGE(has_note(early, "Date is 3 days before our Received"), "notes: ", show(early.notes));
    auto late = parsed(with_hops({submission}, "Fri, 27 Nov 2026 20:04:05 +0000"));
    CHECK_MESSAGE(has_note(late, "Date is 2 hours after our Received"), "notes: ", show(late.notes));
    auto fine = parsed(with_hops({submission}, "Fri, 27 Nov 2026 18:04:00 +0000"));
    CHECK_MESSAGE(fine.notes.empty(), "notes: ", show(fine.notes));
  }

  TEST_CASE("reads the single fields and notes missing or repeated ones") {
    auto m = parsed(
        "Return-Path: <>\nMessage-ID:\n <abc.123@host.example> (comment)\nFrom: \"Doe, John (Sales)\" "
        "<john@example.org>\nFrom: second@example.org\nTo: a@example.com, b@example.com\nCc: c@example.com\n"
        "Subject: hello\n\n");
    CHECK(m.envelope_from.empty());
    CHECK(m.message_id == "abc.123@host.example");
    CHECK(m.from == "\"Doe, John (Sales)\" <john@example.org>");
    CHECK(m.from_addr == "john@example.org");
    CHECK(m.to == "a@example.com, b@example.com");
    CHECK(m.cc == "c@example.com");
    CHECK_MESSAGE(has_note(m, "2 From headers; the first is used"), "notes: ", show(m.notes));
    CHECK(has_note(m, "no Date header"));

    auto bare = parsed("From: plain@example.org (Plain Person)\nDate: not a date\nSubject: x\n\n");
    CHECK(bare.from_addr == "plain@example.org");
    CHECK(has_note(bare, "no Message-ID"));
    CHECK(bare.date_text == "not a date");
    CHECK_FALSE(bare.date.has_value());
    CHECK_MESSAGE(has_note(bare, "Date is not a valid RFC 5322 date: 'not a date'"), "notes: ", show(bare.notes));
  }

  TEST_CASE("parses RFC 5322 dates and their obsolete forms") {
    struct row {
      const char* text;
      long long want;
    };
    const std::vector<row> rows{
        {"Fri, 27 Nov 2026 18:04:05 +0000 (UTC)", 1795802645},
        {"27 Nov 2026 18:04:05 +0000", 1795802645},
        {"Fri, 27 Nov 2026 19:04:05 +0100", 1795802645},
        {"Fri, 27 Nov 2026 13:04:05 -0500", 1795802645},
        {"Fri, 27 Nov 2026 13:04:05 EST", 1795802645},
        {"Fri, 27 Nov 2026 14:04:05 EDT", 1795802645},
        {"Fri, 27 Nov 2026 12:04:05 CST", 1795802645},
        {"Fri, 27 Nov 2026 10:04:05 PST", 1795802645},
        {"Fri, 27 Nov 2026 11:04:05 PDT", 1795802645},
        {"Fri, 27 Nov 2026 18:04:05 GMT", 1795802645},
        {"Fri, 27 Nov 2026 18:04:05 UT", 1795802645},
        {"Fri, 27 Nov 2026 18:04:05 Z", 1795802645},
        {"Fri, 27 Nov 2026 18:04:05 CET", 1795802645},
        {"Fri, 27 Nov 2026 18:04:05 -0000", 1795802645},
        {"Fri, 27 Nov 26 18:04:05 +0000", 1795802645},
        {"Fri, 1 Jan 99 00:00:00 GMT", 915148800},
        {"31 Dec 49 23:59:59 +0000", 2524607999},
        {"Thu, 15 Jun 50 12:00:00 +0000", -616852800},
        {"15 Jun 050 12:00:00 +0000", -616852800},
        {"Friday, 27 November 2026 18:04:05 +0000", 1795802645},
        {"Fri,27 Nov 2026 18:04:05 +0000", 1795802645},
        {"Fri 27 Nov 2026 18:04:05 +0000", 1795802645},
        {"Fri, 27 Nov 2026 18:04 +0000", 1795802640},
        {"  Fri, 27 (day) Nov 2026 18:04:05 (a (nested) comment) +0000 (UTC)  ", 1795802645},
        {"fri, 27 nov 2026 18:04:05 +0000", 1795802645},
        {"Fri, 27 Nov 2026\r\n 18:04:05 +0000", 1795802645},
        {"Thu, 29 Feb 2024 12:00:00 +0000", 1709208000},
    };
    for (const auto& r : rows) {
      auto got = epoch(parse_rfc5322_date(r.text));
      CHECK_MESSAGE(got == r.want, "'", r.text, "': got ", show(got), ", want ", r.want);
    }
  }

  TEST_CASE("rejects bad dates") {
    const std::vector<std::string> bad{
        "",
        "garbage",
        "Fri, 27 Nov 2026",
        "Fri, 27 Nov 2026 18:04:05",
        "Fri, 31 Nov 2026 18:04:05 +0000",
        "Sun, 29 Feb 2026 12:00:00 +0000",
        "Fri, 0 Nov 2026 18:04:05 +0000",
        "Fri, 27 Nov 2026 24:00:00 +0000",
        "Fri, 27 Nov 2026 18:60:00 +0000",
        "Fri, 27 Nov 2026 18:04:61 +0000",
        "Fri, 27 Nov 2026 18:4:05 +0000",
        "Fri, 27 Nov 2026 18:04:05 +2500",
        "Fri, 27 Nov 2026 18:04:05 +0060",
        "Fri, 27 Nov 2026 18:04:05 +00000",
        "Fri, 27 Nov 2026 18:04:05 ABCDEF",
        "Fri, 27 Foo 2026 18:04:05 +0000",
        "Xyz, 27 Nov 2026 18:04:05 +0000",
        "Fri, 27 Nov 1899 18:04:05 +0000",
        "Fri, 27 Nov 2300 18:04:05 +0000",
        "Fri, 27 Nov 9 18:04:05 +0000",
        "Fri, 27 Nov 2026 18:04:05 +0000 trailing",
        "Fri, 27 Nov 2026 18:04:05 +0000 (unclosed",
        "Fri, 27 Nov 2026 18:04:05 +0000)",
        "Fri, 27 Nov 99999 18:04:05 +0000",
        std::string(300, '1'),
        "Fri, 27 Nov 2026 18:04:05 +0000 " + std::string(250, ' ') + "x",
    };
    for (const auto& b : bad) {
      auto got = epoch(parse_rfc5322_date(b));
      CHECK_MESSAGE(!got.has_value(), "'", b.substr(0, 60), "': got ", show(got), ", want nullopt");
    }
  }

  TEST_CASE("decodes RFC 2047 encoded-words") {
    struct row {
      const char* in;
      const char* want;
    };
    const std::vector<row> rows{
        {"=?UTF-8?B?R8O8bnN0aWdl?=", "G\xC3\xBCnstige"},
        {"=?utf-8?b?R3LDvMOfZQ==?=",
         "Gr\xC3\xBC\xC3\x9F"
         "e"},
        {"=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_Berlin?=",
         "Gr\xC3\xBC\xC3\x9F"
         "e aus Berlin"},
        {"=?ISO-8859-1?Q?R=E9sum=E9?=", "R\xC3\xA9sum\xC3\xA9"},
        {"=?iso-8859-1?B?UulzdW3p?=", "R\xC3\xA9sum\xC3\xA9"},
        {"=?windows-1252?Q?=80_49?=", "\xE2\x82\xAC 49"},
        {"=?UTF-8?Q?a?= =?UTF-8?Q?b?=", "ab"},
        {"=?UTF-8?Q?a?=\t  =?UTF-8?Q?b?=", "ab"},
        {"=?UTF-8?Q?a?= x =?UTF-8?Q?b?=", "a x b"},
        {"Re: =?UTF-8?Q?caf=C3=A9?= today", "Re: caf\xC3\xA9 today"},
        {"=?us-ascii?Q?plain?=", "plain"},
        {"=?utf-8*en?Q?hello?=", "hello"},
        {"=?UTF-8?Q?"
         "?=",
         ""},  // split: "??=" is a trigraph
        {"=?KOI8-R?B?8NLJ18XU?=", "=?KOI8-R?B?8NLJ18XU?="},
        {"=?UTF-8?X?abc?=", "=?UTF-8?X?abc?="},
        {"=?UTF-8?B?!!!?=", "=?UTF-8?B?!!!?="},
        {"=?UTF-8?Q?=ZZ?=", "=?UTF-8?Q?=ZZ?="},
        {"=?UTF-8?Q?unterminated", "=?UTF-8?Q?unterminated"},
        {"=?UTF-8?Q?with space?=", "=?UTF-8?Q?with space?="},
        {"=?UTF-8?Q?line=0Abreak=00?=", "line break "},
        {"=?UTF-8?B?/w==?=", "\xEF\xBF\xBD"},
        {"=?UTF-8?Q?=ED=A0=80?=", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"caf\xE9 raw latin1", "caf\xEF\xBF\xBD raw latin1"},
        {"plain text", "plain text"},
        {"=?=?UTF-8?Q?x?=", "=?x"},
    };
    for (const auto& r : rows) {
      auto got = decode_rfc2047(r.in);
      CHECK_MESSAGE(got == r.want, "'", r.in, "': got '", got, "', want '", r.want, "'");
    }
    CHECK(decode_rfc2047(std::string{"nul\0byte", 8}) ==
          "nul\xEF\xBF\xBD"
          "byte");
  }

  TEST_CASE("keeps NUL bytes out of every parsed field but the raw ones") {
    const std::string raw{
        "From: a@example.org\nSubject: x\0y\nReceived: by mx1.ourmail.example id Q\0Z; Fri, 27 Nov "
        "2026 18:04:05 +0000\n\n",
        107};
    REQUIRE(raw.back() == '\n');
    auto m = parsed(raw);
    CHECK(m.subject == "x\xEF\xBF\xBDy");
    REQUIRE(m.has_our_hop);
    CHECK(m.queue_id == "Q\xEF\xBF\xBDZ");
    CHECK(m.received[0].raw.find('\0') != std::string::npos);
    CHECK(m.headers.find('\0') != std::string::npos);
    CHECK(has_note(m, "header line 2 contains a NUL byte"));
  }

  TEST_CASE("extracts a 7bit message/rfc822 part byte for byte and not the wrapper") {
    auto raw = complaint({"Content-Type: text/plain\n\nsee attached\n",
                          "Content-Type: message/rfc822\nContent-Transfer-Encoding: 7bit\n\n" + spam_copy});
    std::string error;
    std::vector<std::string> notes;
    auto copies = extract_messages(raw, error, notes);
    CHECK(error.empty());
    CHECK_MESSAGE(notes.empty(), "notes: ", show(notes));
    REQUIRE(copies.size() == 1);
    CHECK_MESSAGE(copies[0] == spam_copy, "got '", copies[0], "'");
  }

  TEST_CASE("extracts base64 and quoted-printable encoded message/rfc822 parts") {
    const std::string b64 =
        "UmVjZWl2ZWQ6IGJ5IHNtdHAub3VybWFpbC5leGFtcGxlIGlkIDRYQjY0OyBGcmksIDI3IE5vdiAy\r\n"
        "MDI2IDE4OjA0OjA1ICswMDAwDQpGcm9tOiBib2JAZXhhbXBsZS5vcmcNCg0KYm9keQ0K\r\n";
    const std::string qp =
        "Received: by smtp.ourmail.example id 4XQP; Fri, 27 Nov 2026 18:04:05 +0000\n"
        "From: bob@example.org\nSubject: =3D?UTF-8?Q?x?=3D\n\nlong line that is =\nsoft broken=20\n";
    auto raw = complaint({"Content-Type: message/rfc822\nContent-Transfer-Encoding: BASE64\n\n" + b64,
                          "Content-Type: message/rfc822\nContent-Transfer-Encoding: quoted-printable\n\n" + qp});
    std::string error;
    auto copies = extract_messages(raw, error);
    CHECK(error.empty());
    REQUIRE(copies.size() == 2);
    CHECK(copies[0] ==
          "Received: by smtp.ourmail.example id 4XB64; Fri, 27 Nov 2026 18:04:05 +0000\r\nFrom: bob@example.org\r\n"
          "\r\nbody\r\n");
    CHECK(copies[1] ==
          "Received: by smtp.ourmail.example id 4XQP; Fri, 27 Nov 2026 18:04:05 +0000\n"
          "From: bob@example.org\nSubject: =?UTF-8?Q?x?=\n\nlong line that is soft broken \n");
    auto m = parsed(copies[0]);
    REQUIRE(m.has_our_hop);
    CHECK(m.queue_id == "4XB64");
    CHECK(parsed(copies[1]).subject == "x");
  }

  TEST_CASE("extracts message/rfc822 parts from nested multiparts and digests") {
    std::string inner =
        "Content-Type: multipart/alternative; boundary=\"inner\"\n\n--inner\nContent-Type: text/plain\n\nhi\n"
        "--inner\nContent-Type: message/rfc822\n\n" +
        spam_copy + "--inner--\n";
    std::string digest = "Content-Type: multipart/digest; boundary=dg\n\n--dg\n\n" + spam_copy +
                         "--dg\n\nFrom: second@example.org\n"
                         "Subject: two\n\nx\n--dg--\n";
    auto raw = complaint({inner, digest});
    std::string error;
    std::vector<std::string> notes;
    auto copies = extract_messages(raw, error, notes);
    CHECK(error.empty());
    CHECK_MESSAGE(notes.empty(), "notes: ", show(notes));
    REQUIRE(copies.size() == 3);
    // The line break before a delimiter belongs to the delimiter.
    const std::string unterminated = spam_copy.substr(0, spam_copy.size() - 1);
    CHECK(copies[0] == unterminated);
    CHECK(copies[1] == unterminated);
    CHECK(copies[2] == "From: second@example.org\nSubject: two\n\nx");
  }

  TEST_CASE("does not look for copies inside a copy") {
    std::string copy_with_attachment =
        "From: bob@example.org\nSubject: outer\nContent-Type: multipart/mixed; boundary=in\n\n--in\n"
        "Content-Type: message/rfc822\n\nFrom: inner@example.org\nSubject: inner\n\nx\n--in--\n";
    auto copies = [&] {
      std::string error;
      return extract_messages(complaint({"Content-Type: message/rfc822\n\n" + copy_with_attachment}), error);
    }();
    REQUIRE(copies.size() == 1);
    CHECK(parsed(copies[0]).subject == "outer");
  }

  TEST_CASE("extracts text/rfc822-headers parts and attached .eml files") {
    const std::string eml_b64 = "RnJvbTogYm9iQGV4YW1wbGUub3JnClN1YmplY3Q6IGVtbAoKYm9keQo=\n";  // From/Subject: eml
    auto raw = complaint({"Content-Type: text/rfc822-headers\n\nFrom: bob@example.org\nSubject: headers only\n",
                          "Content-Type: application/octet-stream\nContent-Disposition: attachment; "
                          "filename=\"Spam Sample.EML\"\nContent-Transfer-Encoding: base64\n\n" +
                              eml_b64,
                          "Content-Type: application/octet-stream; name=\"junk.eml\"\n\nnot a mail at all\n"});
    std::string error;
    std::vector<std::string> notes;
    auto copies = extract_messages(raw, error, notes);
    REQUIRE(copies.size() == 2);
    CHECK(parsed(copies[0]).subject == "headers only");
    CHECK(parsed(copies[1]).subject == "eml");
    CHECK_MESSAGE(has_note(notes, "attachment 'junk.eml' is not a mail"), "notes: ", show(notes));
  }

  TEST_CASE("returns the message itself when it has no attached copies") {
    const std::string plain = "From: bob@example.org\nSubject: hi\n\nbody\n";
    const std::string alt =
        "From: bob@example.org\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\nContent-Type: "
        "text/plain\r\n\r\nx\r\n--a--\r\n";
    for (const auto& raw : {plain, alt}) {
      std::string error;
      auto copies = extract_messages(raw, error);
      CHECK(error.empty());
      REQUIRE(copies.size() == 1);
      CHECK(copies[0] == raw);
    }
  }

  TEST_CASE("notes multipart problems and still returns what is there") {
    std::string error;
    std::vector<std::string> notes;
    auto truncated = extract_messages(
        "From: a@example.com\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: message/rfc822\n\n"
        "From: bob@example.org\nSubject: cut\n\nhalf a bo",
        error, notes);
    CHECK(error.empty());
    REQUIRE(truncated.size() == 1);
    CHECK(truncated[0] == "From: bob@example.org\nSubject: cut\n\nhalf a bo");
    CHECK_MESSAGE(has_note(notes, "has no closing boundary '--zz--'"), "notes: ", show(notes));

    notes.clear();
    const std::string no_param = "From: a@example.com\nContent-Type: multipart/mixed\n\n--x\n\nhi\n";
    auto itself = extract_messages(no_param, error, notes);
    REQUIRE(itself.size() == 1);
    CHECK(itself[0] == no_param);
    CHECK_MESSAGE(has_note(notes, "without a boundary parameter"), "notes: ", show(notes));

    notes.clear();
    (void)extract_messages("From: a@example.com\nContent-Type: multipart/mixed; boundary=q\n\nno parts\n", error,
                           notes);
    CHECK_MESSAGE(has_note(notes, "has no boundary line '--q'"), "notes: ", show(notes));
  }

  TEST_CASE("rejects input that is not a mail with a one-line reason") {
    struct row {
      const char* label;
      std::string raw;
      std::string want;
    };
    const std::vector<row> rows{
        {"empty", "", "not a mail: empty input"},
        {"blank", " \r\n\n\t\n", "not a mail: empty input"},
        {"plain text", "Hello,\nthis is spam.\n", "not a mail: line 1 is not a header field"},
        {"binary", std::string{"\x89PNG\r\n\x1a\n\0\0\0", 11}, "not a mail: line 1 is not a header field"},
        {"continuation first", " folded: x\nFrom: a@b\n", "not a mail: line 1 starts with white space"},
        {"not mail fields", "Name: value\nOther: x\n\nbody\n", "not a mail: no From, Date, Received"},
        {"only an mbox line", "From bob@example.org Fri Nov 27 18:04:05 2026\n", "not a mail: no header block"},
    };
    for (const auto& r : rows) {
      SUBCASE(r.label) {
        std::string error;
        auto copies = extract_messages(r.raw, error);
        CHECK(copies.empty());
        CHECK_MESSAGE(error.find(r.want) == 0, "got '", error, "', want '", r.want, "'");
        CHECK(error.find('\n') == std::string::npos);
        std::string perror;
        auto m = parse_message(r.raw, ours, perror);
        CHECK(perror == error);
        CHECK(m.received.empty());
      }
    }
  }

  TEST_CASE("accepts an mbox From_ line and a byte order mark before the headers") {
    auto m = parsed(
        "\xEF\xBB\xBF"
        "From bob@example.org Fri Nov 27 18:04:05 2026\nSubject: mbox\nFrom: b@example.org\n\nx\n");
    CHECK(m.subject == "mbox");
    CHECK(m.headers == "Subject: mbox\nFrom: b@example.org\n");
  }

  TEST_CASE("ends the header block at a line that is no field with a note") {
    auto m = parsed("From: a@example.org\nSubject: s\nthis is body text\nTo: not@header.example\n");
    CHECK(m.to.empty());
    CHECK(m.headers == "From: a@example.org\nSubject: s\n");
    CHECK_MESSAGE(has_note(m, "header line 3 is neither a field nor a continuation"), "notes: ", show(m.notes));
  }

  TEST_CASE("rejects 10 MB of A quickly") {
    const std::string big(10u << 20, 'A');
    std::string error;
    double t = seconds_for([&] {
      CHECK(extract_messages(big, error).empty());
      CHECK(error == "not a mail: line 1 is not a header field");
      std::string perror;
      (void)parse_message(big, ours, perror);
      CHECK(!perror.empty());
    });
    CHECK_MESSAGE(t < quick, "took ", t, " s");
    std::string too_big = "From: a@example.org\n\n" + std::string(eml_limits::max_input_bytes, 'x');
    CHECK(extract_messages(too_big, error).empty());
    CHECK_MESSAGE(error.find("over the limit") != std::string::npos, "got '", error, "'");
  }

  TEST_CASE("bounds a 10 MB header field and a 10 MB folded header") {
    std::string long_line = "From: a@example.org\nSubject: " + std::string(10u << 20, 'A') + "\n\nbody\n";
    std::string folded = "From: a@example.org\nSubject: x\n";
    for (int i = 0; i < 1'000'000; ++i) folded += " AAAAAAAA\n";
    folded += "\nbody\n";
    for (const auto* raw : {&long_line, &folded}) {
      parsed_message m;
      double t = seconds_for([&] { m = parsed(*raw); });
      CHECK_MESSAGE(t < quick, "took ", t, " s");
      CHECK(m.subject.size() <= eml_limits::max_field_bytes);
      CHECK(m.headers.size() <= eml_limits::max_header_bytes);
      CHECK(m.from == "a@example.org");
      CHECK_MESSAGE(has_note(m, "is longer than"), "notes: ", show(m.notes));
      std::string error;
      auto copies = extract_messages(*raw, error);
      REQUIRE(copies.size() == 1);
      CHECK(copies[0].size() == raw->size());
    }
  }

  TEST_CASE("bounds 100k header fields and 100k Received headers") {
    std::string many = "From: a@example.org\n";
    for (int i = 0; i < 100'000; ++i) many += "X-H" + std::to_string(i) + ": v\n";
    many += "Subject: late\n\nbody\n";
    std::string hops = "From: a@example.org\n";
    for (int i = 0; i < 100'000; ++i) hops += "Received: from a (b [198.51.100.7]) by mx1.ourmail.example id Q; x\n";
    hops += "\n";
    parsed_message m1, m2;
    double t = seconds_for([&] {
      m1 = parsed(many);
      m2 = parsed(hops);
      std::string error;
      CHECK(extract_messages(many, error).size() == 1);
    });
    CHECK_MESSAGE(t < quick, "took ", t, " s");
    CHECK(m1.subject.empty());  // past max_fields
    CHECK_MESSAGE(has_note(m1, "more than 1000 header fields"), "notes: ", show(m1.notes));
    CHECK(m2.received.size() == eml_limits::max_received);
    CHECK(m2.notes.size() <= eml_limits::max_notes + 1);
    CHECK(has_note(m2, "more problems were found"));
  }

  TEST_CASE("stops at 10 nested multipart levels") {
    auto nested = [](int levels) {
      std::string head = "From: a@example.com\nContent-Type: multipart/mixed; boundary=\"b0\"\n\n";
      std::string tail;
      for (int i = 0; i < levels; ++i) {
        std::string b = "b" + std::to_string(i);
        head += "--" + b + "\n";
        if (i + 1 < levels) {
          head += "Content-Type: multipart/mixed; boundary=\"b" + std::to_string(i + 1) + "\"\n\n";
        } else {
          head += "Content-Type: message/rfc822\n\nFrom: deep@example.org\nSubject: deep\n\nx\n";
        }
        tail = "--" + b + "--\n" + tail;
      }
      return head + tail;
    };
    std::string error;
    std::vector<std::string> notes;
    auto ten = extract_messages(nested(10), error, notes);
    REQUIRE(ten.size() == 1);
    CHECK(ten[0] == "From: deep@example.org\nSubject: deep\n\nx");
    CHECK_MESSAGE(notes.empty(), "notes: ", show(notes));

    auto eleven = extract_messages(nested(11), error, notes);
    REQUIRE(eleven.size() == 1);
    CHECK(eleven[0].starts_with("From: a@example.com"));
    CHECK(has_note(notes, "nested deeper than 10 levels"));

    notes.clear();
    std::string deep = nested(5000);
    double t = seconds_for([&] { CHECK(extract_messages(deep, error, notes).size() == 1); });
    CHECK_MESSAGE(t < quick, "took ", t, " s");
    CHECK(has_note(notes, "nested deeper than 10 levels"));
  }

  TEST_CASE("bounds the number of parts and copies") {
    std::string parts = "From: a@example.com\nContent-Type: multipart/mixed; boundary=p\n\n";
    for (int i = 0; i < 100'000; ++i) parts += "--p\nContent-Type: message/rfc822\n\nFrom: x@example.org\n\nx\n";
    parts += "--p--\n";
    std::string error;
    std::vector<std::string> notes;
    std::vector<std::string> copies;
    double t = seconds_for([&] { copies = extract_messages(parts, error, notes); });
    CHECK_MESSAGE(t < quick, "took ", t, " s");
    CHECK(copies.size() == eml_limits::max_copies);
    CHECK(has_note(notes, "more than 100 attached messages"));
    CHECK(has_note(notes, "more than 1000 MIME parts"));
  }

  TEST_CASE("survives hostile Received headers and encoded-words") {
    std::string parens = "from " + std::string(200'000, '(') + " by x; Fri, 27 Nov 2026 18:04:05 +0000";
    std::string closes = "from " + std::string(200'000, ')') + " by x; Fri, 27 Nov 2026 18:04:05 +0000";
    std::string words;
    for (int i = 0; i < 20'000; ++i) words += "=?utf-8?q?a=?";
    std::string chain;
    for (int i = 0; i < 20'000; ++i) chain += "=?utf-8?b?YQ==?= ";
    double t = seconds_for([&] {
      std::string problem;
      auto h = parse_received(parens, ours, problem);
      CHECK(problem.find("unbalanced parentheses") != std::string::npos);
      (void)parse_received(closes, ours, problem);
      CHECK(decode_rfc2047(words) == words);
      CHECK(decode_rfc2047(chain) == std::string(20'000, 'a') + " ");
    });
    CHECK_MESSAGE(t < quick, "took ", t, " s");
  }

  TEST_CASE("never crashes on scrambled mail") {
    // A fixed pseudo-random mix of mail fragments: the sanitizer builds make this a small fuzz run.
    const std::vector<std::string> pieces{"From: a@b\n",
                                          "Received: from ",
                                          "(",
                                          ")",
                                          "[",
                                          "]",
                                          "[IPv6:",
                                          "by ",
                                          "with ",
                                          "id ",
                                          "for <",
                                          ">",
                                          "; ",
                                          "Fri, 27 Nov 2026 18:04:05 +0000",
                                          "\n",
                                          "\r\n",
                                          "\n\n",
                                          " ",
                                          "\t",
                                          "Content-Type: multipart/mixed; boundary=q\n",
                                          "--q\n",
                                          "--q--\n",
                                          "Content-Type: message/rfc822\n",
                                          "Content-Transfer-Encoding: base64\n",
                                          "Content-Transfer-Encoding: quoted-printable\n",
                                          "=?utf-8?q?",
                                          "=?utf-8?b?",
                                          "?=",
                                          "=",
                                          "=\n",
                                          "=C3",
                                          "\xff",
                                          std::string{"\0", 1},
                                          "smtp.ourmail.example",
                                          "(Authenticated sender: ",
                                          "Subject: ",
                                          ":",
                                          "\"",
                                          "\\",
                                          "<>"};
    std::uint64_t state = 0x2545F4914F6CDD1DULL;
    auto next = [&] {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      return state;
    };
    for (int round = 0; round < 2000; ++round) {
      std::string raw = round % 2 == 0 ? "From: a@example.org\n" : "";
      auto n = next() % 200;
      for (std::uint64_t i = 0; i < n; ++i) raw += pieces[next() % pieces.size()];
      std::string error;
      std::vector<std::string> notes;
      for (const auto& copy : extract_messages(raw, error, notes)) {
        std::string perror;
        (void)parse_message(copy, ours, perror);
      }
      (void)parse_rfc5322_date(raw.substr(0, 100));
      (void)decode_rfc2047(raw);
    }
    CHECK(true);
  }

  // ---- the sample files (tests/data/eml) ----

  TEST_CASE("sample spam_plain.eml has our submission hop") {
    auto raw = read_sample("spam_plain.eml");
    for (const auto& hosts : {std::vector<std::string>{"smtp.ourmail.example", "mx1.ourmail.example"},
                              std::vector<std::string>{".ourmail.example"}}) {
      std::string error;
      auto copies = extract_messages(raw, error);
      REQUIRE(copies.size() == 1);
      CHECK(copies[0] == raw);
      auto m = parsed(raw, hosts);
      CHECK(m.message_id == "20261127180403.GA4121@client.example.net");
      CHECK(m.subject == "G\xC3\xBCnstige Uhren \xE2\x80\x93 nur heute!");
      CHECK(m.from == "\"Bob Sender\" <bob@example.org>");
      CHECK(m.from_addr == "bob@example.org");
      CHECK(m.to == "victim@example.com");
      CHECK(m.envelope_from == "bob@example.org");
      CHECK(epoch(m.date) == 1795802643);
      REQUIRE(m.received.size() == 2);
      CHECK(m.received[0].by_host == "mx.example.com");
      CHECK(m.received[0].from_name == "smtp.ourmail.example");
      CHECK(m.received[0].from_ip == "192.0.2.25");
      CHECK(m.received[0].with == "ESMTPS");
      CHECK_FALSE(m.received[0].ours);
      CHECK(m.received[1].ours);
      REQUIRE(m.has_our_hop);
      CHECK(m.our_hop_index == 1);
      CHECK(m.queue_id == "4XABCDEF12");
      CHECK(m.sasl_user == "bob@example.org");
      CHECK(m.client_ip == "198.51.100.7");
      CHECK(m.client_helo == "[192.168.1.2]");
      CHECK(epoch(m.received_at) == 1795802645);
      CHECK(m.headers == raw.substr(0, raw.find("\n\n") + 1));
      CHECK_MESSAGE(m.notes.empty(), "notes: ", show(m.notes));
    }
  }

  TEST_CASE("sample complaint_forwarded.eml yields its two attached copies") {
    auto raw = read_sample("complaint_forwarded.eml");
    std::string error;
    std::vector<std::string> notes;
    auto copies = extract_messages(raw, error, notes);
    CHECK(error.empty());
    CHECK_MESSAGE(notes.empty(), "notes: ", show(notes));
    REQUIRE(copies.size() == 2);

    auto wrapper = parsed(raw);
    CHECK(wrapper.queue_id == "4Y0Hk21Rt7zcqLp");  // the complaint's own hop into mx1, not a spam copy

    auto a = parsed(copies[0]);
    CHECK(a.message_id == "20261127181040.GB4121@client.example.net");
    CHECK(a.to == "carol@example.com");
    REQUIRE(a.has_our_hop);
    CHECK(a.queue_id == "4XABCDEF13");
    CHECK(a.received[a.our_hop_index].for_addr == "carol@example.com");
    CHECK(a.sasl_user == "bob@example.org");
    CHECK(a.client_ip == "198.51.100.7");
    CHECK(epoch(a.received_at) == 1795803041);
    CHECK_MESSAGE(a.notes.empty(), "notes: ", show(a.notes));

    auto b = parsed(copies[1]);
    CHECK(copies[1].find("\r\n") != std::string::npos);  // decoded from base64 with its CRLF
    CHECK(b.message_id == "20261124181200.GC4121@client.example.net");
    CHECK(b.from == "Lieferdienst Kundenservice <bob@example.org>");
    CHECK(b.subject == "Ihre Lieferung: Geb\xC3\xBChr offen");
    REQUIRE(b.has_our_hop);
    CHECK(b.queue_id == "4XABCDEF14");
    CHECK(b.received[b.our_hop_index].for_addr == "dave@example.com");
    CHECK(epoch(b.received_at) == 1795803150);
    CHECK_MESSAGE(has_note(b, "Date is 3 days before our Received"), "notes: ", show(b.notes));
  }

  TEST_CASE("sample spam_forged.eml has no usable hop of ours") {
    auto raw = read_sample("spam_forged.eml");
    for (const auto& hosts : {std::vector<std::string>{"smtp.ourmail.example", "mx1.ourmail.example"},
                              std::vector<std::string>{".ourmail.example"}}) {
      auto m = parsed(raw, hosts);
      REQUIRE(m.received.size() == 3);
      CHECK(m.received[2].ours);
      CHECK(m.received[2].auth_user == "ceo@example.org");
      CHECK_FALSE(m.has_our_hop);
      CHECK(m.queue_id.empty());
      CHECK(m.sasl_user.empty());
      CHECK_MESSAGE(
          has_note(m, "hop 3 claims to be ours but is below a foreign hop (forged?): by smtp.ourmail.example"),
          "notes: ", show(m.notes));
      CHECK_MESSAGE(has_note(m, "received the message from localhost [127.0.0.1], which is not one of our hosts"),
                    "notes: ", show(m.notes));
    }
  }

  TEST_CASE("sample malformed.eml is rejected") {
    auto raw = read_sample("malformed.eml");
    std::string error;
    CHECK(extract_messages(raw, error).empty());
    CHECK_MESSAGE(error == "not a mail: line 1 is not a header field", "got '", error, "'");
    std::string perror;
    (void)parse_message(raw, ours, perror);
    CHECK(perror == error);
  }

  TEST_CASE("sample truncated_multipart.eml yields both copies with a note") {
    auto raw = read_sample("truncated_multipart.eml");
    std::string error;
    std::vector<std::string> notes;
    auto copies = extract_messages(raw, error, notes);
    CHECK(error.empty());
    REQUIRE(copies.size() == 2);
    CHECK_MESSAGE(has_note(notes, "no closing boundary"), "notes: ", show(notes));
    auto a = parsed(copies[0]);
    auto b = parsed(copies[1]);
    CHECK(a.queue_id == "4XABCDEF15");
    CHECK(epoch(a.received_at) == 1795940404);
    CHECK(b.queue_id == "4XABCDEF16");
    CHECK(epoch(b.received_at) == 1795940499);
    CHECK(b.to == "frank@example.net");
  }

  TEST_CASE("sample spam_crlf.eml has CRLF lines and an IPv6 client") {
    auto raw = read_sample("spam_crlf.eml");
    REQUIRE(raw.find("\r\n") != std::string::npos);
    REQUIRE(raw.find("\n") == raw.find("\r\n") + 1);
    std::string error;
    auto copies = extract_messages(raw, error);
    REQUIRE(copies.size() == 1);
    CHECK(copies[0] == raw);
    auto m = parsed(raw);
    CHECK(m.message_id == "a1c9e2f0-6b3d-4e8a-9f21-7c5d0b4e3a19@client6.example.net");
    CHECK(m.subject == "R\xC3\xA9sum\xC3\xA9 for you");
    CHECK(m.from_addr == "alice@example.org");
    REQUIRE(m.received.size() == 2);
    CHECK(m.received[0].from_ip == "2001:db8:25::25");
    REQUIRE(m.has_our_hop);
    CHECK(m.queue_id == "4Pt2mN2VXxznjll");
    CHECK(m.sasl_user == "alice@example.org");
    CHECK(m.client_ip == "2001:db8::7");
    CHECK(m.client_helo == "[IPv6:2001:db8::1]");
    CHECK(epoch(m.received_at) == 1795678211);
    CHECK(m.headers == raw.substr(0, raw.find("\r\n\r\n") + 2));
    CHECK(m.received[1].raw.find('\r') == std::string::npos);
    CHECK_MESSAGE(m.notes.empty(), "notes: ", show(m.notes));
  }
}
