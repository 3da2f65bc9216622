// Output shared by abusectl's commands: a listing printed as an aligned text table or as a
// JSON array of objects, error text on one line, and windows written as policyd writes
// them. Pure (no database). Cells hold what operators and clients typed (reasons, notes,
// logins), so both forms escape them: a value can neither break a table row nor the JSON.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace lupine::abusectl {

struct column {
  std::string name;             // the JSON key; upper-cased as the table header
  bool number = false;          // JSON writes the text bare: only for integer columns
  std::string null_text = "-";  // the table shows this for NULL (and "-" for empty text)
};

using cell = std::optional<std::string>;  // nullopt is SQL NULL

struct listing {
  std::vector<column> columns;
  std::vector<std::vector<cell>> rows;  // each as long as columns
};

// A database field (anything with is_null() and c_str(), such as pqxx::field) as a cell.
template <class Field>
cell field_cell(const Field& f) {
  if (f.is_null()) return std::nullopt;
  return std::string{f.c_str()};
}

// The rows as one JSON array of objects, keys in column order, then a newline ("[]" when
// there are no rows). NULL is null; number columns are written bare.
void print_json(std::ostream& out, const listing& l);
// A header line, then one line per row; columns two spaces apart, aligned by UTF-8 code
// points, control characters escaped (\n, \t, \xNN). Prints nothing for no rows: the
// caller says "no ..." itself.
void print_table(std::ostream& out, const listing& l);

// s as a JSON string literal, quotes included: ", \ and control characters escaped; other
// bytes (UTF-8, as PostgreSQL returns it) are copied.
std::string json_string(std::string_view s);

// An error text on one line: each run of line breaks and tabs becomes one space (libpq and
// PostgreSQL messages span lines), other control characters are escaped, trailing space is
// dropped.
std::string one_line(std::string_view s);

// A window in seconds as policyd writes it (lupine::format_window): "7d", "24h", "10min",
// "90s". parse_window() in cmd_limits.cpp reads all of these back.
std::string format_window(long long seconds);

}  // namespace lupine::abusectl
