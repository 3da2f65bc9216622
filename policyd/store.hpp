// policyd's SQL: greylist triplets and the auto-allow-list, allow-list rows, event-log
// writes and maintenance. Every function here BLOCKS (libpqxx) and runs on a db_pool
// thread, never on the event loop; each is one transaction and throws pqxx errors, which
// db_pool::run turns into errc values. Times are passed in (no clock reads), so the
// database's clock never decides a greylist outcome and instances agree as long as their
// clocks do (NTP).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/db.hpp"
#include "core/text.hpp"
#include "policyd/greylist.hpp"
#include "policyd/limits.hpp"

namespace lupine::policyd {

struct greylist_key {
  std::string client_net;   // "192.0.2.0/24"
  std::string client_addr;  // "192.0.2.7"
  std::string sender;       // normalized
  std::string recipient;    // normalized
};

struct greylist_db_params {
  greylist_params triplet;
  unsigned awl_clients = 5;  // 0: no auto-allow-list
  std::chrono::milliseconds awl_max_age{std::chrono::hours{24 * 35}};
  std::chrono::milliseconds awl_count_interval{std::chrono::hours{1}};
};

struct greylist_answer {
  bool auto_allowed = false;  // the client is on the auto-allow-list: no triplet looked at
  int awl_passes = 0;
  greylist_step_result step{greylist_outcome::first_seen, {}};
};

// Looks the client up in the auto-allow-list, then runs greylist_step on the triplet's row
// (locked FOR UPDATE, so two instances seeing the same triplet at once agree) and stores
// the new state. A pass counts towards the client's auto-allow-list.
greylist_answer greylist_transact(db_session& s, const greylist_key& key, sys_time now, const greylist_db_params& p);

// Whether a row last seen at `last_seen` needs last_seen rewritten now: at most about
// hourly (a tenth of max_age when that is shorter), so that known senders and
// auto-allow-listed clients cost a read, not a write.
bool needs_touch(sys_time last_seen, sys_time now, std::chrono::milliseconds max_age);

// Whether a client with `passes` counted passes, last seen at last_seen, skips greylisting
// (the auto-allow-list): one rule for the locked path and greylist_engine.
bool awl_allows(const greylist_db_params& p, int passes, sys_time last_seen, sys_time now);

// What one batched read found for a key: its client's auto-allow-list row and its triplet.
struct greylist_lookup {
  std::optional<int> awl_passes;  // nullopt: the client has no auto-allow-list row
  sys_time awl_last_seen{};
  std::optional<greylist_entry> triplet;
  bool operator==(const greylist_lookup&) const = default;
};

// One statement, no transaction, no lock: both rows of every key, in the keys' order. One
// key uses the single-key statement; more use arrays and one index lookup per key.
std::vector<greylist_lookup> greylist_read(db_session& s, const std::vector<greylist_key>& keys);

// A triplet's state decided in memory (greylist_engine), written later. Merged with the
// row another instance may have written meanwhile: the earliest first_seen and passed_at,
// the latest last_seen, and attempts_delta added to attempts (an absent row is inserted
// with attempts_delta as its attempts).
struct triplet_write {
  greylist_key key;
  greylist_entry entry;
  int attempts_delta = 0;
};

// A client's auto-allow-list change: `passes` passes counted in memory (each at least
// awl_count_interval after the one before; the first of them counts only when the stored
// last_counted is that far behind, as greylist_transact counts), and last_seen. With no
// passes, only last_seen is refreshed (a row that does not exist is not created).
struct awl_write {
  std::string client_addr;
  sys_time seen{};
  int passes = 0;
  sys_time first_pass{}, last_pass{};
};

// Writes both lists in one transaction (triplets in key order, so instances flushing the
// same keys cannot deadlock). Keys must be distinct within each list.
void greylist_write_batch(db_session& s, std::vector<triplet_write> triplets, std::vector<awl_write> awl,
                          std::chrono::milliseconds awl_count_interval);

// (kind, value) rows of the allowlist table.
std::vector<std::pair<std::string, std::string>> load_allowlist_rows(db_session& s);

struct event_row {
  sys_time ts;
  std::string policyd, postfix_instance, queue_id, protocol_state, client_address, client_name, reverse_client_name,
      helo_name, sender, recipient, sasl_username, sasl_method, policy_context, verdict, action, reason, detail;
  long long recipient_count = 0;
  long long size = 0;
  double score = 0;
  long long elapsed_us = 0;
};

// COPY the rows into event_log in one transaction. Text is made valid UTF-8 and a client
// address that is not an IP address is stored as NULL, so one hostile request cannot fail
// a whole batch. With a spill segment's name (spill.hpp), the name is recorded in
// event_log_spill in the same transaction and false is returned, nothing written, when
// that segment was recorded before: a replay is never stored twice.
bool write_event_rows(db_session& s, const std::vector<event_row>& rows, const std::string& spill_segment = {});

// One outbound-limit decision (lupine_send_check in sql/003): at RCPT a check only, at
// END-OF-MESSAGE a check that also counts the message when it fits. Limits are parallel
// to what effective_limits() returned; auto_restrict are breadth thresholds.
struct send_check_args {
  std::string login;
  sys_time now;
  bool end_of_message = false;
  std::vector<std::string> recipients;  // of the transaction, this one included
  std::vector<std::string> domains;
  long long messages = 0, recipient_count = 0, bytes = 0;
  std::vector<send_limit> limits;
  std::vector<send_limit> auto_restrict;
  std::string policyd;
};

struct send_check_answer {
  bool allowed = true;
  std::optional<send_limit> tripped;  // allowed == false: the limit reported (frees last)
  long long value = 0;                // its count with this attempt
  std::optional<sys_time> frees_at;   // nullopt: this attempt alone is over the limit
  bool flag_opened = false;           // a new review flag (a new trip)
  bool restricted = false;            // the account was just restricted automatically
};

send_check_answer send_check(db_session& s, const send_check_args& a);

struct maintenance_params {
  greylist_params triplet;
  std::chrono::milliseconds awl_max_age{};
  std::chrono::milliseconds retention{};
  unsigned batch_rows = 10000;
};

struct maintenance_report {
  bool ran = false;  // false: another instance holds the maintenance lock
  long long greylist_deleted = 0;
  long long awl_deleted = 0;
  long long counters_deleted = 0;
  int partitions_created = 0;
  int partitions_dropped = 0;
};

// Creates upcoming event-log day partitions, drops those past retention, and deletes
// expired greylist and auto-allow-list rows in bounded batches along the last_seen index.
maintenance_report run_maintenance(db_session& s, sys_time now, const maintenance_params& p);

}  // namespace lupine::policyd
