// abusectl stats ACCOUNT [--since WHEN] [--until WHEN] [--baseline N] [--json]
// [--chart|--no-chart]: one account's outbound traffic from the event log, against its own
// baseline and the other accounts (abusectl/stats.hpp computes, this file parses the
// command line and picks the output). Read-only. Progress notes go to stderr only when it
// is a terminal (nothing under cron or a timer); the hourly chart goes to stdout when it is
// a terminal, or with --chart.
#include <sys/ioctl.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <iostream>

#include <fmt/format.h>
#include <boost/program_options.hpp>

#include "abusectl/commands.hpp"
#include "abusectl/output.hpp"
#include "abusectl/stats.hpp"
#include "abusectl/when.hpp"
#include "core/config.hpp"
#include "core/db.hpp"

namespace lupine::abusectl {
namespace po = boost::program_options;

namespace {

constexpr std::string_view prefix = "abusectl stats: ";

// $COLUMNS when it is a sane number, else the terminal's width when stdout is one, else 80.
std::size_t terminal_width() {
  if (const char* env = std::getenv("COLUMNS"); env != nullptr && env[0] != '\0') {
    std::string_view text{env};
    unsigned long n = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec == std::errc{} && p == text.data() + text.size() && n >= 20 && n <= 1000) return n;
  }
  winsize ws{};
  if (::isatty(STDOUT_FILENO) != 0 && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) {
    return ws.ws_col;
  }
  return 80;
}

// Block characters only when the locale says UTF-8 (LC_ALL, else LC_CTYPE, else LANG).
bool utf8_locale() {
  for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || v[0] == '\0') continue;
    std::string low;
    for (const char* c = v; *c != '\0'; ++c) low.push_back(*c >= 'A' && *c <= 'Z' ? static_cast<char>(*c + 32) : *c);
    return low.find("utf-8") != std::string::npos || low.find("utf8") != std::string::npos;
  }
  return false;
}

}  // namespace

int cmd_stats(const global_options& g, const std::vector<std::string>& args) {
  po::options_description desc{
      "Usage: abusectl stats ACCOUNT [--since WHEN] [--until WHEN] [--baseline N] [--json] [--chart|--no-chart]\n\n"
      "  What ACCOUNT (a SASL login, any case) sent in the period from the event log: messages,\n"
      "  recipients, bytes, distinct recipients and domains, per UTC hour and day, the client\n"
      "  addresses; each figure against the account's own baseline (the N periods before) and\n"
      "  against every account that sent in the period; and findings in words.\n\n"
      "  WHEN: 2026-11-20, 2026-11-20T14:00 (UTC), 2026-11-20T14:00:00Z, 2026-11-20T14:00+01:00,\n"
      "  a duration before now (90m, 24h, 7d, 2w), or now.\n\nOptions"};
  desc.add_options()("help,h", "show this help")("since", po::value<std::string>()->value_name("WHEN"),
                                                 "start of the period (default: 7 days before --until)")(
      "until", po::value<std::string>()->value_name("WHEN"), "end of the period, exclusive (default: now)")(
      "baseline", po::value<std::string>()->value_name("N"),
      "baseline periods before --since, 0..52 (default 4; 0: none)")("json", "machine-readable output (one object)")(
      "chart", "print the hourly chart even when stdout is not a terminal")("no-chart", "never print the chart");
  po::variables_map vm;
  std::vector<std::string> words;
  if (int rc = parse_args("stats", desc, args, vm, words); rc >= 0) return rc;
  const std::string account = words.size() == 1 ? words.front() : std::string{};
  if (account.empty()) {
    std::cerr << prefix << "usage: abusectl stats ACCOUNT [--since WHEN] [--until WHEN] [--json]\n";
    return exit_usage;
  }
  if (vm.count("chart") != 0 && vm.count("no-chart") != 0) {
    std::cerr << prefix << "--chart and --no-chart exclude each other\n";
    return exit_usage;
  }
  stats_request req;
  req.account = account;
  // Whole seconds: the period and its baseline are cut at the same instants in every statement.
  const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  auto when = [&](const char* name, time_point fallback) -> std::optional<time_point> {
    if (vm.count(name) == 0) return fallback;
    const auto& text = vm[name].as<std::string>();
    std::string error;
    auto t = parse_when(text, now, error);
    if (!t) std::cerr << prefix << fmt::format("bad --{} '{}': {}\n", name, printable(text), error);
    return t;
  };
  auto until = when("until", now);
  if (!until) return exit_usage;
  auto since = when("since", *until - std::chrono::days{7});
  if (!since) return exit_usage;
  if (*since >= *until) {
    std::cerr << prefix << fmt::format("--since {} is not before --until {}\n", format_utc(*since), format_utc(*until));
    return exit_usage;
  }
  req.since = *since;
  req.until = *until;
  if (vm.count("baseline") != 0) {
    const auto& text = vm["baseline"].as<std::string>();
    int n = -1;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc{} || p != text.data() + text.size() || n < 0 || n > 52) {
      std::cerr << prefix << fmt::format("bad --baseline '{}': expected a number of periods, 0..52\n", printable(text));
      return exit_usage;
    }
    req.baseline_periods = n;
  }
  const bool json = vm.count("json") != 0;
  const bool chart = !json && vm.count("no-chart") == 0 && (vm.count("chart") != 0 || ::isatty(STDOUT_FILENO) != 0);

  std::function<void(std::string_view)> progress;
  if (::isatty(STDERR_FILENO) != 0) progress = [](std::string_view text) { std::cerr << prefix << text << "\n"; };
  try {
    auto s = db_connect(resolve_database(g), "lupine-abusectl");
    auto st = compute_stats(*s, req, progress);
    if (!st) {
      std::cerr << prefix << fmt::format("no activity recorded for {}\n", printable(account));
      return exit_failed;
    }
    if (json) {
      std::cout << stats_json(*st);
      return exit_ok;
    }
    print_stats(std::cout, *st);
    if (chart) print_chart(std::cout, *st, chart_style{terminal_width(), utf8_locale()});
    return exit_ok;
  } catch (const std::exception& e) {
    std::cerr << prefix << one_line(e.what()) << "\n";
    return exit_failed;
  }
}

}  // namespace lupine::abusectl
