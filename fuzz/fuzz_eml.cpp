// Fuzz target: abusectl's complaint parser (abusectl/eml.hpp), whose every byte a spammer
// writes: extract_messages() on the input, parse_message() on each copy found and on the input
// itself (with our host names as abusectl uses them), and, line by line, parse_received(),
// parse_rfc5322_date() and decode_rfc2047(). Checked contracts from eml.hpp: the limits hold
// (copies, notes, Received hops, header bytes), the submission hop index is in range and ours,
// every parsed field but headers and received[].raw is valid UTF-8 without NUL, notes are one
// line each, from_ip is an address, and dates fall within years 1900..2200.
#include <arpa/inet.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "abusectl/eml.hpp"
#include "fuzz_check.hpp"

namespace {

using lupine::abusectl::eml_limits;
using lupine::abusectl::parsed_message;
using lupine::abusectl::received_hop;
using lupine::abusectl::sys_time;
using lupine::fuzz::check;

const std::vector<std::string> our_hosts{"smtp.ourmail.example", "MX1.ourmail.example", ".out.ourmail.example"};

// RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF; and no NUL.
bool valid_utf8_no_nul(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1FU;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0FU;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07U;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      auto t = static_cast<unsigned char>(s[i + k]);
      if ((t & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (t & 0x3FU);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
      return false;
    }
    i += len;
  }
  return true;
}

void check_text(std::string_view field, std::string_view value) {
  check(valid_utf8_no_nul(value), "field is not valid UTF-8 without NUL",
        std::string{field} + "=" + std::string{value});
}

bool is_address(const std::string& ip) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, ip.c_str(), buf) == 1 || ::inet_pton(AF_INET6, ip.c_str(), buf) == 1;
}

void check_date(std::optional<sys_time> t, std::string_view what) {
  if (!t) return;
  using namespace std::chrono;
  // Years 1900..2200 in the zone written; a zone offset moves UTC by less than a day.
  auto lo = sys_days{year{1900} / January / 1} - days{1};
  auto hi = sys_days{year{2201} / January / 1} + days{1};
  check(*t >= lo && *t < hi, "date outside 1900..2200", what);
}

void check_hop(const received_hop& h, std::string_view from) {
  check_text("from_helo", h.from_helo);
  check_text("from_name", h.from_name);
  check_text("from_ip", h.from_ip);
  check_text("by_host", h.by_host);
  check_text("with", h.with);
  check_text("id", h.id);
  check_text("for_addr", h.for_addr);
  check_text("auth_user", h.auth_user);
  check(h.from_ip.empty() || is_address(h.from_ip), "from_ip is not an address", h.from_ip);
  check(h.ours == lupine::abusectl::is_our_host(h.by_host, our_hosts), "ours disagrees with is_our_host", h.by_host);
  check_date(h.at, from);
}

void check_message(const parsed_message& m, const std::string& error, std::string_view raw) {
  if (!error.empty()) {
    check(m.received.empty() && m.headers.empty() && m.notes.empty(), "parse_message: error with a result", error);
    check(error.find('\n') == std::string::npos, "parse_message: error not one line", error);
    return;
  }
  check(m.received.size() <= eml_limits::max_received, "more Received hops than max_received");
  check(m.headers.size() <= eml_limits::max_header_bytes, "header block past max_header_bytes");
  check(m.notes.size() <= eml_limits::max_notes + 1, "more notes than max_notes + 1");
  for (const auto& n : m.notes) {
    check_text("note", n);
    check(n.find('\n') == std::string::npos, "note is not one line", n);
  }
  for (auto [name, v] : {std::pair<std::string_view, const std::string*>{"message_id", &m.message_id},
                         {"date_text", &m.date_text},
                         {"from", &m.from},
                         {"to", &m.to},
                         {"cc", &m.cc},
                         {"subject", &m.subject},
                         {"from_addr", &m.from_addr},
                         {"envelope_from", &m.envelope_from},
                         {"queue_id", &m.queue_id},
                         {"sasl_user", &m.sasl_user},
                         {"client_ip", &m.client_ip},
                         {"client_helo", &m.client_helo}}) {
    check_text(name, *v);
  }
  for (const auto& h : m.received) check_hop(h, raw);
  if (m.has_our_hop) {
    check(m.our_hop_index < m.received.size(), "our_hop_index out of range");
    const auto& h = m.received[m.our_hop_index];
    check(h.ours, "the submission hop is not ours", h.by_host);
    check(m.queue_id == h.id && m.client_ip == h.from_ip, "submission fields differ from the hop's");
  } else {
    check(m.queue_id.empty() && m.client_ip.empty() && !m.received_at, "submission fields without a submission hop");
  }
  check_date(m.date, m.date_text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};

  std::string error;
  std::vector<std::string> notes;
  auto copies = lupine::abusectl::extract_messages(in, error, notes);
  if (!error.empty()) check(copies.empty(), "extract_messages: error with copies", error);
  check(copies.size() <= eml_limits::max_copies, "more copies than max_copies");
  check(notes.size() <= eml_limits::max_notes + 1, "extract_messages: more notes than max_notes + 1");
  for (const auto& n : notes) check(n.find('\n') == std::string::npos, "extract_messages: note not one line", n);
  for (const auto& copy : copies) {
    std::string perr;
    auto m = lupine::abusectl::parse_message(copy, our_hosts, perr);
    check_message(m, perr, copy);
  }
  {
    std::string perr;
    auto m = lupine::abusectl::parse_message(in, our_hosts, perr);
    check_message(m, perr, in);
  }

  // Each line as a header value on its own (unfolded values are single lines too).
  std::size_t lines = 0;
  while (!in.empty() && lines++ < 200) {
    auto nl = in.find('\n');
    auto line = in.substr(0, nl);
    check_date(lupine::abusectl::parse_rfc5322_date(line), line);
    std::string problem;
    auto hop = lupine::abusectl::parse_received(line, our_hosts, problem);
    check_hop(hop, line);
    check_text("decode_rfc2047", lupine::abusectl::decode_rfc2047(line));
    if (nl == std::string_view::npos) break;
    in.remove_prefix(nl + 1);
  }
  return 0;
}
