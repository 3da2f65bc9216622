// Unit tests for core/log: logfmt quoting (no forged lines), the test sink and level filtering.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/log.hpp"

namespace {

using lupine::log_level;

std::vector<std::pair<log_level, std::string>>& captured() {
  static std::vector<std::pair<log_level, std::string>> lines;
  return lines;
}

void capture(log_level lvl, std::string_view line) {
  captured().emplace_back(lvl, std::string{line});
}

// Routes log lines to captured() for the scope and restores the previous level after.
struct capture_logs {
  log_level saved = lupine::current_log_level();
  capture_logs() {
    captured().clear();
    lupine::set_log_sink(&capture);
  }
  ~capture_logs() {
    lupine::set_log_sink(nullptr);
    lupine::set_log_level(saved);
    captured().clear();
  }
  capture_logs(const capture_logs&) = delete;
  capture_logs& operator=(const capture_logs&) = delete;
};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

TEST_SUITE("log") {
  TEST_CASE("quotes a value only when it is not a plain token, escaping what could break the line") {
    struct tc {
      const char* label;
      std::string input;
      std::string want;
    };
    const tc cases[] = {
        {"plain token", "alice@example.org", "alice@example.org"},
        {"empty", "", R"("")"},
        {"space", "hello world", R"("hello world")"},
        {"double quote", R"(say "hi")", R"("say \"hi\"")"},
        {"backslash", R"(a\b)", R"("a\\b")"},
        {"equals sign", "a=b", R"("a=b")"},
        {"newline", "a\nb", R"("a\nb")"},
        {"carriage return", "a\rb", R"("a\rb")"},
        {"tab", "a\tb", R"("a\tb")"},
        {"other control byte", std::string{"a\x01z"}, R"("a\x01z")"},
        {"NUL byte", std::string{"a\0z", 3}, R"("a\x00z")"},
        {"DEL", "a\x7fz", R"("a\x7fz")"},
        {"UTF-8 is kept but quoted", "gr\xc3\xbc\xc3\x9f", "\"gr\xc3\xbc\xc3\x9f\""},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = lupine::log_quote(c.input);
        CHECK_MESSAGE(got == c.want, "got ", got, ", want ", c.want);
      }
    }
  }

  TEST_CASE("kv joins key and quoted value with '='") {
    CHECK(to_string(lupine::kv("client", "192.0.2.1")) == "client=192.0.2.1");
    CHECK(to_string(lupine::kv("helo", "evil host")) == R"(helo="evil host")");
    CHECK(fmt::format("{}", lupine::kv("k", "a\nb")) == R"(k="a\nb")");
    CHECK(to_string(lupine::kv("sender", "")) == R"(sender="")");
  }

  TEST_CASE("a value from the network cannot forge a second line or an extra key") {
    const std::string attacks[] = {
        "x\ndecision action=OK client=192.0.2.1",
        "x\r\ndecision action=OK",
        "x action=OK",
        "x\" action=\"OK",
        "x\\\" action=OK",
        std::string{"x\0\naction=OK", 12},
    };
    for (const auto& a : attacks) {
      auto got = to_string(lupine::kv("helo", a));
      INFO("got: ", got);
      CHECK_MESSAGE(got.find('\n') == std::string::npos, "a raw newline would start a forged line");
      CHECK_MESSAGE(got.find('\r') == std::string::npos, "a raw CR could hide the line on a terminal");
      CHECK_MESSAGE(got.find('\0') == std::string::npos, "a raw NUL would truncate the line");
      REQUIRE(got.size() >= std::string{"helo=\"\""}.size());
      CHECK(got.substr(0, 6) == "helo=\"");
      CHECK(got.back() == '"');
      // Inside the quotes every '"' must be escaped, so the value cannot close early.
      auto inner = got.substr(6, got.size() - 7);
      for (std::size_t i = 0; i < inner.size(); ++i) {
        if (inner[i] == '\\') {
          ++i;  // skip the escaped character
        } else {
          CHECK_MESSAGE(inner[i] != '"', "unescaped quote at ", i, " in ", inner);
        }
      }
    }
  }

