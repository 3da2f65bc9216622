// Configuration: one file plus Postfix-style `-o key=value` overrides.
//
// Each program describes its keys once, in a table of option_spec (key, default, help,
// how to apply a value). load_options() reads the file with Boost.Program_options (INI
// syntax: `key = value`, `[section]` prefixes `section.`), lets `-o` win over the file,
// applies every key (defaults included) and collects every problem, one line each, naming
// the key. The same table feeds --print-config and the docs test. Startup only: throws
// config_error, never touches the network.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lupine {

using std::chrono::milliseconds;

// A startup or configuration problem. what() is the whole message, one line per problem.
class config_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "250ms", "300s", "5m", "2h", "35d", "1w"; a unit is required. nullopt when malformed.
std::optional<milliseconds> parse_duration(std::string_view text);
// The shortest exact form: 300000ms -> "5m".
std::string format_duration(milliseconds d);
// yes/no, true/false, on/off, 1/0.
std::optional<bool> parse_bool(std::string_view text);
std::optional<std::uint64_t> parse_uint(std::string_view text);

// Helpers for option_spec::apply; each returns an error text or "" when the value is fine.
std::string set_duration(milliseconds& out, const std::string& v, milliseconds min, milliseconds max);
std::string set_uint(std::uint64_t& out, const std::string& v, std::uint64_t min, std::uint64_t max);
std::string set_uint(unsigned& out, const std::string& v, unsigned min, unsigned max);
std::string set_bool(bool& out, const std::string& v);
std::string set_choice(std::string& out, const std::string& v, std::initializer_list<std::string_view> allowed);

template <class Config>
struct option_spec {
  std::string key;            // dotted, e.g. "greylist.delay"
  std::string default_value;  // as the user would write it; "" means empty
  std::string help;           // one sentence for --help-config and docs
  bool multi = false;         // may be given several times (values accumulate)
  bool secret = false;        // masked by --print-config
  // Applies the values (one unless multi) to the config; returns an error text or "".
  std::function<std::string(Config&, const std::vector<std::string>&)> apply;
};

// v with control characters shown as \\n, \\t, \\xNN: error lines stay one line each.
std::string printable(std::string_view v);

// Raw values by key, in the order given.
using raw_options = std::map<std::string, std::vector<std::string>>;

// Parses `-o key=value` strings; unknown keys or a missing `=` are errors.
raw_options parse_overrides(const std::vector<std::string>& overrides, const std::vector<std::string>& known_keys);
// Reads a config file; unknown keys are errors naming the file and the key.
// A window as policyd's replies and abusectl's listings show it: "2d" (whole days, from two
// days), "24h", "10min", "90s".
std::string format_window(std::chrono::seconds w);

// Splits multi-valued settings on commas and blanks too ("listen = inet:a:1, unix:/x"),
// dropping empty items.
std::vector<std::string> split_list(const std::vector<std::string>& in);

// The text of a Boost.Program_options error, safe to build: Boost 1.81's what() loops for
// ever when an option name or line contains one of its own placeholders (%canonical_option%,
// %invalid_line%), so those are reported without what().
std::string po_error_text(const std::exception& e);

// Keys starting with one of foreign_prefixes belong to another program sharing the file
// (policyd skips abusectl's [abusectl] section) and are left out; any other unknown key is
// an error.
raw_options read_config_file(const std::string& path, const std::vector<std::string>& known_keys,
                             const std::vector<std::string>& foreign_prefixes = {});

// The merged value of each key: the -o value if given, else the file's, else the default.
// For a multi key, -o replaces the file's list. Returns every problem via config_error.
template <class Config>
Config apply_options(const std::vector<option_spec<Config>>& table, const std::string& source, const raw_options& file,
                     const raw_options& cli, raw_options* effective = nullptr) {
  Config cfg{};
  std::string problems;
  for (const auto& spec : table) {
    std::vector<std::string> values;
    std::string from = "default";
    if (auto it = cli.find(spec.key); it != cli.end()) {
      values = it->second;
      from = "-o";
    } else if (auto it2 = file.find(spec.key); it2 != file.end()) {
      values = it2->second;
      from = source;
    } else if (!spec.default_value.empty() || !spec.multi) {
      values = {spec.default_value};
    }
    if (!spec.multi && values.size() > 1) values = {values.back()};
    if (effective != nullptr) (*effective)[spec.key] = values;
    std::string err = spec.apply(cfg, values);
    if (!err.empty()) {
      std::string shown = values.empty() ? "" : printable(values.back());
      problems += source + ": " + spec.key + " = " + shown + ": " + err + " (from " + from + ")\n";
    }
  }
  if (!problems.empty()) {
    problems.pop_back();
    throw config_error{problems};
  }
  return cfg;
}

template <class Config>
std::vector<std::string> option_keys(const std::vector<option_spec<Config>>& table) {
  std::vector<std::string> keys;
  keys.reserve(table.size());
  for (const auto& s : table) keys.push_back(s.key);
  return keys;
}

}  // namespace lupine
