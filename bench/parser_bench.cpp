// parser_bench: requests per second one core parses with policyd's protocol parser
// (policyd/protocol.hpp, the code the server runs on every request). It feeds one realistic
// Postfix 3.7 RCPT request (the full attribute set, ~640 bytes) again and again into
// parse_request() with one reused policy_request, as a connection does, for a bounded time.
// Prints requests/s, MB/s and ns per request; exits 1 if the request does not parse.
//
//   parser_bench [--seconds 2] [--split]
//     --split   the request arrives in two reads: the first half is parsed (need_more) before
//               the whole, as when a request straddles two TCP segments
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "policyd/protocol.hpp"

using lupine::policyd::parse_request;
using lupine::policyd::parse_result;
using lupine::policyd::policy_request;
using lupine::policyd::protocol_limits;
using clk = std::chrono::steady_clock;

namespace {

// What Postfix 3.7's smtpd sends for RCPT TO from a TLS client (SMTPD_POLICY_README's list).
constexpr std::string_view request =
    "request=smtpd_access_policy\n"
    "protocol_state=RCPT\n"
    "protocol_name=ESMTP\n"
    "client_address=198.51.100.23\n"
    "client_name=mail23.example.net\n"
    "reverse_client_name=mail23.example.net\n"
    "client_port=51234\n"
    "helo_name=mail23.example.net\n"
    "sender=news+bounce-4711@example.net\n"
    "recipient=alice.smith@example.org\n"
    "recipient_count=0\n"
    "queue_id=\n"
    "instance=7f3a.6563d1e2.b4c1e.0\n"
    "size=48213\n"
    "etrn_domain=\n"
    "stress=\n"
    "sasl_method=\n"
    "sasl_username=\n"
    "sasl_sender=\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=TLSv1.3\n"
    "encryption_cipher=TLS_AES_256_GCM_SHA384\n"
    "encryption_keysize=256\n"
    "policy_context=\n"
    "server_address=203.0.113.25\n"
    "server_port=25\n"
    "\n";

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2;
  bool split = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      seconds = std::stod(argv[++i]);
    } else if (std::strcmp(argv[i], "--split") == 0) {
      split = true;
    } else {
      std::fprintf(stderr, "usage: parser_bench [--seconds S] [--split]\n");
      return 2;
    }
  }
  protocol_limits limits;
  policy_request req;
  std::string buf{request};  // a connection's read buffer holding exactly one request
  std::string_view half{buf.data(), buf.size() / 2};
  auto r = parse_request(buf, limits, req);
  if (r.state != parse_result::status::complete || r.consumed != buf.size() || req.get("recipient").empty()) {
    std::fprintf(stderr, "parser_bench: the sample request did not parse\n");
    return 1;
  }
  const auto attributes = req.attributes().size();
  // Warm up (caches, the allocator's free lists), then measure in batches so the clock is
  // read rarely.
  for (int i = 0; i < 10000; ++i) r = parse_request(buf, limits, req);
  long long done = 0;
  std::size_t check = 0;
  auto t0 = clk::now();
  auto until = t0 + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(seconds));
  clk::time_point now;
  do {
    for (int i = 0; i < 4096; ++i) {
      if (split) check += parse_request(half, limits, req).consumed;
      auto pr = parse_request(buf, limits, req);
      check += pr.consumed + req.get("recipient").size();
    }
    done += 4096;
    now = clk::now();
  } while (now < until);
  double elapsed = std::chrono::duration<double>(now - t0).count();
  double rate = static_cast<double>(done) / elapsed;
  fmt::print("parser_bench: {} bytes, {} attributes per request{}\n", buf.size(), attributes,
             split ? ", each request in two reads (half parsed first)" : "");
  fmt::print("requests/s={:.0f} MB/s={:.1f} ns/request={:.0f} (one core, {:.2f} s, check={})\n", rate,
             rate * static_cast<double>(buf.size()) / 1e6, 1e9 / rate, elapsed, check % 10);
  return 0;
}
