// Unit tests for core/config: value parsers, -o overrides, config files and the merge.
#include <doctest/doctest.h>

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "support.hpp"

namespace {

using lupine::test::show;
using lupine::test::temp_dir;

using lupine::config_error;
using lupine::milliseconds;
using lupine::raw_options;
using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

std::string show(const std::optional<milliseconds>& d) {
  return d ? std::to_string(d->count()) + "ms" : std::string{"nullopt"};
}
std::string show(const std::optional<bool>& b) {
  return b ? (*b ? std::string{"true"} : std::string{"false"}) : std::string{"nullopt"};
}
std::string show(const std::optional<std::uint64_t>& n) {
  return n ? std::to_string(*n) : std::string{"nullopt"};
}
// A small configuration to drive apply_options without depending on any program's table.
struct toy_config {
  milliseconds delay{0};
  unsigned count = 0;
  bool enable = false;
  std::vector<std::string> files;
};

std::vector<lupine::option_spec<toy_config>> toy_table() {
  using spec = lupine::option_spec<toy_config>;
  using values = std::vector<std::string>;
  auto last = [](const values& v) { return v.empty() ? std::string{} : v.back(); };
  std::vector<spec> t;
  t.push_back({"delay", "5m", "How long.", false, false, [last](toy_config& c, const values& v) {
                 return lupine::set_duration(c.delay, last(v), milliseconds{0}, hours{24});
               }});
  t.push_back({"count", "3", "How many.", false, false,
               [last](toy_config& c, const values& v) { return lupine::set_uint(c.count, last(v), 1, 10); }});
  t.push_back({"feature.enable", "no", "Whether.", false, false,
               [last](toy_config& c, const values& v) { return lupine::set_bool(c.enable, last(v)); }});
  t.push_back({"files", "", "Which.", true, false, [](toy_config& c, const values& v) {
                 c.files = v;
                 return std::string{};
               }});
  return t;
}

const std::vector<std::string> toy_keys{"delay", "count", "feature.enable", "files"};

}  // namespace

