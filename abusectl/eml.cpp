// E-mail parsing for abuse complaints; see eml.hpp. Every scanner here walks its input once
// (or a bounded number of times: once per multipart level) and keeps at most the limits in
// eml_limits, so hostile input costs linear time and bounded memory.
#include "abusectl/eml.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include <fmt/format.h>

#include "core/text.hpp"

namespace lupine::abusectl {
namespace {

using limits = eml_limits;
constexpr auto npos = std::string_view::npos;

bool is_wsp(char c) {
  return c == ' ' || c == '\t';
}
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
char to_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (to_lower(a[i]) != to_lower(b[i])) return false;
  }
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool iends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && iequals(s.substr(s.size() - suffix.size()), suffix);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool all_space(std::string_view s) {
  return std::all_of(s.begin(), s.end(), is_space);
}

// ---- UTF-8 and charsets ----------------------------------------------------------------

constexpr std::string_view replacement = "\xEF\xBF\xBD";  // U+FFFD

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// s with every byte that is not part of a well-formed UTF-8 sequence (overlong forms,
// surrogates and code points past U+10FFFF included), and NUL, replaced by U+FFFD: the
// result can be stored as PostgreSQL text.
std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    auto u = static_cast<unsigned char>(s[i]);
    if (u == 0) {
      out += replacement;
      ++i;
      continue;
    }
    if (u < 0x80) {
      out += s[i++];
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (u >= 0xC2 && u <= 0xDF) {
      len = 2;
      cp = u & 0x1Fu;
    } else if (u >= 0xE0 && u <= 0xEF) {
      len = 3;
      cp = u & 0x0Fu;
    } else if (u >= 0xF0 && u <= 0xF4) {
      len = 4;
      cp = u & 0x07u;
    }
    bool ok = len != 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (c & 0x3Fu);
    }
    if (ok &&
        ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)) {
      ok = false;
    }
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += replacement;
      ++i;
    }
  }
  return out;
}

enum class charset { utf8, ascii, latin1, cp1252, unknown };

charset charset_of(std::string_view name) {
  // RFC 2231 section 5: "charset*language" in an encoded-word.
  if (auto star = name.find('*'); star != npos) name = name.substr(0, star);
  std::string n = ascii_lower(name);
  if (n == "utf-8" || n == "utf8") return charset::utf8;
  if (n == "us-ascii" || n == "ascii") return charset::ascii;
  if (n == "iso-8859-1" || n == "iso8859-1" || n == "iso_8859-1" || n == "latin1" || n == "latin-1" || n == "l1" ||
      n == "cp819") {
    return charset::latin1;
  }
  if (n == "windows-1252" || n == "cp1252") return charset::cp1252;
  return charset::unknown;
}

// windows-1252 0x80..0x9F; 0 where the code page leaves a byte undefined.
constexpr std::array<std::uint16_t, 32> cp1252_high{0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                                    0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0,      0x017D, 0,
                                                    0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                                    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

std::string to_utf8(std::string_view bytes, charset cs) {
  if (cs == charset::utf8) return valid_utf8(bytes);
  std::string out;
  out.reserve(bytes.size());
  for (char c : bytes) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x80) {
      out += c;
    } else if (cs == charset::ascii) {
      out += replacement;
    } else if (cs == charset::cp1252 && u < 0xA0) {
      auto cp = cp1252_high.at(u - 0x80u);
      if (cp == 0) {
        out += replacement;
      } else {
        append_utf8(out, cp);
      }
    } else {
      append_utf8(out, u);
    }
  }
  return out;
}

// ---- transfer encodings ------------------------------------------------------------------

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// A base64 body (RFC 2045 6.8): characters outside the alphabet are skipped; '=' ends a
// quantum, so chunks encoded one after another still decode.
std::string decode_base64_body(std::string_view s) {
  std::string out;
  out.reserve(s.size() / 4 * 3 + 3);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    if (c == '=') {
      acc = 0;
      bits = 0;
      continue;
    }
    int v = base64_value(c);
    if (v < 0) continue;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFFu);
      acc &= (1u << bits) - 1u;
    }
  }
  return out;
}

// The B encoding of an encoded-word (RFC 2047 4.1): strict, since a word that does not
// decode is shown as written instead.
std::optional<std::string> decode_base64_word(std::string_view s) {
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  std::size_t i = 0;
  for (; i < s.size() && s[i] != '='; ++i) {
    int v = base64_value(s[i]);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFFu);
      acc &= (1u << bits) - 1u;
    }
  }
  for (; i < s.size(); ++i) {
    if (s[i] != '=') return std::nullopt;
  }
  return out;
}

// The Q encoding (RFC 2047 4.2): "_" is a space, "=XX" a byte.
std::optional<std::string> decode_q_word(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '_') {
      out += ' ';
    } else if (c == '=') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex_value(s[i + 1]);
      int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

// A quoted-printable body (RFC 2045 6.7). Lenient: a '=' that starts no valid escape is
// kept as it is.
std::string decode_qp_body(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c != '=') {
      out += c;
      continue;
    }
    if (i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
      continue;
    }
    // A soft line break: '=', maybe transport padding, then the line break.
    std::size_t j = i + 1;
    while (j < s.size() && is_wsp(s[j])) ++j;
    if (j < s.size() && s[j] == '\r') ++j;
    if (j < s.size() && s[j] == '\n') {
      i = j;
    } else if (j >= s.size()) {
      i = j;
    } else {
      out += c;
    }
  }
  return out;
}

std::string decode_body(std::string_view body, std::string_view encoding) {
  if (iequals(encoding, "base64")) return decode_base64_body(body);
  if (iequals(encoding, "quoted-printable")) return decode_qp_body(body);
  return std::string{body};  // 7bit, 8bit, binary, and unknown ones as they are
}

// ---- notes ------------------------------------------------------------------------------

