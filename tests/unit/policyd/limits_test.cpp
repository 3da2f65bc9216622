// Unit tests for the pure parts of sending limits (specs, merging overrides, reply texts,
// the transaction tracker), flood control's rate algorithm, the greylist early-retry
// penalty and the new configuration keys.
#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "policyd/checks/flood_check.hpp"
#include "policyd/checks/limits_check.hpp"
#include "policyd/config.hpp"
#include "policyd/greylist.hpp"
#include "policyd/limits.hpp"
#include "support.hpp"

namespace {

using namespace lupine::policyd;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

// 2026-11-27T14:00:00Z; nothing reads the real clock.
const sys_time t0 = sys_time{seconds{1795788000}};

send_limit lim(measure m, long long max, seconds w) {
  send_limit l;
  l.what = m;
  l.window = w;
  l.max = max;
  return l;
}

std::string show_limits(const std::vector<send_limit>& v) {
  std::string out;
  for (const auto& l : v) {
    if (!out.empty()) out += ' ';
    out += std::string{to_string(l.what)} + "=" + (l.max ? std::to_string(*l.max) : "none") + "/" +
           format_window(l.window);
  }
  return out;
}

policyd_config load(const lupine::raw_options& cli) {
  return lupine::apply_options(policyd_options(), "policyd.conf", {}, cli);
}

std::string load_error(const lupine::raw_options& cli) {
  try {
    load(cli);
  } catch (const lupine::config_error& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_SUITE("limits") {
  TEST_CASE("limit specs parse max and window and refuse what the table would not store") {
    send_limit l;
    CHECK(parse_limit("200/1h", measure::messages, l).empty());
    CHECK(l.max == 200);
    CHECK(l.window == hours{1});
    CHECK(parse_limit("1G/24h", measure::bytes, l).empty());
    CHECK(l.max == (1LL << 30));
    CHECK(parse_limit("512K/10m", measure::bytes, l).empty());
    CHECK(l.max == 512 * 1024);
    CHECK(parse_limit("none/1h", measure::recipients, l).empty());
    CHECK(!l.max.has_value());
    CHECK(!parse_limit("1G/1h", measure::messages, l).empty());  // suffixes are for bytes only
    CHECK(!parse_limit("200", measure::messages, l).empty());
    CHECK(!parse_limit("200/30s", measure::messages, l).empty());  // below a minute
    CHECK(!parse_limit("200/90s", measure::messages, l).empty());  // not whole minutes
    CHECK(!parse_limit("200/8d", measure::messages, l).empty());   // beyond 7 days
    CHECK(!parse_limit("-1/1h", measure::messages, l).empty());
    CHECK(!parse_limit("x/1h", measure::messages, l).empty());
    // Regression (fuzz/regressions/fuzz_dnsbl): a huge max times the suffix overflowed.
    CHECK(!parse_limit("2000000000000G/1h", measure::bytes, l).empty());
    CHECK(parse_limit("1048576G/1h", measure::bytes, l).empty());
  }

  TEST_CASE("limits read as a person would say them") {
    CHECK(describe_limit(measure::recipients, 500, hours{24}) == "500 recipients per 24h");
    CHECK(describe_limit(measure::messages, 1, hours{1}) == "1 message per 1h");
    CHECK(describe_limit(measure::distinct_recipients, 1000, hours{24}) == "1000 distinct recipients per 24h");
    CHECK(describe_limit(measure::distinct_domains, 300, hours{24}) == "300 recipient domains per 24h");
    CHECK(describe_limit(measure::bytes, 1LL << 30, hours{24}) == "1 GB per 24h");
    CHECK(describe_limit(measure::bytes, 10 * 1024, minutes{10}) == "10240 bytes per 10min");
    CHECK(format_window(hours{48}) == "2d");
    CHECK(format_window(minutes{90}) == "90min");
  }

  TEST_CASE("overrides replace the same measure and window; account beats domain; none removes") {
    std::vector<send_limit> defaults{lim(measure::messages, 200, hours{1}), lim(measure::messages, 1000, hours{24}),
                                     lim(measure::recipients, 300, hours{1})};
    limit_overrides o;
    o.domains["corp.example"] = {lim(measure::messages, 5000, hours{24})};
    o.accounts["big@corp.example"] = {lim(measure::messages, 9000, hours{24}),
                                      send_limit{measure::recipients, hours{1}, std::nullopt},
                                      lim(measure::distinct_domains, 50, minutes{10})};
    CHECK(show_limits(effective_limits(defaults, o, "someone@other.example")) ==
          "messages=200/1h recipients=300/1h messages=1000/24h");
    CHECK(show_limits(effective_limits(defaults, o, "someone@corp.example")) ==
          "messages=200/1h recipients=300/1h messages=5000/24h");
    CHECK(show_limits(effective_limits(defaults, o, "big@corp.example")) ==
          "distinct_domains=50/10min messages=200/1h messages=9000/24h");
    CHECK(domain_of("User@Corp.Example") == "corp.example");
    CHECK(domain_of("plainlogin").empty());
  }

  TEST_CASE("the retry time is rounded up to the minute and dated when it is not today") {
    CHECK(retry_after_text(t0 + minutes{32} + seconds{1}, t0) == "retry after 14:33 UTC");
    CHECK(retry_after_text(t0 + minutes{32}, t0) == "retry after 14:32 UTC");
    CHECK(retry_after_text(t0 + hours{12}, t0) == "retry after 2026-11-28 02:00 UTC");
    CHECK(retry_after_text(std::nullopt, t0) == "retry later");
    auto l = lim(measure::recipients, 500, hours{24});
    CHECK(limits_check::limit_action("defer", l, t0 + minutes{32}, t0) ==
          "452 4.7.1 Sending limit reached: 500 recipients per 24h; retry after 14:32 UTC");
    CHECK(limits_check::limit_action("hold", l, t0, t0).rfind("HOLD ", 0) == 0);
    CHECK(limits_check::limit_action("reject", l, t0, t0) == "550 5.7.1 Sending limit reached: 500 recipients per 24h");
  }

  TEST_CASE("the transaction tracker keeps distinct recipients per instance and login, bounded") {
    transaction_tracker t{3, seconds{60}};
    t.add("i1", "bob", "a@x.example", t0);
    t.add("i1", "bob", "a@x.example", t0);
    t.add("i1", "bob", "b@y.example", t0);
    t.add("i1", "bob", "c@y.example", t0);
    const auto* e = t.find("i1", "bob", t0);
    REQUIRE(e != nullptr);
    CHECK(lupine::test::show(e->recipients) == R"(["a@x.example", "b@y.example", "c@y.example"])");
    CHECK(lupine::test::show(e->domains) == R"(["x.example", "y.example"])");
    CHECK(t.find("i1", "eve", t0) == nullptr);  // another login on the same instance: not ours
    t.erase("i1");
    CHECK(t.find("i1", "bob", t0) == nullptr);
    for (int i = 0; i < 10; ++i) t.add("n" + std::to_string(i), "bob", "a@x.example", t0);
    CHECK(t.size() <= 3);
    CHECK(t.find("n9", "bob", t0) != nullptr);
    CHECK(t.find("n9", "bob", t0 + seconds{61}) == nullptr);  // idle too long
  }
}

TEST_SUITE("flood") {
  TEST_CASE("GCRA allows n at once then one per window/n and recovers in full after the window") {
    const std::uint64_t n = 5;
    const auto w = std::chrono::duration_cast<sys_time::duration>(seconds{10});
    sys_time tat{};
    int allowed = 0;
    for (int i = 0; i < 8; ++i) {
      if (gcra::wait(tat, t0, n, w) == sys_time::duration::zero()) {
        tat = gcra::next_tat(tat, t0, n, w);
        ++allowed;
      }
    }
    CHECK(allowed == 5);
    auto wait = gcra::wait(tat, t0, n, w);
    CHECK(wait == seconds{2});  // one more after window/n
    CHECK(gcra::wait(tat, t0 + seconds{2}, n, w) == sys_time::duration::zero());
    // After the whole window the full burst is available again.
    sys_time later = t0 + seconds{10};
    allowed = 0;
    for (int i = 0; i < 8; ++i) {
      if (gcra::wait(tat, later, n, w) == sys_time::duration::zero()) {
        tat = gcra::next_tat(tat, later, n, w);
        ++allowed;
      }
    }
    CHECK(allowed == 5);
  }
}

TEST_SUITE("greylist penalty") {
  TEST_CASE("early retries beyond the grace add the penalty, capped") {
    greylist_params p;
    p.delay = seconds{300};
    p.retry_window = hours{48};
    p.early_retry_grace = 2;
    p.early_retry_penalty = seconds{60};
    p.max_delay = seconds{420};
    // attempts counts the first try too: attempts - 1 early retries.
    CHECK(effective_delay(1, p) == seconds{300});
    CHECK(effective_delay(3, p) == seconds{300});  // two early retries: free
    CHECK(effective_delay(4, p) == seconds{360});
    CHECK(effective_delay(5, p) == seconds{420});
    CHECK(effective_delay(50, p) == seconds{420});  // capped
    CHECK(effective_delay(2000000000, p) == seconds{420});
    p.early_retry_penalty = milliseconds{0};
    CHECK(effective_delay(50, p) == seconds{300});
    // Never beyond halfway to the retry window: the triplet must still be able to pass.
    p.early_retry_penalty = seconds{60};
    p.max_delay = hours{100};
    p.retry_window = seconds{900};
    CHECK(effective_delay(1000, p) == seconds{600});
  }

  TEST_CASE("a hammering client waits longer; one that waits out the grown delay passes") {
    greylist_params p;
    p.delay = seconds{300};
    p.early_retry_grace = 1;
    p.early_retry_penalty = seconds{100};
    p.max_delay = hours{1};
    auto r = greylist_step(std::nullopt, t0, p);
    CHECK(r.wait == seconds{300});
    r = greylist_step(r.entry, t0 + seconds{10}, p);  // early retry 1: free
    CHECK(r.outcome == greylist_outcome::too_early);
    CHECK(r.wait == seconds{290});
    CHECK(r.penalty == seconds{0});
    r = greylist_step(r.entry, t0 + seconds{20}, p);  // early retry 2: +100 s
    CHECK(r.wait == seconds{380});
    CHECK(r.penalty == seconds{100});
    r = greylist_step(r.entry, t0 + seconds{350}, p);  // past 300 s but not 400: still early
    CHECK(r.outcome == greylist_outcome::too_early);
    CHECK(r.penalty == seconds{200});
    r = greylist_step(r.entry, t0 + seconds{501}, p);
    CHECK(r.outcome == greylist_outcome::passed_now);
  }
}

TEST_SUITE("limits config") {
  TEST_CASE("default limits follow the documented values") {
    auto cfg = load({});
    CHECK(show_limits(cfg.limits_defaults) ==
          "messages=200/1h messages=1000/24h recipients=300/1h recipients=2000/24h bytes=1073741824/24h "
          "distinct_recipients=200/1h distinct_recipients=1000/24h distinct_domains=100/1h "
          "distinct_domains=300/24h");
    CHECK(cfg.limits_action == "defer");
    CHECK(cfg.limits_auto_restrict.empty());
    CHECK(cfg.flood_client_rate.count == 600);
    CHECK(cfg.flood_client_rate.window == std::chrono::duration_cast<sys_time::duration>(minutes{1}));
    CHECK(cfg.flood_exempt.size() == 2);
  }

  TEST_CASE("limit keys replace only their own measure and accept none") {
    auto cfg = load({{"limits.messages", {"3/1h"}}, {"limits.bytes", {"none"}}});
    CHECK(show_limits(cfg.limits_defaults) ==
          "messages=3/1h recipients=300/1h recipients=2000/24h distinct_recipients=200/1h "
          "distinct_recipients=1000/24h distinct_domains=100/1h distinct_domains=300/24h");
  }

  TEST_CASE("an overlong regular expression is refused before libstdc++ compiles it") {
    // Regression (fuzz/regressions/fuzz_config): deep nesting overflowed the stack.
    std::string deep = std::string(600, '(') + "a" + std::string(600, ')');
    CHECK(load_error({{"rdns.dynamic_patterns", {deep}}}).find("rdns.dynamic_patterns") != std::string::npos);
  }

  TEST_CASE("bad limit, rate and threshold values name their key") {
    CHECK(load_error({{"limits.messages", {"3/30s"}}}).find("limits.messages") != std::string::npos);
    CHECK(load_error({{"limits.action", {"drop"}}}).find("limits.action") != std::string::npos);
    CHECK(load_error({{"flood.client_rate", {"5"}}}).find("flood.client_rate") != std::string::npos);
    CHECK(load_error({{"flood.exempt", {"not-a-net"}}}).find("flood.exempt") != std::string::npos);
    CHECK(load_error({{"limits.auto_restrict", {"messages=5/1h"}}}).find("limits.auto_restrict") != std::string::npos);
    auto cfg = load({{"limits.auto_restrict", {"distinct_recipients=2000/24h"}}});
    CHECK(validate(cfg).find("limits.auto_restrict") != std::string::npos);  // the limit stops it at 1000
    cfg = load({{"limits.auto_restrict", {"distinct_recipients=500/24h"}}, {"database", {"x"}}});
    CHECK(validate(cfg).empty());
    // A shorter window cannot count more than a longer window's limit lets through.
    cfg = load({{"limits.auto_restrict", {"distinct_recipients=10/30m"}},
                {"limits.distinct_recipients", {"5/1h"}},
                {"database", {"x"}}});
    CHECK(validate(cfg).find("limits.auto_restrict") != std::string::npos);
    cfg = load({{"limits.auto_restrict", {"distinct_recipients=10/2h"}},
                {"limits.distinct_recipients", {"5/1h"}},
                {"database", {"x"}}});
    CHECK(validate(cfg).empty());
  }
}