TEST_SUITE("config") {
  TEST_CASE("parses durations only when they carry a known unit") {
    struct tc {
      const char* label;
      std::string input;
      std::optional<milliseconds> want;
    };
    const tc cases[] = {
        {"milliseconds", "250ms", milliseconds{250}},
        {"seconds", "300s", seconds{300}},
        {"minutes", "5m", minutes{5}},
        {"hours", "2h", hours{2}},
        {"days", "35d", hours{24 * 35}},
        {"weeks", "1w", hours{24 * 7}},
        {"zero", "0s", milliseconds{0}},
        {"no unit", "300", std::nullopt},
        {"empty", "", std::nullopt},
        {"unit only", "s", std::nullopt},
        {"unknown unit", "5y", std::nullopt},
        {"negative", "-5s", std::nullopt},
        {"fraction", "1.5h", std::nullopt},
        {"space before unit", "5 s", std::nullopt},
        {"leading space", " 5s", std::nullopt},
        {"upper-case unit", "5S", std::nullopt},
        {"overflowing number", "99999999999999999999999s", std::nullopt},
        {"absurdly long", "100000000000w", std::nullopt},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = lupine::parse_duration(c.input);
        CHECK_MESSAGE(got == c.want, "input \"", c.input, "\": got ", show(got), ", want ", show(c.want));
      }
    }
  }

  TEST_CASE("formats a duration in its shortest exact unit") {
    struct tc {
      const char* label;
      milliseconds input;
      std::string want;
    };
    const tc cases[] = {
        {"zero", milliseconds{0}, "0s"},
        {"five minutes", milliseconds{300000}, "5m"},
        {"odd seconds", seconds{90}, "90s"},
        {"sub-second", milliseconds{1500}, "1500ms"},
        {"two days", hours{48}, "2d"},
        {"one week", hours{24 * 7}, "1w"},
        {"35 days is five weeks", hours{24 * 35}, "5w"},
        {"hours", hours{25}, "25h"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = lupine::format_duration(c.input);
        CHECK_MESSAGE(got == c.want, "input ", c.input.count(), "ms: got ", got, ", want ", c.want);
      }
    }
  }

  TEST_CASE("a formatted duration parses back to the same value") {
    const milliseconds values[] = {milliseconds{1}, milliseconds{999}, seconds{1},      seconds{330},
                                   minutes{10},     hours{1},          hours{24 * 180}, hours{24 * 3650}};
    for (auto d : values) {
      auto text = lupine::format_duration(d);
      auto back = lupine::parse_duration(text);
      CHECK_MESSAGE(back == std::optional<milliseconds>{d}, "formatted ", d.count(), "ms as \"", text, "\": got ",
                    show(back), ", want ", d.count(), "ms");
    }
  }

  TEST_CASE("parses the usual spellings of booleans and nothing else") {
    struct tc {
      const char* label;
      std::string input;
      std::optional<bool> want;
    };
    const tc cases[] = {
        {"yes", "yes", true},
        {"true", "true", true},
        {"on", "on", true},
        {"1", "1", true},
        {"no", "no", false},
        {"false", "false", false},
        {"off", "off", false},
        {"0", "0", false},
        {"empty", "", std::nullopt},
        {"Yes is not yes", "Yes", std::nullopt},
        {"y", "y", std::nullopt},
        {"2", "2", std::nullopt},
        {"padded", " yes", std::nullopt},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = lupine::parse_bool(c.input);
        CHECK_MESSAGE(got == c.want, "input \"", c.input, "\": got ", show(got), ", want ", show(c.want));
      }
    }
  }

  TEST_CASE("parses unsigned integers strictly") {
    struct tc {
      const char* label;
      std::string input;
      std::optional<std::uint64_t> want;
    };
    const tc cases[] = {
        {"zero", "0", 0},
        {"plain", "4096", 4096},
        {"largest", "18446744073709551615", UINT64_MAX},
        {"overflow", "18446744073709551616", std::nullopt},
        {"empty", "", std::nullopt},
        {"negative", "-1", std::nullopt},
        {"trailing garbage", "12a", std::nullopt},
        {"leading space", " 12", std::nullopt},
        {"trailing space", "12 ", std::nullopt},
        {"with unit", "10s", std::nullopt},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto got = lupine::parse_uint(c.input);
        CHECK_MESSAGE(got == c.want, "input \"", c.input, "\": got ", show(got), ", want ", show(c.want));
      }
    }
  }

  TEST_CASE("set helpers leave the value alone and explain the range when it is out of bounds") {
    milliseconds d{seconds{7}};
    auto err = lupine::set_duration(d, "2d", seconds{1}, hours{24});
    CHECK_MESSAGE(err == "expected 1s..1d", "got \"", err, "\", want \"expected 1s..1d\"");
    CHECK(d == seconds{7});
    err = lupine::set_duration(d, "soon", seconds{1}, hours{24});
    CHECK_MESSAGE(err.find("duration") != std::string::npos, "got \"", err, "\", want a hint about durations");

    unsigned n = 42;
    err = lupine::set_uint(n, "0", 1, 10);
    CHECK_MESSAGE(err == "expected an integer 1..10", "got \"", err, "\"");
    CHECK(n == 42);
    err = lupine::set_uint(n, "10", 1, 10);
    CHECK(err.empty());
    CHECK(n == 10);

    bool b = true;
    CHECK_FALSE(lupine::set_bool(b, "maybe").empty());
    CHECK(b);

    std::string choice = "dunno";
    err = lupine::set_choice(choice, "fail", {"dunno", "defer"});
    CHECK_MESSAGE(err == "expected one of dunno, defer", "got \"", err, "\"");
    CHECK(choice == "dunno");
    CHECK(lupine::set_choice(choice, "defer", {"dunno", "defer"}).empty());
    CHECK(choice == "defer");
  }

  TEST_CASE("parses -o overrides as key=value, trimming spaces around the '='") {
    auto got =
        lupine::parse_overrides({"delay=60s", "count = 4", "files=a", "files=b", "feature.enable=x=y"}, toy_keys);
    CHECK_MESSAGE(got["delay"] == std::vector<std::string>{"60s"}, "got ", show(got["delay"]));
    CHECK_MESSAGE(got["count"] == std::vector<std::string>{"4"}, "got ", show(got["count"]));
    CHECK_MESSAGE(got["files"] == (std::vector<std::string>{"a", "b"}), "got ", show(got["files"]),
                  ", want [\"a\", \"b\"]");
    CHECK_MESSAGE(got["feature.enable"] == std::vector<std::string>{"x=y"}, "got ", show(got["feature.enable"]),
                  ", want the value split at the first '='");
  }

  TEST_CASE("rejects -o overrides without '=', without a key, or with an unknown key, reporting each") {
    std::string what;
    try {
      lupine::parse_overrides({"delay", "=5s", "colour=blue", "count=2"}, toy_keys);
    } catch (const config_error& e) {
      what = e.what();
    }
    INFO("message: ", what);
    REQUIRE_FALSE(what.empty());
    CHECK(what.find("-o delay: expected key=value") != std::string::npos);
    CHECK(what.find("-o =5s: expected key=value") != std::string::npos);
    CHECK(what.find("unknown key colour") != std::string::npos);
    CHECK(what.find("count") == std::string::npos);
    CHECK_MESSAGE(std::count(what.begin(), what.end(), '\n') == 2, "want one line per problem (3 lines)");
  }

  TEST_CASE("reads an INI config file, prefixing keys with their [section]") {
    temp_dir dir;
    auto path = dir.write("test.conf",
                          "# a comment\n"
                          "delay = 60s\n"
                          "files = /etc/a\n"
                          "files = /etc/b\n"
                          "\n"
                          "[feature]\n"
                          "enable = yes\n");
    auto got = lupine::read_config_file(path, toy_keys);
    CHECK_MESSAGE(got["delay"] == std::vector<std::string>{"60s"}, "got ", show(got["delay"]));
    CHECK_MESSAGE(got["files"] == (std::vector<std::string>{"/etc/a", "/etc/b"}), "got ", show(got["files"]));
    CHECK_MESSAGE(got["feature.enable"] == std::vector<std::string>{"yes"}, "got ", show(got["feature.enable"]));
    CHECK_MESSAGE(got.count("count") == 0, "a key absent from the file must stay absent so the default applies");
  }

  TEST_CASE("a config file with an unknown key is an error naming the file and the key") {
    temp_dir dir;
    auto path = dir.write("typo.conf", "delay = 60s\ndelya = 5s\n");
    std::string what;
    try {
      lupine::read_config_file(path, toy_keys);
    } catch (const config_error& e) {
      what = e.what();
    }
    INFO("message: ", what);
    CHECK(what.find(path) != std::string::npos);
    CHECK(what.find("delya") != std::string::npos);
  }

  TEST_CASE("keys of another program sharing the file are skipped and other unknown keys still refused") {
    temp_dir dir;
    auto path = dir.write("shared.conf", "delay = 60s\n[abusectl]\nsmtp_url = smtp://127.0.0.1:25\n");
    auto got = lupine::read_config_file(path, toy_keys, {"abusectl."});
    CHECK(got["delay"] == std::vector<std::string>{"60s"});
    CHECK(got.count("abusectl.smtp_url") == 0);
    std::string what;
    try {
      lupine::read_config_file(path, toy_keys);
    } catch (const config_error& e) {
      what = e.what();
    }
    CHECK(what.find("abusectl.smtp_url") != std::string::npos);
  }

  TEST_CASE("a config line holding a Boost placeholder is an error and not a hang") {
    // Regression (fuzz/regressions/fuzz_config): Boost 1.81's what() looped for ever.
    temp_dir dir;
    auto path = dir.write("placeholder.conf", "delay = 60s\n%invalid_line% = = x\n[%canonical_option%\n");
    std::string what;
    try {
      lupine::read_config_file(path, toy_keys);
    } catch (const config_error& e) {
      what = e.what();
    }
    CHECK(what.find(path) != std::string::npos);
  }

  TEST_CASE("a missing config file is an error naming the file") {
    temp_dir dir;
    auto path = (dir.path / "absent.conf").string();
    std::string what;
    try {
      lupine::read_config_file(path, toy_keys);
    } catch (const config_error& e) {
      what = e.what();
    }
    INFO("message: ", what);
    CHECK(what.find(path) != std::string::npos);
  }

  TEST_CASE("apply_options uses the defaults when neither the file nor -o gives a key") {
    raw_options effective;
    auto cfg = lupine::apply_options(toy_table(), "toy.conf", {}, {}, &effective);
    CHECK(cfg.delay == minutes{5});
    CHECK(cfg.count == 3);
    CHECK_FALSE(cfg.enable);
    CHECK_MESSAGE(cfg.files.empty(), "got ", show(cfg.files), ", want no files");
    CHECK_MESSAGE(effective["delay"] == std::vector<std::string>{"5m"}, "got ", show(effective["delay"]));
  }

  TEST_CASE("apply_options lets -o win over the file and the file win over the default") {
    raw_options file{{"delay", {"60s"}}, {"count", {"4"}}, {"files", {"/f1", "/f2"}}};
    raw_options cli{{"delay", {"120s"}}, {"files", {"/cli"}}};
    raw_options effective;
    auto cfg = lupine::apply_options(toy_table(), "toy.conf", file, cli, &effective);
    CHECK_MESSAGE(cfg.delay == seconds{120}, "got ", cfg.delay.count(), "ms, want 120000ms (from -o)");
    CHECK_MESSAGE(cfg.count == 4, "got ", cfg.count, ", want 4 (from the file)");
    CHECK_MESSAGE(cfg.files == std::vector<std::string>{"/cli"}, "got ", show(cfg.files),
                  ", want -o to replace the file's list");
    CHECK(effective["delay"] == std::vector<std::string>{"120s"});
  }

  TEST_CASE("apply_options takes the last value of a single-valued key given twice") {
    raw_options file{{"count", {"2", "7"}}};
    auto cfg = lupine::apply_options(toy_table(), "toy.conf", file, {});
    CHECK_MESSAGE(cfg.count == 7, "got ", cfg.count, ", want 7");
  }

  TEST_CASE("apply_options reports every bad value at once, one line each naming key, value and source") {
    raw_options file{{"delay", {"soon"}}, {"count", {"99"}}};
    raw_options cli{{"feature.enable", {"perhaps"}}};
    std::string what;
    try {
      lupine::apply_options(toy_table(), "toy.conf", file, cli);
    } catch (const config_error& e) {
      what = e.what();
    }
    INFO("message: ", what);
    CHECK(what.find("toy.conf: delay = soon: ") != std::string::npos);
    CHECK(what.find("toy.conf: count = 99: expected an integer 1..10 (from toy.conf)") != std::string::npos);
    CHECK(what.find("feature.enable = perhaps: expected yes or no (from -o)") != std::string::npos);
    CHECK_MESSAGE(std::count(what.begin(), what.end(), '\n') == 2, "want three lines, no trailing newline");
  }
}
