// Asynchronous DNS on policyd's event loop: c-ares driven by Asio, with a TTL cache and
// shared in-flight lookups. No thread per lookup and no blocking call: c-ares tells us
// which sockets to watch (ARES_OPT_SOCK_STATE_CB), Asio waits on them and on one timer,
// and ares_process_fd() runs the callbacks on the loop thread. Loop thread only (c-ares
// 1.18 is not thread-safe).
//
// start() begins a lookup (or joins one in flight, or finds it in the cache) and returns
// at once, so a caller starts every lookup of a request first and then awaits them:
// they run concurrently. wait() returns the answer or, when the deadline passes first,
// status timed_out (the lookup goes on and still fills the cache).
// Answers are cached for their TTL clamped to [ttl_min, ttl_max]; negative answers
// (NXDOMAIN, no data) for the SOA minimum clamped to [ttl_min, negative_ttl_max]; failures
// (timeout, SERVFAIL, refused) are not cached. The cache holds at most cache_size entries.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

namespace lupine::policyd {

enum class dns_type { a, aaaa, txt, ptr };
std::string_view to_string(dns_type t);

enum class dns_status {
  ok,         // records present
  nxdomain,   // the name does not exist
  nodata,     // the name exists, no record of this type
  servfail,   // the server failed (or refused)
  timed_out,  // no answer in time
  error,      // anything else (malformed answer, out of memory, shutting down)
};
std::string_view to_string(dns_status s);

struct dns_answer {
  dns_status status = dns_status::error;
  std::vector<std::string> records;  // addresses as text, TXT strings, PTR names
  std::chrono::seconds ttl{0};
  bool from_cache = false;
  // Which query this is the answer of (0 for a cache hit): requests that shared one lookup
  // see the same id, so a failure can be counted once per query, not once per request.
  std::uint64_t query_id = 0;
};

struct dns_options {
  std::vector<std::string> servers;         // "127.0.0.1:5353", "[::1]:53"; empty: /etc/resolv.conf
  std::chrono::milliseconds timeout{1000};  // per try
  unsigned tries = 2;
  std::size_t cache_size = 100000;
  std::chrono::seconds ttl_min{60};
  std::chrono::seconds ttl_max{std::chrono::hours{24}};
  std::chrono::seconds negative_ttl_max{std::chrono::hours{1}};
};

struct dns_stats {
  std::uint64_t queries_sent = 0;  // lookups handed to c-ares
  std::uint64_t cache_hits = 0;
  std::uint64_t shared = 0;  // lookups that joined one in flight
};

class dns_resolver {
 public:
  struct pending;  // one lookup in flight or done

  // Throws config_error when c-ares cannot start or a server is malformed.
  dns_resolver(boost::asio::any_io_executor ex, dns_options opts);
  ~dns_resolver();
  dns_resolver(const dns_resolver&) = delete;
  dns_resolver& operator=(const dns_resolver&) = delete;

  std::shared_ptr<pending> start(const std::string& name, dns_type type);
  boost::asio::awaitable<dns_answer> wait(std::shared_ptr<pending> p, std::chrono::steady_clock::time_point deadline);
  // start() then wait().
  boost::asio::awaitable<dns_answer> lookup(std::string name, dns_type type,
                                            std::chrono::steady_clock::time_point deadline);

  const dns_stats& stats() const { return stats_; }
  // Cancels every lookup (their waiters get status error). For shutdown.
  void cancel_all();

  // Exposed for the c-ares callbacks in dns.cpp.
  struct impl;

 private:
  std::unique_ptr<impl> impl_;
  dns_stats stats_;
};

// "2.0.0.192" for 192.0.2.2; 32 reversed nibbles for IPv6 (RFC 5782 / RFC 3596).
// Empty when text is not an IP address.
std::string reverse_name(std::string_view address);

}  // namespace lupine::policyd