// s for a note: at most max bytes, valid UTF-8, control characters as \xNN.
std::string shown(std::string_view s, std::size_t max = 80) {
  bool cut = s.size() > max;
  std::string v = valid_utf8(s.substr(0, max));
  std::string out;
  out.reserve(v.size() + 3);
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  if (cut) out += "...";
  return out;
}

void add_note(std::vector<std::string>& notes, std::string text) {
  if (notes.size() < limits::max_notes) {
    notes.push_back(std::move(text));
  } else if (notes.size() == limits::max_notes) {
    notes.emplace_back("more problems were found; they are not listed");
  }
}

// ---- header blocks ----------------------------------------------------------------------

// Lines ending in LF or CRLF (the CR is dropped); a last line without a line break counts.
struct line_reader {
  std::string_view data;
  std::size_t pos = 0;
  bool next(std::string_view& line, std::size_t& start) {
    if (pos >= data.size()) return false;
    start = pos;
    auto nl = data.find('\n', pos);
    std::size_t end = nl == npos ? data.size() : nl;
    pos = nl == npos ? data.size() : nl + 1;
    line = data.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return true;
  }
};

// "Name: value" (RFC 5322 2.2; also the obsolete "Name : value"): a field name of printable
// ASCII without ':'. Names longer than 256 bytes are not taken as names.
bool split_field(std::string_view line, std::string_view& name, std::string_view& value) {
  std::size_t i = 0;
  while (i < line.size() && i <= 256) {
    auto u = static_cast<unsigned char>(line[i]);
    if (u == ':' || u < 33 || u > 126) break;
    ++i;
  }
  if (i == 0 || i > 256) return false;
  std::size_t name_end = i;
  while (i < line.size() && is_wsp(line[i])) ++i;
  if (i >= line.size() || line[i] != ':') return false;
  name = line.substr(0, name_end);
  value = line.substr(i + 1);
  return true;
}

struct field {
  std::string name;   // lower-case
  std::string value;  // unfolded and trimmed
};

struct header_block {
  std::vector<field> fields;
  std::size_t begin = 0;  // first header line
  std::size_t end = 0;    // past the last header line and its line break
  std::size_t body = 0;   // first byte of the body
  std::vector<std::string> notes;

  const field* find(std::string_view lname) const {
    for (const auto& f : fields) {
      if (f.name == lname) return &f;
    }
    return nullptr;
  }
};

// Field names that make a header block a mail's (one is enough), each between spaces.
constexpr std::string_view mail_fields =
    " from date received message-id return-path subject to cc sender reply-to delivered-to x-original-to "
    "mime-version content-type in-reply-to references dkim-signature arc-seal authentication-results x-mailer ";

bool is_mail_field(std::string_view lname) {
  // lname is a field name: printable ASCII without spaces (split_field).
  return !lname.empty() && mail_fields.find(" " + std::string{lname} + " ") != npos;
}

enum class block_mode {
  message,  // a whole mail: the header block must be there and look like mail's
  part,     // a MIME part: no header block means the part is all body
};

// Reads the header block at the start of raw into hb, unfolding continuation lines (RFC
// 5322 2.2.3: the line break before white space is removed). The block ends at the first
// empty line, at the end of the input, or (with a note) at a line that is neither a field
// nor a continuation. Returns "" or, in message mode, why raw is not a mail.
std::string read_header_block(std::string_view raw, block_mode mode, header_block& hb) {
  const bool message = mode == block_mode::message;
  hb = header_block{};
  std::size_t pos = 0;
  if (message) {
    if (trim(raw).empty()) return "not a mail: empty input";
    if (raw.size() > limits::max_input_bytes) {
      return fmt::format("not accepted: {} bytes, over the limit of {} bytes", raw.size(), limits::max_input_bytes);
    }
    if (raw.starts_with("\xEF\xBB\xBF")) pos = 3;  // a UTF-8 byte order mark from a Windows tool
    while (pos < raw.size() && (raw[pos] == '\n' || raw[pos] == '\r')) ++pos;
    if (raw.substr(pos).starts_with("From ")) {  // an mbox separator line
      auto nl = raw.find('\n', pos);
      pos = nl == npos ? raw.size() : nl + 1;
    }
    if (pos >= raw.size()) return "not a mail: no header block";
  }
  hb.begin = pos;
  hb.end = hb.body = raw.size();

  auto no_header_block = [&](std::size_t n, std::string_view why) -> std::string {
    if (message) return fmt::format("not a mail: line {} {}", n, why);
    hb.fields.clear();
    hb.end = hb.body = hb.begin;
    return {};
  };

  line_reader r{raw, pos};
  std::string_view line;
  std::size_t start = 0;
  std::size_t n = 0;
  bool have_field = false;  // a field line was seen, so continuation lines are valid
  bool keep = false;        // the current field is being stored
  bool size_noted = false, count_noted = false, long_noted = false, nul_noted = false;
  auto append = [&](std::string_view piece) {
    auto& v = hb.fields.back().value;
    if (v.size() + piece.size() <= limits::max_field_bytes) {
      v.append(piece);
      return;
    }
    v.append(piece.substr(0, limits::max_field_bytes - std::min(v.size(), limits::max_field_bytes)));
    if (!long_noted) {
      long_noted = true;
      add_note(hb.notes, fmt::format("header field {} at line {} is longer than {} bytes; the rest is ignored",
                                     shown(hb.fields.back().name, 40), n, limits::max_field_bytes));
    }
  };
  while (r.next(line, start)) {
    ++n;
    if (line.empty()) {
      if (n == 1 && message) return no_header_block(n, "is empty: no header fields");
      hb.end = start;
      hb.body = r.pos;
      break;
    }
    if (message && !nul_noted && line.find('\0') != npos) {
      nul_noted = true;
      add_note(hb.notes, fmt::format("header line {} contains a NUL byte", n));
    }
    // A field that starts within the bound is kept (up to max_field_bytes).
    bool over_size = start - hb.begin >= limits::max_header_bytes;
    if (over_size && !size_noted) {
      size_noted = true;
      add_note(hb.notes, fmt::format("header block is larger than {} bytes; fields from line {} on are ignored",
                                     limits::max_header_bytes, n));
    }
    if (is_wsp(line.front())) {
      if (!have_field) return no_header_block(n, "starts with white space, not a header field");
      if (keep && !over_size) append(line);
      continue;
    }
    std::string_view name, value;
    if (split_field(line, name, value)) {
      have_field = true;
      keep = false;
      if (over_size) continue;
      if (hb.fields.size() >= limits::max_fields) {
        if (!count_noted) {
          count_noted = true;
          add_note(hb.notes, fmt::format("more than {} header fields; fields from line {} on are ignored",
                                         limits::max_fields, n));
        }
        continue;
      }
      hb.fields.push_back(field{ascii_lower(name), {}});
      keep = true;
      append(value);
      continue;
    }
    if (!have_field) return no_header_block(n, "is not a header field");
    add_note(hb.notes,
             fmt::format("header line {} is neither a field nor a continuation: '{}'; the body is taken to start there",
                         n, shown(line, 40)));
    hb.end = hb.body = start;
    break;
  }
  for (auto& f : hb.fields) {
    auto t = trim(f.value);
    if (t.size() != f.value.size()) f.value = std::string{t};
  }
  if (message &&
      std::none_of(hb.fields.begin(), hb.fields.end(), [](const field& f) { return is_mail_field(f.name); })) {
    return "not a mail: no From, Date, Received, Message-ID or other mail header field";
  }
  return {};
}

