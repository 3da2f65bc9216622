// Unit tests for greylisting: sender normalization and the state machine on an injected clock.
#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <string>

#include "policyd/greylist.hpp"

namespace {

using lupine::policyd::greylist_entry;
using lupine::policyd::greylist_outcome;
using lupine::policyd::greylist_params;
using lupine::policyd::greylist_step;
using lupine::policyd::normalize_sender;
using lupine::policyd::sys_time;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::string show(greylist_outcome o) {
  return std::string{lupine::policyd::to_string(o)};
}

// 2024-03-01T12:00:00Z; any fixed instant works, nothing reads the real clock.
const sys_time t0 = sys_time{seconds{1709294400}};

std::string at(sys_time t) {
  return std::to_string(std::chrono::duration_cast<seconds>(t - t0).count()) + "s";
}

// The defaults: delay 300s, retry_window 2d, max_age 35d.
const greylist_params params{};

}  // namespace

TEST_SUITE("greylist") {
  TEST_CASE("normalizes senders so one sender's changing bounce addresses share a key") {
    struct tc {
      const char* label;
      std::string sender;
      std::string recipient;
      std::string want;
    };
    const tc cases[] = {
        {"lower-cases", "Alice@Example.ORG", "", "alice@example.org"},
        {"null sender", "", "", "<>"},
        {"null sender in brackets", "<>", "", "<>"},
        {"+extension stripped", "alice+news@example.org", "", "alice@example.org"},
        {"BATV tag first", "prvs=0123abcdef=user@example.org", "", "user@example.org"},
        {"BATV tag last", "prvs=user=0123abcdef@example.org", "", "user@example.org"},
        {"BATV upper-case", "PRVS=0123ABCDEF=User@Example.org", "", "user@example.org"},
        {"msprvs1", "msprvs1=0123abcdef=user@example.org", "", "user@example.org"},
        {"btv1", "btv1==0123abcdef==user@example.org", "", "user@example.org"},
        {"no domain", "MAILER-DAEMON", "", "mailer-daemon"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = normalize_sender(c.sender, c.recipient);
        CHECK_MESSAGE(got == c.want, "sender \"", c.sender, "\": got ", got, ", want ", c.want);
      }
    }
  }

  TEST_CASE("maps variants of one sender to the same key") {
    struct tc {
      const char* label;
      std::string a, a_rcpt;
      std::string b, b_rcpt;
    };
    const tc cases[] = {
        {"BATV with different tags", "prvs=0123abcdef=user@example.org", "", "prvs=9876fedcba=user@example.org", ""},
        {"BATV in either order", "prvs=0123abcdef=user@example.org", "", "prvs=user=4444abcdef@example.org", ""},
        {"BATV and plain", "prvs=0123abcdef=user@example.org", "", "user@example.org", ""},
        {"SRS0 with different hash and timestamp", "SRS0=HhH1=T1=orig.example=alice@fwd.example", "",
         "SRS0=zZz9=Q7=orig.example=alice@fwd.example", ""},
        {"SRS0 in different case", "SRS0=HhH1=T1=orig.example=alice@fwd.example", "",
         "srs0=abcd=x9=ORIG.example=Alice@FWD.example", ""},
        {"SRS1 with different hashes and timestamp", "SRS1=HHH1=fwd1.example==AAA1=T1=orig.example=alice@fwd2.example",
         "", "SRS1=HHH2=fwd1.example==BBB2=T2=orig.example=alice@fwd2.example", ""},
        {"VERP numeric part", "bounce-12345@list.example", "", "bounce-67890@list.example", ""},
        {"VERP hex tag", "bounces-3fa9c2e01b@list.example", "", "bounces-77d0aa1e9c@list.example", ""},
        {"VERP with the recipient inside", "list-bounces-user=example.org@lists.example", "user@example.org",
         "list-bounces-bob=example.net@lists.example", "bob@example.net"},
        {"VERP recipient in other case", "list-bounces-User=Example.ORG@lists.example", "user@example.org",
         "list-bounces-bob=example.net@lists.example", "Bob@Example.NET"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto ka = normalize_sender(c.a, c.a_rcpt);
        auto kb = normalize_sender(c.b, c.b_rcpt);
        CHECK_MESSAGE(ka == kb, "\"", c.a, "\" -> ", ka, " but \"", c.b, "\" -> ", kb, "; want one key");
      }
    }
  }

  TEST_CASE("keeps ordinary distinct senders distinct") {
    struct tc {
      const char* label;
      std::string a;
      std::string b;
    };
    const tc cases[] = {
        {"different users", "alice@example.org", "bob@example.org"},
        {"different domains", "alice@example.org", "alice@example.net"},
        {"user with extension vs other user", "alice+x@example.org", "bob+x@example.org"},
        {"SRS0 for different original senders", "SRS0=h=t=orig.example=alice@fwd.example",
         "SRS0=h=t=orig.example=bob@fwd.example"},
        {"SRS0 for different original domains", "SRS0=h=t=one.example=alice@fwd.example",
         "SRS0=h=t=two.example=alice@fwd.example"},
        {"BATV for different users", "prvs=0123abcdef=alice@example.org", "prvs=0123abcdef=bob@example.org"},
        {"null sender vs a real one", "<>", "postmaster@example.org"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto ka = normalize_sender(c.a);
        auto kb = normalize_sender(c.b);
        CHECK_MESSAGE(ka != kb, "\"", c.a, "\" and \"", c.b, "\" both -> ", ka, "; want distinct keys");
      }
    }
  }

  // Numbers inside an ordinary local part are not bounce tags: postgrey only folds whole
  // numeric words (\b\d+\b).
  TEST_CASE("keeps senders whose names merely contain digits distinct") {
    struct tc {
      const char* label;
      std::string a;
      std::string b;
    };
    const tc cases[] = {
        {"digit suffix", "user1@example.org", "user2@example.org"},
        {"year in the name", "johnsmith1980@example.org", "maryjones1975@example.org"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto ka = normalize_sender(c.a);
        auto kb = normalize_sender(c.b);
        CHECK_MESSAGE(ka != kb, "\"", c.a, "\" and \"", c.b, "\" both -> ", ka, "; want distinct keys");
      }
    }
  }

  TEST_CASE("lower-cases recipients") {
    CHECK(lupine::policyd::normalize_recipient("Bob@Example.ORG") == "bob@example.org");
  }

  TEST_CASE("a first sighting is deferred for the whole delay") {
    auto r = greylist_step(std::nullopt, t0, params);
    CHECK_MESSAGE(r.outcome == greylist_outcome::first_seen, "got ", show(r.outcome));
    CHECK(r.deferred());
    CHECK_MESSAGE(r.wait == seconds{300}, "got wait=", r.wait.count(), "s, want 300s");
    CHECK(r.entry.first_seen == t0);
    CHECK(r.entry.last_seen == t0);
    CHECK_FALSE(r.entry.passed_at.has_value());
    CHECK(r.entry.attempts == 1);
  }

  TEST_CASE("a retry before the delay is deferred for what remains without restarting the clock") {
    auto first = greylist_step(std::nullopt, t0, params);
    auto now = t0 + seconds{100};
    auto r = greylist_step(first.entry, now, params);
    CHECK_MESSAGE(r.outcome == greylist_outcome::too_early, "got ", show(r.outcome));
    CHECK(r.deferred());
    CHECK_MESSAGE(r.wait == seconds{200}, "got wait=", r.wait.count(), "s, want 200s");
    CHECK_MESSAGE(r.entry.first_seen == t0, "first_seen moved to ", at(r.entry.first_seen), ", want 0s");
    CHECK(r.entry.last_seen == now);
    CHECK_MESSAGE(r.entry.attempts == 2, "got attempts=", r.entry.attempts, ", want 2");

    auto again = greylist_step(r.entry, t0 + seconds{250}, params);
    CHECK(again.outcome == greylist_outcome::too_early);
    CHECK_MESSAGE(again.wait == seconds{50}, "got wait=", again.wait.count(), "s, want 50s");
    CHECK(again.entry.first_seen == t0);
    CHECK(again.entry.attempts == 3);
  }

  TEST_CASE("the wait is rounded up and never below one second") {
    struct tc {
      const char* label;
      milliseconds delay;
      milliseconds retry_after;  // 0 means the first sighting
      seconds want;
    };
    const tc cases[] = {
        {"half a second left", seconds{300}, milliseconds{299500}, seconds{1}},
        {"a millisecond left", seconds{300}, milliseconds{299999}, seconds{1}},
        {"1.5 seconds left", seconds{300}, milliseconds{298500}, seconds{2}},
        {"zero delay on first sighting", milliseconds{0}, milliseconds{0}, seconds{1}},
        {"sub-second delay on first sighting", milliseconds{200}, milliseconds{0}, seconds{1}},
        {"fractional delay rounds up", milliseconds{1500}, milliseconds{0}, seconds{2}},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        greylist_params p;
        p.delay = c.delay;
        auto r = greylist_step(std::nullopt, t0, p);
        if (c.retry_after.count() != 0) r = greylist_step(r.entry, t0 + c.retry_after, p);
        REQUIRE(r.deferred());
        CHECK_MESSAGE(r.wait == c.want, "got wait=", r.wait.count(), "s, want ", c.want.count(), "s");
      }
    }
  }

  TEST_CASE("a retry after the delay passes and records how long the message was held") {
    auto first = greylist_step(std::nullopt, t0, params);
    auto early = greylist_step(first.entry, t0 + seconds{60}, params);
    auto now = t0 + seconds{420};
    auto r = greylist_step(early.entry, now, params);
    CHECK_MESSAGE(r.outcome == greylist_outcome::passed_now, "got ", show(r.outcome));
    CHECK_FALSE(r.deferred());
    CHECK_MESSAGE(r.delayed == seconds{420}, "got delayed=", r.delayed.count(), "s, want 420s");
    REQUIRE(r.entry.passed_at.has_value());
    CHECK(*r.entry.passed_at == now);
    CHECK(r.entry.first_seen == t0);
    CHECK(r.entry.last_seen == now);
    CHECK(r.entry.attempts == 3);
  }

  TEST_CASE("a retry exactly at the delay passes") {
    auto first = greylist_step(std::nullopt, t0, params);
    auto r = greylist_step(first.entry, t0 + seconds{300}, params);
    CHECK_MESSAGE(r.outcome == greylist_outcome::passed_now, "got ", show(r.outcome));
    CHECK(r.delayed == seconds{300});
  }

  TEST_CASE("a passed triplet keeps passing and refreshes last_seen") {
    auto first = greylist_step(std::nullopt, t0, params);
    auto passed = greylist_step(first.entry, t0 + seconds{400}, params);
    REQUIRE(passed.outcome == greylist_outcome::passed_now);
    auto later = t0 + hours{24 * 20};
    auto r = greylist_step(passed.entry, later, params);
    CHECK_MESSAGE(r.outcome == greylist_outcome::passed_before, "got ", show(r.outcome));
    CHECK_FALSE(r.deferred());
    CHECK(r.entry.last_seen == later);
    CHECK(r.entry.first_seen == t0);
    CHECK_MESSAGE(r.entry.passed_at == passed.entry.passed_at, "passed_at must keep the first pass time");

    // Seen every 20 days, it stays passed well beyond max_age from its first pass.
    auto again = greylist_step(r.entry, later + hours{24 * 20}, params);
    CHECK_MESSAGE(again.outcome == greylist_outcome::passed_before, "got ", show(again.outcome));
  }

  TEST_CASE("a passed triplet seen with a clock behind its last_seen does not move last_seen back") {
    greylist_entry e{t0, t0 + seconds{1000}, t0 + seconds{400}, 2};
    auto r = greylist_step(e, t0 + seconds{900}, params);
    CHECK(r.outcome == greylist_outcome::passed_before);
    CHECK_MESSAGE(r.entry.last_seen == t0 + seconds{1000}, "got last_seen=", at(r.entry.last_seen), ", want 1000s");
  }

  TEST_CASE("a pending triplet that did not retry within the retry window starts over") {
    auto first = greylist_step(std::nullopt, t0, params);
    auto within = greylist_step(first.entry, t0 + hours{48}, params);
    CHECK_MESSAGE(within.outcome == greylist_outcome::passed_now, "at exactly the window: got ", show(within.outcome),
                  ", want greylist_passed");

    auto now = t0 + hours{48} + seconds{1};
    auto r = greylist_step(first.entry, now, params);
    CHECK_MESSAGE(r.outcome == greylist_outcome::restarted, "got ", show(r.outcome));
    CHECK(r.deferred());
    CHECK_MESSAGE(r.wait == seconds{300}, "got wait=", r.wait.count(), "s, want a full delay");
    CHECK_MESSAGE(r.entry.first_seen == now, "the clock restarts: got first_seen=", at(r.entry.first_seen));
    CHECK(r.entry.attempts == 1);
    CHECK_FALSE(r.entry.passed_at.has_value());
  }

  TEST_CASE("a passed triplet not seen for max_age starts over as new") {
    auto first = greylist_step(std::nullopt, t0, params);
    auto passed = greylist_step(first.entry, t0 + seconds{400}, params);
    REQUIRE(passed.outcome == greylist_outcome::passed_now);
    auto last = passed.entry.last_seen;

    auto edge = greylist_step(passed.entry, last + hours{24 * 35}, params);
    CHECK_MESSAGE(edge.outcome == greylist_outcome::passed_before, "at exactly max_age: got ", show(edge.outcome));

    auto now = last + hours{24 * 35} + seconds{1};
    auto r = greylist_step(passed.entry, now, params);
    CHECK_MESSAGE(r.outcome == greylist_outcome::first_seen, "got ", show(r.outcome));
    CHECK(r.deferred());
    CHECK(r.wait == seconds{300});
    CHECK(r.entry.first_seen == now);
    CHECK_FALSE(r.entry.passed_at.has_value());
    CHECK(r.entry.attempts == 1);
  }

  TEST_CASE("custom delays and windows are honoured") {
    greylist_params p;
    p.delay = seconds{60};
    p.retry_window = hours{1};
    p.max_age = hours{24};
    auto first = greylist_step(std::nullopt, t0, p);
    CHECK(first.wait == seconds{60});
    CHECK(greylist_step(first.entry, t0 + seconds{59}, p).outcome == greylist_outcome::too_early);
    CHECK(greylist_step(first.entry, t0 + seconds{61}, p).outcome == greylist_outcome::passed_now);
    CHECK(greylist_step(first.entry, t0 + hours{1} + seconds{1}, p).outcome == greylist_outcome::restarted);
  }

  TEST_CASE("a first_seen ahead of this instance's clock never makes the wait longer than the delay") {
    auto first = greylist_step(std::nullopt, t0 + seconds{10}, params);  // another MX, clock 10s ahead
    auto r = greylist_step(first.entry, t0, params);
    CHECK(r.outcome == greylist_outcome::too_early);
    CHECK_MESSAGE(r.wait <= seconds{300}, "got wait=", r.wait.count(), "s, want at most 300s");
  }
}