  TEST_CASE("lines go to the sink as 'event fields' with the level they were logged at") {
    capture_logs guard;
    lupine::set_log_level(log_level::info);
    lupine::log(log_level::warning, "db_down", "{} {}", lupine::kv("error", "connection refused"),
                lupine::kv("retry", "5s"));
    REQUIRE(captured().size() == 1);
    const auto& [lvl, line] = captured().front();
    CHECK(lvl == log_level::warning);
    CHECK_MESSAGE(ends_with(line, R"(db_down error="connection refused" retry=5s)"), "got ", line);
    CHECK_MESSAGE(line.find('\n') == std::string::npos, "the sink gets the line without its newline; got ", line);
  }

  TEST_CASE("an event without fields is logged without a trailing space") {
    capture_logs guard;
    lupine::set_log_level(log_level::info);
    lupine::log(log_level::info, "started", "");
    REQUIRE(captured().size() == 1);
    CHECK_MESSAGE(ends_with(captured().front().second, "started"), "got ", captured().front().second);
  }

  TEST_CASE("lines above the configured level are dropped") {
    capture_logs guard;
    lupine::set_log_level(log_level::warning);
    CHECK(lupine::current_log_level() == log_level::warning);
    lupine::log(log_level::debug, "debug_event", "n={}", 1);
    lupine::log(log_level::info, "info_event", "n={}", 2);
    lupine::log(log_level::warning, "warning_event", "n={}", 3);
    lupine::log(log_level::error, "error_event", "n={}", 4);
    std::vector<std::string> events;
    for (const auto& entry : captured()) events.push_back(entry.second);
    INFO("captured ", events.size(), " lines");
    REQUIRE(events.size() == 2);
    CHECK(ends_with(events[0], "warning_event n=3"));
    CHECK(ends_with(events[1], "error_event n=4"));
  }

  TEST_CASE("raising the level to debug lets debug lines through") {
    capture_logs guard;
    lupine::set_log_level(log_level::debug);
    lupine::log(log_level::debug, "debug_event", "n={}", 1);
    REQUIRE(captured().size() == 1);
    CHECK(captured().front().first == log_level::debug);
    CHECK(ends_with(captured().front().second, "debug_event n=1"));
  }

  // stderr goes to a pipe for the test: what the batch writes, and when.
  TEST_CASE("a batching thread writes its lines in one write when flushed, trouble at once") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
    int saved = ::dup(STDERR_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    auto drain = [&] {
      std::string got;
      char buf[8192];
      ssize_t n;
      while ((n = ::read(fds[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<std::size_t>(n));
      return got;
    };
    int scheduled = 0;
    lupine::log_batch_this_thread([&scheduled] { ++scheduled; });
    lupine::log(log_level::info, "decision", "n={}", 1);
    lupine::log(log_level::info, "decision", "n={}", 2);
    std::string before = drain();
    lupine::log_flush();
    std::string after = drain();
    lupine::log(log_level::info, "decision", "n={}", 3);
    lupine::log(log_level::warning, "db_down", "");
    std::string trouble = drain();
    std::string big(5000, 'x');  // over PIPE_BUF: written alone, after what was held
    lupine::log(log_level::info, "decision", "n={}", 4);
    lupine::log(log_level::info, "long", "{}", big);
    std::string long_line = drain();
    lupine::log(log_level::info, "decision", "n={}", 5);
    lupine::log_batch_this_thread({});  // off: flushes
    std::string last = drain();
    lupine::log(log_level::info, "decision", "n={}", 6);  // unbatched: at once
    std::string direct = drain();
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
    ::close(fds[0]);
    ::close(fds[1]);

    CHECK(before.empty());
    CHECK(scheduled >= 1);
    CHECK(after.find("decision n=1\n") != std::string::npos);
    CHECK(after.find("decision n=2\n") != std::string::npos);
    CHECK(trouble.find("decision n=3\n") < trouble.find("db_down"));
    CHECK(long_line.find("decision n=4\n") < long_line.find("long xxx"));
    CHECK(last.find("decision n=5\n") != std::string::npos);
    CHECK(direct.find("decision n=6\n") != std::string::npos);
  }
}