// ---- MIME -------------------------------------------------------------------------------

// "(comment)" removed outside quoted strings; nesting counted, "\x" quotes x.
std::string strip_comments(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t depth = 0;
  bool quoted = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (depth > 0) {
      if (c == '\\') {
        ++i;
      } else if (c == '(') {
        ++depth;
      } else if (c == ')') {
        --depth;
      }
      continue;
    }
    if (quoted) {
      out += c;
      if (c == '\\' && i + 1 < s.size()) {
        out += s[++i];
      } else if (c == '"') {
        quoted = false;
      }
      continue;
    }
    if (c == '"') {
      quoted = true;
    } else if (c == '(') {
      depth = 1;
      out += ' ';
      continue;
    }
    out += c;
  }
  return out;
}

struct mime_type {
  std::string type, subtype;  // lower-case
  std::string boundary;
  std::string name;  // the name (or, from Content-Disposition, filename) parameter
};

// Content-Type (RFC 2045 5.1) or, with want_type false, Content-Disposition: the type and
// the boundary and name/filename parameters. At most 64 parameters are read.
mime_type parse_mime_header(std::string_view value, bool want_type) {
  mime_type t;
  std::string s = strip_comments(value);
  std::string_view v = s;
  std::size_t semi = v.find(';');
  std::string_view head = trim(v.substr(0, semi));
  if (want_type) {
    auto slash = head.find('/');
    if (slash != npos) {
      t.type = ascii_lower(trim(head.substr(0, slash)));
      t.subtype = ascii_lower(trim(head.substr(slash + 1)));
    }
  } else {
    t.type = ascii_lower(head);
  }
  std::size_t i = semi == npos ? v.size() : semi + 1;
  for (int count = 0; i < v.size() && count < 64; ++count) {
    while (i < v.size() && (is_space(v[i]) || v[i] == ';')) ++i;
    std::size_t name_start = i;
    while (i < v.size() && v[i] != '=' && v[i] != ';') ++i;
    std::string pname = ascii_lower(trim(v.substr(name_start, i - name_start)));
    if (i >= v.size() || v[i] != '=') continue;
    ++i;
    while (i < v.size() && is_space(v[i])) ++i;
    std::string pvalue;
    if (i < v.size() && v[i] == '"') {
      for (++i; i < v.size() && v[i] != '"'; ++i) {
        if (v[i] == '\\' && i + 1 < v.size()) ++i;
        pvalue += v[i];
      }
      if (i < v.size()) ++i;
    } else {
      std::size_t value_start = i;
      while (i < v.size() && v[i] != ';') ++i;
      pvalue = std::string{trim(v.substr(value_start, i - value_start))};
    }
    if (pname == "boundary") {
      if (t.boundary.empty()) t.boundary = pvalue;
    } else if (pname == "name" || pname == "filename" || pname == "name*" || pname == "filename*") {
      if (t.name.empty()) t.name = pvalue;
    }
  }
  return t;
}

// 1 for a delimiter line "--boundary", 2 for the close delimiter "--boundary--" (RFC 2046
// 5.1.1; transport padding after either is allowed), else 0.
int delimiter_kind(std::string_view line, std::string_view boundary) {
  if (line.size() < boundary.size() + 2 || line[0] != '-' || line[1] != '-') return 0;
  if (line.substr(2, boundary.size()) != boundary) return 0;
  auto rest = line.substr(2 + boundary.size());
  int kind = 1;
  if (rest.starts_with("--")) {
    kind = 2;
    rest.remove_prefix(2);
  }
  return std::all_of(rest.begin(), rest.end(), is_wsp) ? kind : 0;
}

struct split_result {
  std::vector<std::string_view> parts;
  bool any_delimiter = false;
  bool closed = false;
};

