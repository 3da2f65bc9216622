// Abuse complaints as e-mail: finds the spam copies in a complaint (attached message/rfc822
// parts, or the message itself) and parses a copy's headers: the Received chain with our hops
// recognised by host name, Message-ID, Date, From, To, Cc, Subject, our queue id and the
// authenticated sender. Pure: no I/O, no database, no clock, no logging.
// SECURITY: every byte is hostile (spammers write these headers). Hand-written scanners, no
// regex; size, header count, field length, MIME parts and nesting are bounded (eml_limits);
// nothing throws on bad input. A message that is still a mail gets notes, not errors.
// Limits: RFC 2047 charsets UTF-8, US-ASCII, ISO-8859-1 and windows-1252 only; RFC 2231
// continuations are not joined; a copy pasted inline into the body is not recognised.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lupine::abusectl {

using sys_time = std::chrono::system_clock::time_point;

// The bounds applied to hostile input. Past a bound the rest is skipped and a note says so,
// except max_input_bytes, which is an error.
struct eml_limits {
  static constexpr std::size_t max_input_bytes = 64u << 20;   // whole complaint
  static constexpr std::size_t max_header_bytes = 1u << 20;   // one header block
  static constexpr std::size_t max_field_bytes = 100u << 10;  // one unfolded field (Postfix header_size_limit)
  static constexpr std::size_t max_fields = 1000;             // fields kept per header block
  static constexpr std::size_t max_received = 100;            // Received headers parsed (Postfix hopcount_limit is 50)
  static constexpr std::size_t max_depth = 10;                // nested multipart levels
  static constexpr std::size_t max_parts = 1000;              // MIME parts looked at in one complaint
  static constexpr std::size_t max_copies = 100;              // spam copies returned
  static constexpr std::size_t max_notes = 50;                // notes kept; one more says the rest were dropped
};

struct received_hop {
  std::string raw;             // unfolded header value (folding line breaks removed, tabs kept)
  std::string from_helo;       // "[192.168.1.2]"
  std::string from_name;       // reverse name in the parenthesis, "client.example.net" or "unknown"
  std::string from_ip;         // "198.51.100.7" (IPv6 without the IPv6: prefix); only a valid address
  std::string by_host;         // "smtp.ourmail.example"
  std::string with;            // "ESMTPSA"
  std::string id;              // "4XABCDEF12"
  std::string for_addr;        // "victim@example.com"
  std::string auth_user;       // "bob@example.org" from "(Authenticated sender: ...)"
  std::optional<sys_time> at;  // the date after ';'
  bool ours = false;           // by_host is one of our host names (see is_our_host)
};

struct parsed_message {
  std::string message_id;  // without <>
  std::string date_text;
  std::optional<sys_time> date;
  // Raw header values, unfolded, RFC 2047 encoded-words decoded, then made valid UTF-8
  // (invalid bytes and NUL become U+FFFD, control characters from encoded-words spaces).
  std::string from, to, cc, subject;
  std::string from_addr;               // the address in From ("bob@example.org"), "" if none
  std::string envelope_from;           // Return-Path without <> ("" for the null sender <>)
  std::vector<received_hop> received;  // as in the message: newest (top) first
  // The submission hop: where the mail entered our systems (see parse_message for the rule).
  bool has_our_hop = false;
  std::size_t our_hop_index = 0;  // index into received when has_our_hop
  std::string queue_id, sasl_user, client_ip, client_helo;
  std::optional<sys_time> received_at;
  // The raw header block as in the input (at most max_header_bytes). This and received[].raw
  // are bytes as written (8-bit, even NUL); every other field is valid UTF-8 without NUL.
  std::string headers;
  std::vector<std::string> notes;  // human-readable warnings, one line each
};

// The spam copies in a complaint: every message/rfc822 (also message/global,
// text/rfc822-headers, and a part named *.eml) part, found through multipart/* recursively
// (boundaries honoured, at most max_depth levels; in multipart/digest parts default to
// message/rfc822) and decoded by its Content-Transfer-Encoding (base64, quoted-printable;
// 7bit, 8bit, binary and unknown ones are taken as they are). A copy is not searched for
// further copies inside it: a forwarded spam that itself carries an attached message is
// one copy. Without any such part the result is the message itself. Returns the raw bytes
// of each copy, in order. On input that is not a mail at all (empty, too large, no header
// block, binary data, no mail header field) error is set to a one-line reason and the
// result is empty; otherwise error is cleared. notes (when given) gets MIME problems such
// as a missing closing boundary; what was there is still returned.
std::vector<std::string> extract_messages(std::string_view raw, std::string& error);
std::vector<std::string> extract_messages(std::string_view raw, std::string& error, std::vector<std::string>& notes);

// Parses one message's headers. Sets error (and returns an empty result) only for input
// that is not a mail, as extract_messages does; otherwise clears it and never fails:
// problems go to notes. our_hosts are host names, case-insensitive: "smtp.ourmail.example"
// matches exactly, ".ourmail.example" matches any name ending in it.
//
// Choosing the submission hop (hops are newest first; hop N in notes counts from 1 at the
// top). The top hops may be the recipient's own systems, so foreign hops above ours are
// normal. Let F be the first (top-most) hop that is ours. The run of consecutive ours hops
// starting at F ends at S; S is the submission hop (the mail entered our systems there),
// and any ours hop below S is noted ("hop 3 claims to be ours but is below a foreign hop
// (forged?): by HOST"). A forger can only add hops below the point where the mail really entered
// the chain, so F must also be connected to what is above it: when the hop just above F
// names the host it received the message from (from_name, the reverse name the receiving
// MTA looked up, never the client-chosen HELO) and that name is not ours, the whole run
// is taken as forged: every ours hop is noted, and there is no submission hop. When that
// hop names no host (another MTA's format), the run is used and a note says it could not
// be confirmed. F at the top (the copy was saved on our side) needs no check.
parsed_message parse_message(std::string_view raw, const std::vector<std::string>& our_hosts, std::string& error);

// RFC 5322 date-time ("Fri, 27 Nov 2026 18:04:05 +0000 (UTC)") -> UTC. Also accepts: no
// weekday, comments anywhere, a day name without the comma, seconds left out, full month
// names, 2-digit years (00-49 are 20xx, 50-99 are 19xx) and 3-digit ones (+1900), the
// obsolete zones UT, GMT, EST, EDT, CST, CDT, MST, MDT, PST, PDT, and other alphabetic
// zones (military letters, UTC, CET...) as -0000, as RFC 5322 section 4.3 says. nullopt
// when the zone is missing, a field is out of range (31 Nov, 24:00, +2500), the year is
// outside 1900..2200, or text other than comments follows the zone. The weekday is not
// checked against the date.
std::optional<sys_time> parse_rfc5322_date(std::string_view text);

// One Received header value (unfolded) as a hop; ours set from our_hosts. problem gets a
// short reason when the header is malformed ("no 'by' host; no date after ';'"), else "".
received_hop parse_received(std::string_view value, const std::vector<std::string>& our_hosts, std::string& problem);

// host (case-insensitive, a trailing dot ignored) equals a listed name, or ends with a
// listed entry that starts with '.'. Empty host: false.
bool is_our_host(std::string_view host, const std::vector<std::string>& our_hosts);

// RFC 2047 encoded-words in a header value decoded (B and Q; UTF-8, US-ASCII, ISO-8859-1,
// windows-1252), whitespace between adjacent encoded-words dropped; words in unknown
// charsets or malformed ones are kept as written. The result is valid UTF-8.
std::string decode_rfc2047(std::string_view value);

}  // namespace lupine::abusectl
