// policyd's configuration: the struct, its key table (the single source for parsing,
// --print-config and docs/config.md's test) and cross-key validation.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "policyd/dnsbl.hpp"
#include "policyd/greylist.hpp"
#include "policyd/limits.hpp"
#include "policyd/net.hpp"
#include "policyd/protocol.hpp"

namespace lupine::policyd {

struct listen_endpoint {
  enum class kind { inet, unix_socket } type = kind::inet;
  std::string host;  // inet: address literal or "*" / "::" for any
  unsigned short port = 0;
  std::string path;  // unix
  std::string text;  // as configured
};

// Parses "inet:HOST:PORT", "inet:[v6]:PORT" or "unix:PATH". Returns an error text or "".
std::string parse_listen(std::string_view text, listen_endpoint& out);

// count events per window (count 0: off).
struct flood_rate {
  std::uint64_t count = 0;
  sys_time::duration window{};
};

struct policyd_config {
  std::string name;  // this instance's name in logs and the event log; default: hostname
  std::vector<listen_endpoint> listen;
  std::string database;

  unsigned db_threads = 4;
  unsigned db_max_inflight = 512;
  milliseconds db_statement_timeout{2000};
  bool db_migrate = true;
  std::string db_password_file;
  std::string run_user;   // server.user
  std::string run_group;  // server.group

  unsigned max_connections = 1000;
  milliseconds idle_timeout{std::chrono::seconds{330}};
  milliseconds request_timeout{std::chrono::seconds{10}};
  milliseconds shutdown_grace{std::chrono::seconds{10}};
  unsigned unix_socket_mode = 0660;

  protocol_limits limits;
  milliseconds request_budget{std::chrono::seconds{5}};

  bool greylist_enable = true;
  greylist_params greylist;
  unsigned greylist_ipv4_prefix = 24;
  unsigned greylist_ipv6_prefix = 64;
  unsigned greylist_awl_clients = 5;
  milliseconds greylist_awl_max_age{std::chrono::hours{24 * 35}};
  milliseconds greylist_awl_count_interval{std::chrono::hours{1}};
  std::string greylist_action = "DEFER_IF_PERMIT";
  std::string greylist_text = "Greylisted, retry in %s seconds";
  bool greylist_prepend = true;
  std::string greylist_header = "X-Greylist";
  std::string greylist_on_db_error = "dunno";
  milliseconds greylist_write_behind{200};
  unsigned greylist_max_pending = 200000;
  unsigned greylist_cache_entries = 100000;

  std::vector<std::string> allowlist_client_files;
  std::vector<std::string> allowlist_recipient_files;
  std::vector<std::string> allowlist_sender_files;
  bool allowlist_database = true;

  bool event_log_enable = true;
  milliseconds event_log_flush_interval{1000};
  unsigned event_log_flush_rows = 1000;
  unsigned event_log_max_buffer_rows = 200000;
  std::string event_log_spill_dir = "/var/lib/lupine/spill";
  unsigned event_log_spill_max_mb = 1024;
  milliseconds event_log_spill_after{10000};
  milliseconds event_log_retention{std::chrono::hours{24 * 180}};

  std::vector<std::string> dns_servers;
  milliseconds dns_timeout{1000};
  unsigned dns_tries = 2;
  unsigned dns_cache_size = 100000;
  milliseconds dns_ttl_min{std::chrono::seconds{60}};
  milliseconds dns_ttl_max{std::chrono::hours{24}};
  milliseconds dns_negative_ttl_max{std::chrono::hours{1}};
  milliseconds dns_budget{2000};
  unsigned dns_breaker_failures = 5;
  milliseconds dns_breaker_cooldown{std::chrono::seconds{60}};
  milliseconds dns_error_log_interval{std::chrono::minutes{10}};

  std::vector<dnsbl_list> dnsbl_lists;
  int dnsbl_reject_score = 3;
  int dnsbl_trust_score = -1;
  bool dnsbl_selective_greylist = false;
  int dnsbl_greylist_score = 1;
  std::vector<std::pair<std::string, std::string>> dnsbl_reply_names;
  bool dnsbl_hide_names = false;
  milliseconds dnsbl_self_test_interval{std::chrono::hours{1}};

  bool rdns_enable = true;
  int rdns_no_ptr_score = 2;
  int rdns_unconfirmed_score = 1;
  int rdns_dynamic_score = 1;
  std::vector<std::string> rdns_dynamic_patterns;

  std::string accounts_restricted_text =
      "Account restricted to webmail: sending from mail programs is disabled, webmail still works";
  std::string accounts_terminated_text = "Account closed";
  milliseconds accounts_refresh_interval{std::chrono::minutes{5}};

  bool limits_enable = true;
  std::vector<send_limit> limits_defaults;  // every measure's default limits
  std::string limits_action = "defer";
  std::vector<send_limit> limits_auto_restrict;
  std::string limits_on_db_error = "dunno";

  bool flood_enable = true;
  flood_rate flood_client_rate;
  flood_rate flood_subnet_rate;
  unsigned flood_client_sessions = 20;
  unsigned flood_subnet_sessions = 100;
  milliseconds flood_session_idle{std::chrono::seconds{60}};
  std::vector<cidr> flood_exempt;
  unsigned flood_max_tracked = 200000;

  milliseconds maintenance_interval{std::chrono::minutes{10}};
  milliseconds clock_offset{0};  // testing.clock_offset
  unsigned maintenance_batch_rows = 10000;
};

const std::vector<option_spec<policyd_config>>& policyd_options();

// Cross-key checks (after every key parsed). Returns problems, one per line, or "".
std::string validate(const policyd_config& cfg);

}  // namespace lupine::policyd