// The body parts of a multipart body (the preamble and epilogue dropped). Without a close
// delimiter the text after the last delimiter is the last part (when not blank).
split_result split_multipart(std::string_view body, std::string_view boundary, std::size_t max_parts) {
  split_result res;
  line_reader r{body};
  std::string_view line;
  std::size_t start = 0;
  std::size_t part_start = npos;
  while (r.next(line, start)) {
    int kind = delimiter_kind(line, boundary);
    if (kind == 0) continue;
    res.any_delimiter = true;
    if (part_start != npos) {
      // The line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1).
      std::size_t e = start;
      if (e > part_start && body[e - 1] == '\n') --e;
      if (e > part_start && body[e - 1] == '\r') --e;
      res.parts.push_back(body.substr(part_start, e - part_start));
    }
    if (kind == 2 || res.parts.size() >= max_parts) {
      res.closed = true;  // past max_parts the caller notes the parts it drops
      return res;
    }
    part_start = r.pos;
  }
  if (part_start != npos && !trim(body.substr(part_start)).empty()) res.parts.push_back(body.substr(part_start));
  return res;
}

struct extract_state {
  std::vector<std::string> copies;
  std::vector<std::string>& notes;
  std::size_t parts = 0;
  bool parts_noted = false, copies_noted = false, depth_noted = false;
};

bool looks_like_mail(std::string_view bytes) {
  header_block hb;
  return read_header_block(bytes, block_mode::message, hb).empty();
}

void add_copy(extract_state& st, std::string copy) {
  if (trim(copy).empty()) {
    add_note(st.notes, fmt::format("attached message {} is empty; skipped", st.copies.size() + 1));
    return;
  }
  if (st.copies.size() >= limits::max_copies) {
    if (!st.copies_noted) {
      st.copies_noted = true;
      add_note(st.notes, fmt::format("more than {} attached messages; the rest are ignored", limits::max_copies));
    }
    return;
  }
  st.copies.push_back(std::move(copy));
}

// One entity (the message, or a MIME part) whose header block is hb: a copy, a multipart
// to descend into, or neither. depth counts the multipart levels above this entity.
void walk(const header_block& hb, std::string_view entity, std::string_view default_type, std::size_t depth,
          extract_state& st) {
  mime_type ct;
  if (const field* f = hb.find("content-type"); f != nullptr) ct = parse_mime_header(f->value, true);
  if (ct.type.empty() || ct.subtype.empty()) {
    auto slash = default_type.find('/');
    ct.type = std::string{default_type.substr(0, slash)};
    ct.subtype = std::string{default_type.substr(slash + 1)};
  }
  std::string_view body = entity.substr(std::min(hb.body, entity.size()));
  std::string_view encoding;
  if (const field* f = hb.find("content-transfer-encoding"); f != nullptr) encoding = trim(f->value);

  if (ct.type == "multipart") {
    if (ct.boundary.empty()) {
      add_note(st.notes,
               fmt::format("multipart/{} without a boundary parameter; its parts are not read", shown(ct.subtype, 40)));
      return;
    }
    if (depth >= limits::max_depth) {
      if (!st.depth_noted) {
        st.depth_noted = true;
        add_note(st.notes, fmt::format("multipart nested deeper than {} levels; the deeper parts are ignored",
                                       limits::max_depth));
      }
      return;
    }
    // RFC 2046 5.1.5: in a digest, a part without Content-Type is a message/rfc822.
    std::string_view child_default = ct.subtype == "digest" ? "message/rfc822" : "text/plain";
    auto split = split_multipart(body, ct.boundary, limits::max_parts + 1);
    if (!split.any_delimiter) {
      add_note(st.notes, fmt::format("multipart/{} has no boundary line '--{}'; its parts are not read",
                                     shown(ct.subtype, 40), shown(ct.boundary, 70)));
      return;
    }
    if (!split.closed) {
      add_note(st.notes, fmt::format("multipart/{} has no closing boundary '--{}--' (truncated?); its last part is "
                                     "read as it is",
                                     shown(ct.subtype, 40), shown(ct.boundary, 70)));
    }
    for (auto part : split.parts) {
      if (++st.parts > limits::max_parts) {
        if (!st.parts_noted) {
          st.parts_noted = true;
          add_note(st.notes, fmt::format("more than {} MIME parts; the rest are ignored", limits::max_parts));
        }
        return;
      }
      header_block phb;
      (void)read_header_block(part, block_mode::part, phb);  // never fails in part mode
      walk(phb, part, child_default, depth + 1, st);
    }
    return;
  }

  if ((ct.type == "message" && (ct.subtype == "rfc822" || ct.subtype == "global")) ||
      (ct.type == "text" && ct.subtype == "rfc822-headers")) {
    add_copy(st, decode_body(body, encoding));
    return;
  }
  // A saved .eml attached as application/octet-stream or similar: a copy if it reads as one.
  std::string name = ct.name;
  if (name.empty()) {
    if (const field* f = hb.find("content-disposition"); f != nullptr) name = parse_mime_header(f->value, false).name;
  }
  if (depth > 0 && iends_with(trim(name), ".eml")) {
    std::string bytes = decode_body(body, encoding);
    if (looks_like_mail(bytes)) {
      add_copy(st, std::move(bytes));
    } else {
      add_note(st.notes, fmt::format("attachment '{}' is not a mail; skipped", shown(name, 60)));
    }
  }
}

// ---- Received ---------------------------------------------------------------------------

struct rtoken {
  bool comment = false;
  std::string_view text;  // a comment without its outer parentheses
};

// The last ';' outside comments (RFC 5321 4.4: the date follows it), or npos.
std::size_t date_separator(std::string_view s) {
  std::size_t depth = 0;
  std::size_t at = npos;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\' && depth > 0) {
      ++i;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      if (depth > 0) --depth;
    } else if (c == ';' && depth == 0) {
      at = i;
    }
  }
  return at;
}

