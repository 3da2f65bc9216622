// Configuration parsing helpers; see config.hpp.
#include "core/config.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <boost/program_options.hpp>

namespace lupine {
namespace po = boost::program_options;

std::optional<milliseconds> parse_duration(std::string_view text) {
  std::uint64_t n = 0;
  const char* b = text.data();
  const char* e = text.data() + text.size();
  auto [p, ec] = std::from_chars(b, e, n);
  if (ec != std::errc{} || p == b) return std::nullopt;
  std::string_view unit{p, static_cast<size_t>(e - p)};
  std::uint64_t mult = 0;
  if (unit == "ms")
    mult = 1;
  else if (unit == "s")
    mult = 1000;
  else if (unit == "m")
    mult = 60'000;
  else if (unit == "h")
    mult = 3'600'000;
  else if (unit == "d")
    mult = 86'400'000;
  else if (unit == "w")
    mult = 7 * 86'400'000ULL;
  else
    return std::nullopt;
  if (n > (1ULL << 50) / mult) return std::nullopt;  // absurdly long
  return milliseconds{static_cast<std::int64_t>(n * mult)};
}

std::string format_duration(milliseconds d) {
  auto ms = d.count();
  struct unit {
    std::int64_t size;
    const char* name;
  };
  static constexpr unit units[] = {
      {7 * 86'400'000LL, "w"}, {86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1000, "s"}};
  if (ms == 0) return "0s";
  for (const auto& u : units) {
    if (ms % u.size == 0) return fmt::format("{}{}", ms / u.size, u.name);
  }
  return fmt::format("{}ms", ms);
}

std::optional<bool> parse_bool(std::string_view t) {
  if (t == "yes" || t == "true" || t == "on" || t == "1") return true;
  if (t == "no" || t == "false" || t == "off" || t == "0") return false;
  return std::nullopt;
}

std::optional<std::uint64_t> parse_uint(std::string_view t) {
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
  if (ec != std::errc{} || p != t.data() + t.size() || t.empty()) return std::nullopt;
  return n;
}

std::string set_duration(milliseconds& out, const std::string& v, milliseconds min, milliseconds max) {
  auto d = parse_duration(v);
  if (!d) return "expected a duration with a unit (250ms, 30s, 5m, 2h, 35d, 1w)";
  if (*d < min || *d > max) {
    return fmt::format("expected {}..{}", format_duration(min), format_duration(max));
  }
  out = *d;
  return {};
}

std::string set_uint(std::uint64_t& out, const std::string& v, std::uint64_t min, std::uint64_t max) {
  auto n = parse_uint(v);
  if (!n || *n < min || *n > max) return fmt::format("expected an integer {}..{}", min, max);
  out = *n;
  return {};
}

std::string set_uint(unsigned& out, const std::string& v, unsigned min, unsigned max) {
  std::uint64_t n = 0;
  auto err = set_uint(n, v, min, max);
  if (err.empty()) out = static_cast<unsigned>(n);
  return err;
}

std::string set_bool(bool& out, const std::string& v) {
  auto b = parse_bool(v);
  if (!b) return "expected yes or no";
  out = *b;
  return {};
}

std::string set_choice(std::string& out, const std::string& v, std::initializer_list<std::string_view> allowed) {
  for (auto a : allowed) {
    if (v == a) {
      out = v;
      return {};
    }
  }
  std::string list;
  for (auto a : allowed) {
    if (!list.empty()) list += ", ";
    list += a;
  }
  return "expected one of " + list;
}

std::string printable(std::string_view v) {
  std::string out;
  for (unsigned char c : v) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c < ' ' || c == 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out.push_back(static_cast<char>(c));
  }
  return out;
}

raw_options parse_overrides(const std::vector<std::string>& overrides, const std::vector<std::string>& known_keys) {
  raw_options out;
  std::string problems;
  for (const auto& o : overrides) {
    auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0) {
      problems += fmt::format("-o {}: expected key=value\n", printable(o));
      continue;
    }
    auto key = o.substr(0, eq);
    while (!key.empty() && key.back() == ' ') key.pop_back();
    auto value = o.substr(eq + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    if (std::find(known_keys.begin(), known_keys.end(), key) == known_keys.end()) {
      problems += fmt::format("-o {}: unknown key {}\n", printable(o), printable(key));
      continue;
    }
    out[key].push_back(value);
  }
  if (!problems.empty()) {
    problems.pop_back();
    throw config_error{problems};
  }
  return out;
}

std::string format_window(std::chrono::seconds w) {
  auto s = w.count();
  if (s % 86400 == 0 && s / 86400 >= 2) return fmt::format("{}d", s / 86400);
  if (s % 3600 == 0) return fmt::format("{}h", s / 3600);
  if (s % 60 == 0) return fmt::format("{}min", s / 60);
  return fmt::format("{}s", s);
}

std::vector<std::string> split_list(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (const auto& v : in) {
    std::string cur;
    for (char c : v) {
      if (c == ',' || c == ' ' || c == '\t') {
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
      } else {
        cur.push_back(c);
      }
    }
    if (!cur.empty()) out.push_back(cur);
  }
  return out;
}

std::string po_error_text(const std::exception& e) {
  if (const auto* syntax = dynamic_cast<const po::invalid_config_file_syntax*>(&e)) {
    return fmt::format("invalid line '{}'", printable(syntax->tokens()));
  }
  if (const auto* named = dynamic_cast<const po::error_with_option_name*>(&e)) {
    auto name = named->get_option_name();
    if (name.find('%') != std::string::npos) return fmt::format("bad option '{}'", printable(name));
  }
  return e.what();
}

raw_options read_config_file(const std::string& path, const std::vector<std::string>& known_keys,
                             const std::vector<std::string>& foreign_prefixes) {
  std::ifstream in{path};
  if (!in) throw config_error{fmt::format("{}: cannot open config file", path)};
  po::options_description desc;
  for (const auto& k : known_keys) {
    desc.add_options()(k.c_str(), po::value<std::vector<std::string>>()->composing());
  }
  raw_options out;
  try {
    auto parsed = po::parse_config_file(in, desc, true);
    for (const auto& opt : parsed.options) {
      if (opt.unregistered) {
        bool foreign = std::any_of(foreign_prefixes.begin(), foreign_prefixes.end(),
                                   [&opt](const std::string& p) { return opt.string_key.rfind(p, 0) == 0; });
        if (foreign) continue;
        throw config_error{fmt::format("{}: unknown key {}", path, opt.string_key)};
      }
      for (const auto& v : opt.value) out[opt.string_key].push_back(v);
    }
  } catch (const po::error& e) {
    throw config_error{fmt::format("{}: {}", path, po_error_text(e))};
  }
  return out;
}

}  // namespace lupine
