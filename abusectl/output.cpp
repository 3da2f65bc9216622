// Tables, JSON and one-line errors for abusectl; see output.hpp.
#include "abusectl/output.hpp"

#include <algorithm>
#include <cstddef>

#include <fmt/format.h>

#include "core/config.hpp"

namespace lupine::abusectl {

namespace {

// Code points, not bytes: a UTF-8 login or reason must not push the next column over.
std::size_t display_width(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

std::string table_text(const column& c, const cell& v) {
  if (!v) return c.null_text;
  if (v->empty()) return "-";
  return printable(*v);
}

std::string upper(std::string_view s) {
  std::string out{s};
  for (auto& ch : out) {
    if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 'a' + 'A');
  }
  return out;
}

}  // namespace

std::string json_string(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
  return out;
}

void print_json(std::ostream& out, const listing& l) {
  std::string text = "[";
  for (std::size_t r = 0; r < l.rows.size(); ++r) {
    text += r == 0 ? "{" : ",{";
    for (std::size_t i = 0; i < l.columns.size(); ++i) {
      const auto& c = l.columns.at(i);
      const auto& v = l.rows[r].at(i);
      if (i != 0) text += ",";
      text += json_string(c.name);
      text += ":";
      if (!v) {
        text += "null";
      } else if (c.number) {
        text += *v;
      } else {
        text += json_string(*v);
      }
    }
    text += "}";
  }
  text += "]\n";
  out << text;
}

void print_table(std::ostream& out, const listing& l) {
  if (l.rows.empty()) return;
  std::vector<std::vector<std::string>> lines;
  lines.reserve(l.rows.size() + 1);
  auto& header = lines.emplace_back();
  for (const auto& c : l.columns) header.push_back(upper(c.name));
  for (const auto& row : l.rows) {
    auto& line = lines.emplace_back();
    for (std::size_t i = 0; i < l.columns.size(); ++i) line.push_back(table_text(l.columns[i], row.at(i)));
  }
  std::vector<std::size_t> width(l.columns.size(), 0);
  for (const auto& line : lines) {
    for (std::size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], display_width(line[i]));
  }
  std::string text;
  for (const auto& line : lines) {
    for (std::size_t i = 0; i < line.size(); ++i) {
      text += line[i];
      // The last column is not padded: no trailing blanks.
      if (i + 1 < line.size()) text.append(width[i] - display_width(line[i]) + 2, ' ');
    }
    text += "\n";
  }
  out << text;
}

std::string one_line(std::string_view s) {
  std::string out;
  bool gap = false;
  for (unsigned char c : s) {
    if (c == '\n' || c == '\r' || c == '\t') {
      gap = true;
      continue;
    }
    if (gap && !out.empty() && out.back() != ' ') out.push_back(' ');
    gap = false;
    if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string format_window(long long seconds) {
  return lupine::format_window(std::chrono::seconds{seconds});
}

}  // namespace lupine::abusectl