// Words and top-level comments; nested comments stay inside their parent's text. At most
// 512 tokens are returned.
std::vector<rtoken> received_tokens(std::string_view s, bool& unbalanced) {
  std::vector<rtoken> out;
  std::size_t i = 0;
  while (i < s.size() && out.size() < 512) {
    if (is_space(s[i])) {
      ++i;
      continue;
    }
    if (s[i] == '(') {
      std::size_t depth = 1;
      std::size_t j = i + 1;
      for (; j < s.size() && depth > 0; ++j) {
        if (s[j] == '\\') {
          ++j;
        } else if (s[j] == '(') {
          ++depth;
        } else if (s[j] == ')') {
          --depth;
        }
      }
      if (depth > 0) {
        unbalanced = true;
        out.push_back(rtoken{true, s.substr(i + 1)});
        return out;
      }
      out.push_back(rtoken{true, s.substr(i + 1, j - i - 2)});
      i = j;
      continue;
    }
    std::size_t j = i;
    while (j < s.size() && !is_space(s[j]) && s[j] != '(') ++j;
    out.push_back(rtoken{false, s.substr(i, j - i)});
    i = j;
  }
  return out;
}

bool valid_ip(std::string_view text) {
  // inet_pton stops at a NUL: "198.51.100.7\0junk" must not pass as an address.
  if (text.empty() || text.size() > 64 || text.find('\0') != std::string_view::npos) return false;
  std::string z{text};
  std::array<unsigned char, 16> buf{};
  return ::inet_pton(AF_INET, z.c_str(), buf.data()) == 1 || ::inet_pton(AF_INET6, z.c_str(), buf.data()) == 1;
}

// "[198.51.100.7]", "[IPv6:2001:db8::7]" or "[2001:db8::7]" (a ":port" after it ignored):
// the address, or "" when it is none.
std::string address_literal(std::string_view word) {
  if (word.empty() || word.front() != '[') return {};
  auto close = word.find(']');
  if (close == npos) return {};
  auto a = word.substr(1, close - 1);
  if (istarts_with(a, "IPv6:")) a.remove_prefix(5);
  return valid_ip(a) ? std::string{a} : std::string{};
}

// The words of a comment, nested comments left out.
std::vector<std::string_view> comment_words(std::string_view c) {
  std::vector<std::string_view> words;
  std::size_t depth = 0;
  std::size_t i = 0;
  while (i < c.size() && words.size() < 64) {
    char ch = c[i];
    if (depth > 0) {
      if (ch == '\\') {
        ++i;
      } else if (ch == '(') {
        ++depth;
      } else if (ch == ')') {
        --depth;
      }
      ++i;
      continue;
    }
    if (ch == '(') {
      depth = 1;
      ++i;
      continue;
    }
    if (is_space(ch)) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < c.size() && !is_space(c[j]) && c[j] != '(') ++j;
    words.push_back(c.substr(i, j - i));
    i = j;
  }
  return words;
}

// The client comment of a from clause: Postfix and Sendmail "(name [addr])" with name
// "unknown" when the address has no verified reverse name; Exim "([addr] helo=x)";
// Exchange "(addr)". Returns whether it held an address.
bool parse_client_comment(std::string_view c, received_hop& h) {
  auto words = comment_words(c);
  for (std::size_t k = 0; k < words.size(); ++k) {
    std::string ip = address_literal(words[k]);
    if (ip.empty()) continue;
    h.from_ip = ip;
    if (k > 0 && words[k - 1].find_first_of("=[]") == npos) h.from_name = std::string{words[k - 1]};
    return true;
  }
  if (words.size() == 1 && valid_ip(words[0])) {
    h.from_ip = std::string{words[0]};
    return true;
  }
  if (words.size() == 2 && valid_ip(words[1]) && words[0].find('=') == npos) {
    h.from_name = std::string{words[0]};
    h.from_ip = std::string{words[1]};
    return true;
  }
  return false;
}

enum class clause { none, from, by, via, with, id, for_ };

clause keyword(std::string_view w) {
  if (iequals(w, "from")) return clause::from;
  if (iequals(w, "by")) return clause::by;
  if (iequals(w, "via")) return clause::via;
  if (iequals(w, "with")) return clause::with;
  if (iequals(w, "id")) return clause::id;
  if (iequals(w, "for")) return clause::for_;
  return clause::none;
}

std::string humanized(long long seconds) {
  if (seconds >= 2 * 86400) return fmt::format("{} days", seconds / 86400);
  if (seconds >= 2 * 3600) return fmt::format("{} hours", seconds / 3600);
  return fmt::format("{} minutes", seconds / 60);
}

