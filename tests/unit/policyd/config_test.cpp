// Unit tests for policyd's configuration: listen endpoints, the key table's defaults,
// error messages, -o precedence, cross-key validation and the docs covering every key.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "policyd/config.hpp"

namespace {

using lupine::config_error;
using lupine::raw_options;
using lupine::policyd::listen_endpoint;
using lupine::policyd::parse_listen;
using lupine::policyd::policyd_config;
using lupine::policyd::policyd_options;
using std::chrono::hours;
using std::chrono::seconds;

policyd_config load(const raw_options& file, const raw_options& cli = {}) {
  return lupine::apply_options(policyd_options(), "policyd.conf", file, cli);
}

std::string load_error(const raw_options& file, const raw_options& cli = {}) {
  try {
    load(file, cli);
  } catch (const config_error& e) {
    return e.what();
  }
  return {};
}

std::string kind_name(listen_endpoint::kind k) {
  return k == listen_endpoint::kind::inet ? "inet" : "unix";
}

}  // namespace

TEST_SUITE("policyd config") {
  TEST_CASE("parses listen endpoints for inet and unix sockets") {
    struct tc {
      const char* label;
      std::string input;
      listen_endpoint::kind kind;
      std::string host;
      unsigned short port;
      std::string path;
    };
    const tc cases[] = {
        {"IPv4 loopback", "inet:127.0.0.1:10031", listen_endpoint::kind::inet, "127.0.0.1", 10031, ""},
        {"bracketed IPv6", "inet:[::1]:10031", listen_endpoint::kind::inet, "::1", 10031, ""},
        {"any address", "inet:*:25", listen_endpoint::kind::inet, "::", 25, ""},
        {"localhost", "inet:localhost:10031", listen_endpoint::kind::inet, "127.0.0.1", 10031, ""},
        {"highest port", "inet:0.0.0.0:65535", listen_endpoint::kind::inet, "0.0.0.0", 65535, ""},
        {"unix socket", "unix:/run/lupine/policyd.sock", listen_endpoint::kind::unix_socket, "", 0,
         "/run/lupine/policyd.sock"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        listen_endpoint e;
        auto err = parse_listen(c.input, e);
        REQUIRE_MESSAGE(err.empty(), c.input, ": got error \"", err, "\", want none");
        CHECK_MESSAGE(e.type == c.kind, "got ", kind_name(e.type), ", want ", kind_name(c.kind));
        CHECK_MESSAGE(e.host == c.host, "got host \"", e.host, "\", want \"", c.host, "\"");
        CHECK_MESSAGE(e.port == c.port, "got port ", e.port, ", want ", c.port);
        CHECK_MESSAGE(e.path == c.path, "got path \"", e.path, "\", want \"", c.path, "\"");
        CHECK_MESSAGE(e.text == c.input, "got text \"", e.text, "\", want the configured text");
      }
    }
  }

  TEST_CASE("rejects listen endpoints it could not bind as meant") {
    struct tc {
      const char* label;
      std::string input;
    };
    const tc cases[] = {
        {"relative unix path", "unix:policyd.sock"},
        {"empty unix path", "unix:"},
        {"unix path too long", "unix:/" + std::string(120, 'x')},
        {"port zero", "inet:127.0.0.1:0"},
        {"port too large", "inet:127.0.0.1:65536"},
        {"port not a number", "inet:127.0.0.1:smtp"},
        {"empty port", "inet:127.0.0.1:"},
        {"no port", "inet:127.0.0.1"},
        {"IPv6 without port", "inet:[::1]"},
        {"hostname", "inet:mail.example.com:10031"},
        {"unknown scheme", "tcp:127.0.0.1:10031"},
        {"no scheme", "127.0.0.1:10031"},
        {"empty", ""},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        listen_endpoint e;
        auto err = parse_listen(c.input, e);
        CHECK_MESSAGE(!err.empty(), "\"", c.input, "\": got no error, want one");
      }
    }
  }

  TEST_CASE("the defaults give the documented greylisting and listen settings") {
    auto cfg = load({});
    CHECK_MESSAGE(cfg.greylist.delay == seconds{300}, "got delay ", cfg.greylist.delay.count(), "ms");
    CHECK_MESSAGE(cfg.greylist.retry_window == hours{48}, "got retry_window ", cfg.greylist.retry_window.count(), "ms");
    CHECK_MESSAGE(cfg.greylist.max_age == hours{24 * 35}, "got max_age ", cfg.greylist.max_age.count(), "ms");
    CHECK(cfg.greylist_ipv4_prefix == 24);
    CHECK(cfg.greylist_ipv6_prefix == 64);
    CHECK(cfg.greylist_awl_clients == 5);
    CHECK(cfg.greylist_enable);
    CHECK(cfg.greylist_action == "DEFER_IF_PERMIT");
    CHECK(cfg.greylist_on_db_error == "dunno");
    REQUIRE_MESSAGE(cfg.listen.size() == 1, "got ", cfg.listen.size(), " listen endpoints, want 1");
    CHECK(cfg.listen[0].text == "inet:127.0.0.1:10031");
    CHECK(cfg.listen[0].host == "127.0.0.1");
    CHECK(cfg.listen[0].port == 10031);
    CHECK(cfg.limits.max_line_bytes == 4096);
    CHECK(cfg.limits.max_attributes == 100);
    CHECK(cfg.limits.max_request_bytes == 32768);
    CHECK(cfg.unix_socket_mode == 0660);
    CHECK_MESSAGE(!cfg.name.empty(), "the instance name defaults to the host name");
    CHECK(cfg.database.empty());
  }

  TEST_CASE("every key's default value is accepted by its own parser") {
    for (const auto& spec : policyd_options()) {
      policyd_config cfg;
      std::vector<std::string> values;
      if (!spec.default_value.empty() || !spec.multi) values.push_back(spec.default_value);
      auto err = spec.apply(cfg, values);
      CHECK_MESSAGE(err.empty(), spec.key, " = \"", spec.default_value, "\": got error \"", err, "\"");
      CHECK_MESSAGE(!spec.help.empty(), spec.key, " has no help text");
    }
  }

  TEST_CASE("keys are unique and the connection string is masked as a secret") {
    std::set<std::string> seen;
    for (const auto& spec : policyd_options()) {
      CHECK_MESSAGE(seen.insert(spec.key).second, "duplicate key ", spec.key);
      if (spec.key == "database") {
        CHECK_MESSAGE(spec.secret, "database may hold a password; it must be secret");
      }
    }
    CHECK(seen.count("database") == 1);
  }

  TEST_CASE("file values override the defaults") {
    auto cfg = load({{"greylist.delay", {"60s"}},
                     {"greylist.ipv4_prefix", {"32"}},
                     {"listen", {"inet:[::1]:10031, unix:/run/policyd.sock"}},
                     {"database", {"dbname=lupine"}}});
    CHECK(cfg.greylist.delay == seconds{60});
    CHECK(cfg.greylist_ipv4_prefix == 32);
    CHECK(cfg.database == "dbname=lupine");
    REQUIRE_MESSAGE(cfg.listen.size() == 2, "got ", cfg.listen.size(), " endpoints; a comma list gives several");
    CHECK(cfg.listen[0].host == "::1");
    CHECK(cfg.listen[1].path == "/run/policyd.sock");
  }

  TEST_CASE("-o wins over the file") {
    raw_options file{{"greylist.delay", {"60s"}}, {"listen", {"inet:127.0.0.1:10031", "inet:[::1]:10031"}}};
    raw_options cli{{"greylist.delay", {"120s"}}, {"listen", {"unix:/run/policyd.sock"}}};
    auto cfg = load(file, cli);
    CHECK_MESSAGE(cfg.greylist.delay == seconds{120}, "got ", cfg.greylist.delay.count(), "ms, want 120000ms");
    REQUIRE_MESSAGE(cfg.listen.size() == 1, "got ", cfg.listen.size(), " endpoints; -o replaces the file's list");
    CHECK(cfg.listen[0].path == "/run/policyd.sock");
  }

  TEST_CASE("a bad value names the key in the error") {
    struct tc {
      const char* label;
      std::string key;
      std::string value;
    };
    const tc cases[] = {
        {"duration without unit", "greylist.delay", "300"},
        {"duration out of range", "greylist.retry_window", "400d"},
        {"prefix out of range", "greylist.ipv4_prefix", "33"},
        {"IPv6 prefix too short", "greylist.ipv6_prefix", "8"},
        {"not a number", "greylist.awl_clients", "five"},
        {"not a boolean", "greylist.enable", "maybe"},
        {"unknown action", "greylist.action", "REJECT"},
        {"bad listen", "listen", "inet:example.com:25"},
        {"empty listen", "listen", ""},
        {"bad socket mode", "server.unix_socket_mode", "0999"},
        {"header with a colon", "greylist.header", "X-Grey:list"},
        {"text with a control character", "greylist.text", "retry\tlater"},
        {"line limit too small", "protocol.max_line_bytes", "10"},
        {"unknown db error policy", "greylist.on_db_error", "reject"},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto what = load_error({{c.key, {c.value}}});
        REQUIRE_MESSAGE(!what.empty(), c.key, " = \"", c.value, "\": got no error, want one");
        CHECK_MESSAGE(what.find("policyd.conf: " + c.key + " = ") != std::string::npos, "got \"", what,
                      "\", want it to name ", c.key);
        CHECK_MESSAGE(what.find('\n') == std::string::npos, "one bad key gives one line; got \"", what, "\"");
      }
    }
  }

  TEST_CASE("every bad value is reported, each on its own line") {
    auto what = load_error({{"greylist.delay", {"soon"}}, {"db.threads", {"0"}}}, {{"greylist.enable", {"perhaps"}}});
    INFO("message: ", what);
    CHECK(what.find("greylist.delay") != std::string::npos);
    CHECK(what.find("db.threads") != std::string::npos);
    CHECK(what.find("greylist.enable = perhaps") != std::string::npos);
    CHECK(what.find("(from -o)") != std::string::npos);
    CHECK(std::count(what.begin(), what.end(), '\n') == 2);
  }

  TEST_CASE("validate complains about a missing database") {
    auto cfg = load({});
    auto problems = lupine::policyd::validate(cfg);
    CHECK_MESSAGE(problems.find("database") != std::string::npos, "got \"", problems, "\"");

    auto ok = load({{"database", {"host=/run/postgresql dbname=lupine"}}});
    auto none = lupine::policyd::validate(ok);
    CHECK_MESSAGE(none.empty(), "defaults with a database: got \"", none, "\", want no problems");
  }

  TEST_CASE("validate complains when the retry window is not longer than the delay") {
    struct tc {
      const char* label;
      std::string delay;
      std::string retry_window;
      bool want_problem;
    };
    const tc cases[] = {
        {"window shorter", "2h", "1h", true},
        {"window equal", "1h", "1h", true},
        {"window longer", "1h", "61m", false},
    };
    for (const auto& c : cases) {
      SUBCASE(c.label) {
        auto cfg = load({{"database", {"dbname=lupine"}}},
                        {{"greylist.delay", {c.delay}}, {"greylist.retry_window", {c.retry_window}}});
        auto problems = lupine::policyd::validate(cfg);
        bool got = problems.find("retry_window") != std::string::npos;
        CHECK_MESSAGE(got == c.want_problem, "delay ", c.delay, ", retry_window ", c.retry_window, ": got \"", problems,
                      "\"");
      }
    }
  }

  TEST_CASE("validate complains when max_age is shorter than the retry window") {
    auto cfg = load({{"database", {"dbname=lupine"}}, {"greylist.max_age", {"1d"}}});
    auto problems = lupine::policyd::validate(cfg);
    CHECK_MESSAGE(problems.find("greylist.max_age") != std::string::npos, "got \"", problems, "\"");
  }

  TEST_CASE("every configuration key is documented in docs/config.md") {
    const std::string path = LUPINE_SOURCE_DIR "/docs/config.md";
    std::ifstream in{path};
    REQUIRE_MESSAGE(in.good(), "cannot read ", path);
    std::stringstream text;
    text << in.rdbuf();
    const std::string doc = text.str();
    for (const auto& spec : policyd_options()) {
      CHECK_MESSAGE(doc.find("`" + spec.key + "`") != std::string::npos, "docs/config.md does not document `", spec.key,
                    "`");
    }
  }
}
