// Unit tests for the decision pipeline: decide() folding and pipeline::run on fake checks.
#include <doctest/doctest.h>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "policyd/pipeline.hpp"
#include "policyd/protocol.hpp"

namespace {

using lupine::policyd::check;
using lupine::policyd::check_result;
using lupine::policyd::decide;
using lupine::policyd::decision;
using lupine::policyd::pipeline;
using lupine::policyd::policy_request;
using lupine::policyd::request_context;
using lupine::policyd::verdict;

std::string show(verdict v) {
  return std::string{lupine::policyd::to_string(v)};
}

check_result cont(std::string reason = {}) {
  return {verdict::continue_, "", "", std::move(reason), "", 0, false};
}
check_result prepend(std::string header, std::string reason = "greylist_passed") {
  return {verdict::prepend, "", std::move(header), std::move(reason), "", 0, false};
}
check_result final_result(verdict v, std::string action, std::string reason) {
  return {v, std::move(action), "", std::move(reason), "", 0, false};
}

const std::string greylisted = "DEFER_IF_PERMIT 4.7.1 Greylisted, retry in 300 seconds";

// A check that returns a fixed result and counts how often it ran. It hops through the
// executor once, as a real check awaiting the database would.
class fake_check : public check {
 public:
  fake_check(std::string check_name, check_result result, int& calls)
      : name_{std::move(check_name)}, result_{std::move(result)}, calls_{&calls} {}
  std::string_view name() const override { return name_; }
  boost::asio::awaitable<check_result> evaluate(const request_context& ctx) override {
    ++*calls_;
    seen_sender = std::string{ctx.req.get("sender")};
    co_await boost::asio::post(co_await boost::asio::this_coro::executor, boost::asio::use_awaitable);
    co_return result_;
  }
  std::string seen_sender;

 private:
  std::string name_;
  check_result result_;
  int* calls_;
};

// Runs p on a local io_context and returns its decision (or rethrows what it threw).
decision run_pipeline(const pipeline& p, const policy_request& req) {
  boost::asio::io_context io;
  request_context ctx{req, std::chrono::system_clock::now(),
                      std::chrono::steady_clock::now() + std::chrono::seconds{5}};
  std::optional<decision> out;
  std::exception_ptr error;
  boost::asio::co_spawn(io, p.run(ctx), [&](std::exception_ptr e, decision d) {
    error = e;
    out = std::move(d);
  });
  io.run();
  if (error) std::rethrow_exception(error);
  REQUIRE_MESSAGE(out.has_value(), "the pipeline did not finish");
  return *out;
}

policy_request sample_request() {
  policy_request r;
  r.add("request", "smtpd_access_policy");
  r.add("client_address", "192.0.2.1");
  r.add("sender", "alice@example.org");
  r.add("recipient", "bob@example.net");
  return r;
}

}  // namespace