// The address in an address header: the first <...> outside quoted strings and comments,
// else the first word with an '@'. "" when there is none (and for the null path "<>").
std::string address_of(std::string_view v) {
  bool quoted = false;
  std::size_t depth = 0;
  std::size_t lt = npos;
  for (std::size_t i = 0; i < v.size(); ++i) {
    char c = v[i];
    if (c == '\\' && (quoted || depth > 0)) {
      ++i;
    } else if (depth > 0) {
      if (c == '(') ++depth;
      if (c == ')') --depth;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (quoted) {
      continue;
    } else if (c == '(') {
      depth = 1;
    } else if (c == '<') {
      lt = i;
    } else if (c == '>' && lt != npos) {
      return std::string{trim(v.substr(lt + 1, i - lt - 1))};
    }
  }
  std::string plain = strip_comments(v);
  std::string_view p = plain;
  std::size_t i = 0;
  while (i < p.size()) {
    while (i < p.size() && (is_space(p[i]) || p[i] == ',')) ++i;
    std::size_t j = i;
    while (j < p.size() && !is_space(p[j]) && p[j] != ',') ++j;
    auto w = p.substr(i, j - i);
    if (w.find('@') != npos) return std::string{w};
    i = j;
  }
  return {};
}

// The id in a Message-ID: what is between the first '<' and the '>' after it, else the
// first word.
std::string message_id_of(std::string_view v) {
  auto lt = v.find('<');
  if (lt != npos) {
    auto gt = v.find('>', lt);
    if (gt != npos) return std::string{trim(v.substr(lt + 1, gt - lt - 1))};
  }
  std::string plain = strip_comments(v);
  auto t = trim(plain);
  auto end = std::find_if(t.begin(), t.end(), is_space);
  return std::string{t.substr(0, static_cast<std::size_t>(end - t.begin()))};
}

// One RFC 2047 encoded-word "=?charset?B|Q?text?=" starting at v[p]: decoded to UTF-8,
// control characters turned into spaces; end gets the position after "?=".
bool decode_word(std::string_view v, std::size_t p, std::string& decoded, std::size_t& end) {
  std::size_t i = p + 2;
  std::size_t cs_start = i;
  while (i < v.size() && v[i] != '?' && !is_space(v[i]) && i - cs_start <= 64) ++i;
  if (i >= v.size() || v[i] != '?' || i == cs_start) return false;
  auto cs = charset_of(v.substr(cs_start, i - cs_start));
  if (cs == charset::unknown) return false;
  if (i + 2 >= v.size() || v[i + 2] != '?') return false;
  char enc = to_lower(v[i + 1]);
  if (enc != 'b' && enc != 'q') return false;
  std::size_t text_start = i + 3;
  std::size_t j = text_start;
  while (j < v.size() && v[j] != '?' && !is_space(v[j])) ++j;
  if (j + 1 >= v.size() || v[j] != '?' || v[j + 1] != '=') return false;
  auto text = v.substr(text_start, j - text_start);
  auto bytes = enc == 'b' ? decode_base64_word(text) : decode_q_word(text);
  if (!bytes) return false;
  // Control bytes are ASCII in every charset above: blank them before converting.
  for (auto& c : *bytes) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
  }
  decoded = to_utf8(*bytes, cs);
  end = j + 2;
  return true;
}

}  // namespace

// ---- public -----------------------------------------------------------------------------

std::string decode_rfc2047(std::string_view value) {
  std::string out;
  std::size_t copied = 0;  // value[copied..] is not in out yet
  std::size_t i = 0;
  bool after_word = false;  // out ends with a decoded encoded-word
  while (true) {
    auto p = value.find("=?", i);
    if (p == npos) break;
    std::string decoded;
    std::size_t end = 0;
    if (!decode_word(value, p, decoded, end)) {
      i = p + 2;
      continue;
    }
    // RFC 2047 6.2: white space between two encoded-words is not displayed.
    auto between = value.substr(copied, p - copied);
    if (!(after_word && all_space(between))) {
      out.append(between);
    }
    out += decoded;
    copied = i = end;
    after_word = true;
  }
  out.append(value.substr(copied));
  return valid_utf8(out);
}

bool is_our_host(std::string_view host, const std::vector<std::string>& our_hosts) {
  auto h = trim(host);
  if (!h.empty() && h.back() == '.') h.remove_suffix(1);
  if (h.empty()) return false;
  for (const auto& entry : our_hosts) {
    auto e = trim(entry);
    if (!e.empty() && e.back() == '.') e.remove_suffix(1);
    if (e.empty()) continue;
    if (e.front() == '.') {
      if (h.size() > e.size() && iends_with(h, e)) return true;
    } else if (iequals(h, e)) {
      return true;
    }
  }
  return false;
}

received_hop parse_received(std::string_view value, const std::vector<std::string>& our_hosts, std::string& problem) {
  received_hop h;
  h.raw = std::string{value};
  std::vector<std::string> problems;
  auto semi = date_separator(value);
  std::string_view clauses = semi == npos ? value : value.substr(0, semi);
  if (semi == npos) {
    problems.emplace_back("no date after ';'");
  } else {
    auto date = trim(value.substr(semi + 1));
    h.at = parse_rfc5322_date(date);
    if (!h.at) problems.push_back(fmt::format("bad date '{}'", shown(date, 60)));
  }
  bool unbalanced = false;
  auto tokens = received_tokens(clauses, unbalanced);
  if (unbalanced) problems.emplace_back("unbalanced parentheses");

  clause pending = clause::none;  // a keyword waiting for its value
  clause current = clause::none;  // the clause comments belong to
  bool client_found = false;
  for (const auto& t : tokens) {
    if (t.comment) {
      pending = clause::none;  // a clause's value comes before its comments
      if (current != clause::from) continue;
      auto c = trim(t.text);
      if (istarts_with(c, "Authenticated sender:")) {
        if (h.auth_user.empty()) h.auth_user = std::string{trim(c.substr(21))};
      } else if (!client_found) {
        client_found = parse_client_comment(c, h);
      }
      continue;
    }
    if (pending != clause::none) {
      std::string w{t.text};
      switch (pending) {
        case clause::from:
          if (h.from_helo.empty()) h.from_helo = w;
          break;
        case clause::by:
          if (h.by_host.empty()) h.by_host = w;
          break;
        case clause::with:
          if (h.with.empty()) h.with = w;
          break;
        case clause::id:
          if (h.id.empty()) h.id = w;
          break;
        case clause::for_:
          if (h.for_addr.empty()) {
            auto a = std::string_view{w};
            if (a.size() >= 2 && a.front() == '<' && a.back() == '>') a = a.substr(1, a.size() - 2);
            h.for_addr = std::string{a};
          }
          break;
        case clause::via:
        case clause::none: break;
      }
      pending = clause::none;
      continue;
    }
    if (auto k = keyword(t.text); k != clause::none) pending = current = k;
  }
  // Exim without a reverse name: "from [198.51.100.7] (helo=client)".
  if (h.from_ip.empty()) h.from_ip = address_literal(h.from_helo);
  if (h.by_host.empty()) problems.emplace_back("no 'by' host");

  for (auto* s : {&h.from_helo, &h.from_name, &h.by_host, &h.with, &h.id, &h.for_addr, &h.auth_user}) {
    *s = valid_utf8(*s);
  }
  h.ours = is_our_host(h.by_host, our_hosts);
  problem.clear();
  for (const auto& p : problems) {
    if (!problem.empty()) problem += "; ";
    problem += p;
  }
  return h;
}

std::optional<sys_time> parse_rfc5322_date(std::string_view text) {
  using namespace std::chrono;
  if (text.size() > 256) return std::nullopt;
  // Comments become white space, and so does ',' (after the day name).
  std::string s;
  std::size_t depth = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (depth > 0) {
      if (c == '\\') {
        ++i;
      } else if (c == '(') {
        ++depth;
      } else if (c == ')') {
        --depth;
      }
      continue;
    }
    if (c == '(') {
      depth = 1;
      s += ' ';
    } else if (c == ')') {
      return std::nullopt;
    } else {
      s += c == ',' ? ' ' : c;
    }
  }
  if (depth > 0) return std::nullopt;
  std::vector<std::string_view> t;
  {
    std::string_view sv = s;
    std::size_t i = 0;
    while (i < sv.size()) {
      if (is_space(sv[i])) {
        ++i;
        continue;
      }
      std::size_t j = i;
      while (j < sv.size() && !is_space(sv[j])) ++j;
      if (t.size() >= 8) return std::nullopt;
      t.push_back(sv.substr(i, j - i));
      i = j;
    }
  }
  auto number = [](std::string_view w, std::size_t min_len, std::size_t max_len, int& out) {
    if (w.size() < min_len || w.size() > max_len || !std::all_of(w.begin(), w.end(), is_digit)) return false;
    out = 0;
    for (char c : w) out = out * 10 + (c - '0');
    return true;
  };
  static constexpr std::array<std::string_view, 7> days{"monday", "tuesday",  "wednesday", "thursday",
                                                        "friday", "saturday", "sunday"};
  static constexpr std::array<std::string_view, 12> months{"january",   "february", "march",    "april",
                                                           "may",       "june",     "july",     "august",
                                                           "september", "october",  "november", "december"};
  // "Fri" or "Friday"; "Nov" or "November".
  auto named = [](std::string_view w, const auto& names) -> int {
    if (w.size() < 3) return -1;
    for (std::size_t k = 0; k < names.size(); ++k) {
      if (iequals(w, names[k]) || (w.size() == 3 && istarts_with(names[k], w))) return static_cast<int>(k);
    }
    return -1;
  };

  std::size_t k = 0;
  if (k < t.size() && !t[k].empty() && is_alpha(t[k].front())) {
    if (named(t[k], days) < 0) return std::nullopt;
    ++k;
  }
  if (t.size() - k != 5) return std::nullopt;
  int mday = 0, yr = 0;
  if (!number(t[k], 1, 2, mday)) return std::nullopt;
  int mon = named(t[k + 1], months);
  if (mon < 0) return std::nullopt;
  auto y = t[k + 2];
  if (!number(y, 2, 4, yr)) return std::nullopt;
  if (y.size() == 2) {
    yr += yr < 50 ? 2000 : 1900;
  } else if (y.size() == 3) {
    yr += 1900;
  }
  if (yr < 1900 || yr > 2200) return std::nullopt;

  int hh = 0, mm = 0, ss = 0;
  {
    auto tm = t[k + 3];
    auto c1 = tm.find(':');
    if (c1 == npos) return std::nullopt;
    auto c2 = tm.find(':', c1 + 1);
    if (!number(tm.substr(0, c1), 1, 2, hh)) return std::nullopt;
    if (!number(tm.substr(c1 + 1, c2 == npos ? npos : c2 - c1 - 1), 2, 2, mm)) return std::nullopt;
    if (c2 != npos && !number(tm.substr(c2 + 1), 2, 2, ss)) return std::nullopt;
    if (hh > 23 || mm > 59 || ss > 60) return std::nullopt;
  }

  int offset = 0;  // minutes east of UTC
  {
    auto z = t[k + 4];
    if (z.size() == 5 && (z[0] == '+' || z[0] == '-')) {
      int zh = 0, zm = 0;
      if (!number(z.substr(1, 2), 2, 2, zh) || !number(z.substr(3, 2), 2, 2, zm)) return std::nullopt;
      if (zh > 23 || zm > 59) return std::nullopt;
      offset = (zh * 60 + zm) * (z[0] == '-' ? -1 : 1);
    } else if (!z.empty() && z.size() <= 5 && std::all_of(z.begin(), z.end(), is_alpha)) {
      // RFC 5322 4.3: UT, GMT and the US zones; military and other alphabetic zones are -0000.
      static constexpr std::array<std::pair<std::string_view, int>, 8> us{
          {{"EST", -5}, {"EDT", -4}, {"CST", -6}, {"CDT", -5}, {"MST", -7}, {"MDT", -6}, {"PST", -8}, {"PDT", -7}}};
      for (const auto& [name, zone_hours] : us) {
        if (iequals(z, name)) offset = zone_hours * 60;
      }
    } else {
      return std::nullopt;
    }
  }

  year_month_day ymd{std::chrono::year{yr}, std::chrono::month{static_cast<unsigned>(mon + 1)},
                     std::chrono::day{static_cast<unsigned>(mday)}};
  if (!ymd.ok()) return std::nullopt;
  sys_seconds at = sys_days{ymd} + hours{hh} + minutes{mm} + seconds{ss} - minutes{offset};
  return sys_time{at};
}

std::vector<std::string> extract_messages(std::string_view raw, std::string& error, std::vector<std::string>& notes) {
  error.clear();
  header_block hb;
  if (auto e = read_header_block(raw, block_mode::message, hb); !e.empty()) {
    error = std::move(e);
    return {};
  }
  extract_state st{{}, notes};
  walk(hb, raw, "text/plain", 0, st);
  if (st.copies.empty()) return {std::string{raw}};
  return std::move(st.copies);
}