TEST_SUITE("pipeline") {
  TEST_CASE("decides the reply from the check results in order") {
    struct tc {
      const char* label;
      std::vector<check_result> results;
      verdict want_v;
      std::string want_action;
      std::string want_reason;
    };
    const tc cases[] = {
        {"no checks say anything", {}, verdict::continue_, "DUNNO", ""},
        {"only continues", {cont("a"), cont()}, verdict::continue_, "DUNNO", "a"},
        {"pass replies DUNNO",
         {final_result(verdict::pass, "OK ignored", "allowlist")},
         verdict::pass,
         "DUNNO",
         "allowlist"},
        {"accept without action replies OK",
         {final_result(verdict::accept, "", "trusted")},
         verdict::accept,
         "OK",
         "trusted"},
        {"accept keeps its own action",
         {final_result(verdict::accept, "OK allow-listed", "trusted")},
         verdict::accept,
         "OK allow-listed",
         "trusted"},
        {"defer carries its action",
         {cont("checked"), final_result(verdict::defer_if_permit, greylisted, "greylist_new")},
         verdict::defer_if_permit,
         greylisted,
         "checked,greylist_new"},
        {"first final verdict wins",
         {final_result(verdict::defer, "DEFER 4.7.1 later", "first"),
          final_result(verdict::reject, "REJECT 5.7.1 no", "second")},
         verdict::defer,
         "DEFER 4.7.1 later",
         "first"},
        {"pass stops a later reject",
         {final_result(verdict::pass, "", "allowlist"), final_result(verdict::reject, "REJECT 5.7.1 no", "rbl")},
         verdict::pass,
         "DUNNO",
         "allowlist"},
        {"reject",
         {final_result(verdict::reject, "REJECT 5.7.1 blocked", "rbl")},
         verdict::reject,
         "REJECT 5.7.1 blocked",
         "rbl"},
        {"hold", {final_result(verdict::hold, "HOLD suspicious", "score")}, verdict::hold, "HOLD suspicious", "score"},
        {"prepend alone becomes PREPEND",
         {prepend("X-Greylist: delayed 300 seconds")},
         verdict::prepend,
         "PREPEND X-Greylist: delayed 300 seconds",
         "greylist_passed"},
        {"prepend then pass keeps the header",
         {prepend("X-Greylist: delayed 300 seconds"), final_result(verdict::pass, "", "allowlist")},
         verdict::prepend,
         "PREPEND X-Greylist: delayed 300 seconds",
         "greylist_passed,allowlist"},
        {"prepend then continue keeps the header",
         {prepend("X-Greylist: delayed 300 seconds"), cont("rbl_clean")},
         verdict::prepend,
         "PREPEND X-Greylist: delayed 300 seconds",
         "greylist_passed,rbl_clean"},
        {"prepend then defer drops the header",
         {prepend("X-Greylist: delayed 300 seconds"),
          final_result(verdict::defer_if_permit, greylisted, "greylist_new")},
         verdict::defer_if_permit,
         greylisted,
         "greylist_passed,greylist_new"},
        {"prepend then reject drops the header",
         {prepend("X-Greylist: delayed 300 seconds"), final_result(verdict::reject, "REJECT 5.7.1 no", "rbl")},
         verdict::reject,
         "REJECT 5.7.1 no",
         "greylist_passed,rbl"},
        {"the first header wins",
         {prepend("X-First: 1", "a"), prepend("X-Second: 2", "b")},
         verdict::prepend,
         "PREPEND X-First: 1",
         "a,b"},
        {"results after the final verdict are ignored",
         {final_result(verdict::defer, "DEFER 4.7.1 later", "first"), prepend("X-Late: 1", "late")},
         verdict::defer,
         "DEFER 4.7.1 later",
         "first"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto d = decide(c.results);
        CHECK_MESSAGE(d.v == c.want_v, "got verdict ", show(d.v), ", want ", show(c.want_v));
        CHECK_MESSAGE(d.action == c.want_action, "got action \"", d.action, "\", want \"", c.want_action, "\"");
        CHECK_MESSAGE(d.reason == c.want_reason, "got reason \"", d.reason, "\", want \"", c.want_reason, "\"");
      }
    }
  }

  TEST_CASE("a degraded check marks the decision degraded") {
    auto degraded = final_result(verdict::pass, "", "degraded:greylist");
    degraded.degraded = true;
    auto d = decide({cont("allowlist_miss"), degraded});
    CHECK(d.degraded);
    CHECK(d.action == "DUNNO");
    CHECK_MESSAGE(d.reason == "allowlist_miss,degraded:greylist", "got ", d.reason);

    auto degraded_continue = cont("rbl");
    degraded_continue.degraded = true;
    CHECK_MESSAGE(decide({degraded_continue, cont("other")}).degraded,
                  "a degraded non-final result still marks the decision");
    CHECK_FALSE(decide({cont("a"), cont("b")}).degraded);
  }

  TEST_CASE("details are joined and scores added up to the final verdict") {
    check_result a = cont("a");
    a.detail = "client 192.0.2.0/24";
    a.score = 1.5;
    check_result b = final_result(verdict::reject, "REJECT 5.7.1 no", "b");
    b.detail = "listed";
    b.score = 2.0;
    check_result c = cont("c");
    c.detail = "never seen";
    c.score = 100;
    auto d = decide({a, b, c});
    CHECK_MESSAGE(d.detail == "client 192.0.2.0/24; listed", "got ", d.detail);
    CHECK_MESSAGE(d.score == doctest::Approx(3.5), "got ", d.score, ", want 3.5");
  }

  TEST_CASE("verdict names and finality") {
    CHECK_FALSE(lupine::policyd::is_final(verdict::continue_));
    CHECK_FALSE(lupine::policyd::is_final(verdict::prepend));
    for (auto v :
         {verdict::pass, verdict::accept, verdict::defer_if_permit, verdict::defer, verdict::reject, verdict::hold}) {
      CHECK_MESSAGE(lupine::policyd::is_final(v), show(v), " should be final");
    }
    CHECK(show(verdict::defer_if_permit) == "defer_if_permit");
  }

  TEST_CASE("runs every check when none is final") {
    int calls_a = 0;
    int calls_b = 0;
    pipeline p;
    p.add(std::make_unique<fake_check>("a", cont("a"), calls_a));
    p.add(std::make_unique<fake_check>("b", prepend("X-Greylist: delayed 300 seconds", "b"), calls_b));
    auto req = sample_request();
    auto d = run_pipeline(p, req);
    CHECK(calls_a == 1);
    CHECK(calls_b == 1);
    CHECK_MESSAGE(d.action == "PREPEND X-Greylist: delayed 300 seconds", "got ", d.action);
    CHECK_MESSAGE(d.reason == "a,b", "got ", d.reason);
  }

  TEST_CASE("a final verdict stops later checks from running") {
    int calls_first = 0;
    int calls_second = 0;
    pipeline p;
    p.add(std::make_unique<fake_check>("greylist", final_result(verdict::defer_if_permit, greylisted, "greylist_new"),
                                       calls_first));
    p.add(
        std::make_unique<fake_check>("rbl", final_result(verdict::reject, "REJECT 5.7.1 listed", "rbl"), calls_second));
    auto req = sample_request();
    auto d = run_pipeline(p, req);
    CHECK(calls_first == 1);
    CHECK_MESSAGE(calls_second == 0, "got ", calls_second, " calls of the second check, want 0");
    CHECK(d.v == verdict::defer_if_permit);
    CHECK_MESSAGE(d.action == greylisted, "got ", d.action);
    CHECK_MESSAGE(d.reason == "greylist_new", "got ", d.reason);
  }

  TEST_CASE("checks see the request they are run for") {
    int calls = 0;
    pipeline p;
    auto owned = std::make_unique<fake_check>("a", cont(), calls);
    auto* fake = owned.get();
    p.add(std::move(owned));
    auto req = sample_request();
    run_pipeline(p, req);
    CHECK_MESSAGE(fake->seen_sender == "alice@example.org", "got ", fake->seen_sender);
  }

  TEST_CASE("an empty pipeline lets mail through with DUNNO") {
    pipeline p;
    auto req = sample_request();
    auto d = run_pipeline(p, req);
    CHECK(d.v == verdict::continue_);
    CHECK(d.action == "DUNNO");
  }
}