std::vector<std::string> extract_messages(std::string_view raw, std::string& error) {
  std::vector<std::string> notes;
  return extract_messages(raw, error, notes);
}

parsed_message parse_message(std::string_view raw, const std::vector<std::string>& our_hosts, std::string& error) {
  error.clear();
  header_block hb;
  if (auto e = read_header_block(raw, block_mode::message, hb); !e.empty()) {
    error = std::move(e);
    return {};
  }
  parsed_message m;
  auto& notes = m.notes;
  for (auto& n : hb.notes) add_note(notes, std::move(n));
  m.headers = std::string{raw.substr(hb.begin, std::min(hb.end - hb.begin, limits::max_header_bytes))};

  // The first of each single-instance field (RFC 5322 3.6 allows one); repeats are noted.
  struct single {
    std::string_view lname, shown_name;
    const field* first = nullptr;
    std::size_t count = 0;
  };
  std::array<single, 7> singles{{{"message-id", "Message-ID"},
                                 {"date", "Date"},
                                 {"from", "From"},
                                 {"to", "To"},
                                 {"cc", "Cc"},
                                 {"subject", "Subject"},
                                 {"return-path", "Return-Path"}}};
  std::size_t received_count = 0;
  for (const auto& f : hb.fields) {
    if (f.name == "received") {
      ++received_count;
      if (m.received.size() >= limits::max_received) continue;
      std::string problem;
      auto hop = parse_received(f.value, our_hosts, problem);
      if (!problem.empty()) {
        add_note(notes, fmt::format("malformed Received header {}: {}: '{}'", m.received.size() + 1, problem,
                                    shown(f.value, 60)));
      }
      m.received.push_back(std::move(hop));
      continue;
    }
    for (auto& s : singles) {
      if (f.name != s.lname) continue;
      if (s.count++ == 0) s.first = &f;
    }
  }
  if (received_count > limits::max_received) {
    add_note(notes,
             fmt::format("{} Received headers; only the first {} were read", received_count, limits::max_received));
  }
  for (const auto& s : singles) {
    if (s.count > 1 && s.lname != "return-path") {
      add_note(notes, fmt::format("{} {} headers; the first is used", s.count, s.shown_name));
    }
  }
  auto value_of = [&](std::size_t k) -> const std::string* {
    return singles.at(k).first == nullptr ? nullptr : &singles.at(k).first->value;
  };
  if (const auto* v = value_of(0); v != nullptr) {
    m.message_id = valid_utf8(message_id_of(*v));
    if (m.message_id.empty()) add_note(notes, "empty Message-ID");
  } else {
    add_note(notes, "no Message-ID");
  }
  if (const auto* v = value_of(1); v != nullptr) {
    m.date_text = valid_utf8(*v);
    m.date = parse_rfc5322_date(*v);
    if (!m.date) add_note(notes, fmt::format("Date is not a valid RFC 5322 date: '{}'", shown(*v, 60)));
  } else {
    add_note(notes, "no Date header");
  }
  if (const auto* v = value_of(2); v != nullptr) {
    m.from = decode_rfc2047(*v);
    m.from_addr = valid_utf8(address_of(*v));
  } else {
    add_note(notes, "no From header");
  }
  if (const auto* v = value_of(3); v != nullptr) m.to = decode_rfc2047(*v);
  if (const auto* v = value_of(4); v != nullptr) m.cc = decode_rfc2047(*v);
  if (const auto* v = value_of(5); v != nullptr) m.subject = decode_rfc2047(*v);
  if (const auto* v = value_of(6); v != nullptr) m.envelope_from = valid_utf8(address_of(*v));

  // The submission hop; the rule is in eml.hpp (parse_message).
  const auto& hops = m.received;
  auto first = std::find_if(hops.begin(), hops.end(), [](const received_hop& h) { return h.ours; });
  if (first == hops.end()) {
    add_note(notes, "no Received header by our hosts");
  } else {
    auto f = static_cast<std::size_t>(first - hops.begin());
    auto s = f;
    while (s + 1 < hops.size() && hops[s + 1].ours) ++s;
    bool forged = false;
    if (f > 0) {
      const auto& above = hops[f - 1];
      if (above.from_name.empty()) {
        add_note(notes,
                 fmt::format("hop {} (by {}) does not name the host it received the message from; hop {} (by {}) "
                             "could not be confirmed as ours",
                             f, shown(above.by_host, 60), f + 1, shown(hops[f].by_host, 60)));
      } else if (!is_our_host(above.from_name, our_hosts)) {
        forged = true;
        add_note(notes, fmt::format("hop {} (by {}) received the message from {} [{}], which is not one of our hosts",
                                    f, shown(above.by_host, 60), shown(above.from_name, 60), shown(above.from_ip, 60)));
      }
    }
    for (std::size_t k = forged ? f : s + 1; k < hops.size(); ++k) {
      if (!hops[k].ours) continue;
      add_note(notes, fmt::format("hop {} claims to be ours but is below a foreign hop (forged?): by {}", k + 1,
                                  shown(hops[k].by_host, 60)));
    }
    if (!forged) {
      const auto& h = hops[s];
      m.has_our_hop = true;
      m.our_hop_index = s;
      m.queue_id = h.id;
      m.sasl_user = h.auth_user;
      m.client_ip = h.from_ip;
      m.client_helo = h.from_helo;
      m.received_at = h.at;
    }
  }
  if (m.date && m.received_at) {
    auto diff = std::chrono::duration_cast<std::chrono::seconds>(*m.received_at - *m.date).count();
    if (diff > 86400) {
      add_note(notes, fmt::format("Date is {} before our Received", humanized(diff)));
    } else if (diff < -900) {
      add_note(notes, fmt::format("Date is {} after our Received (clock skew or forged?)", humanized(-diff)));
    }
  }
  return m;
}

}  // namespace lupine::abusectl
