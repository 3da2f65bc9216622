// Greylisting decisions with few database round trips: batched reads and write-behind.
//
// The triplet table in PostgreSQL stays the one truth all instances share; what changes is
// when policyd talks to it:
//   - Reads are batched. A request whose triplet is not held here asks for it; when a read
//     is already in flight (at most `max_reads`), the asks queue and go together in the next
//     one: one statement, one index lookup per key. Under load a round trip serves many
//     decisions; alone, a request costs the single-key read it always did.
//   - Writes are deferred. The new state of a triplet (first sighting, early retry, pass,
//     hourly last_seen) is decided here with greylist_step and answered at once; the row is
//     written by a flush every `write_behind` (or sooner, `flush_rows` pending), many rows in
//     one statement, merged with what other instances wrote meanwhile (earliest first_seen
//     and passed_at, latest last_seen, attempts added). Until its flush a pending triplet
//     answers from memory, without a read.
//   - Known senders need no round trip. A passed triplet, and a client on the
//     auto-allow-list, is remembered once read or written (up to `cache_entries` of each):
//     both states only end after weeks without a sighting, and each sighting here is
//     written at least hourly, so the memory cannot contradict the table.
// Other instances need a triplet only when its sender retries, after greylist.delay, so the
// flush interval is bounded by a quarter of the delay. Two instances that first see one
// triplet within one flush interval may hold first sightings that far apart until one of
// them reads the merged row again (the next flush, or the next read): a retry exactly at the
// delay can be deferred once for that fraction of a second more.
//
// Restarts (retry window missed, passed triplet expired) still take greylist_transact, the
// locked transaction: they replace a row and must not race. So does everything when
// write_behind is 0, and every new pending triplet beyond max_pending (memory is bounded).
// A flush that fails keeps its rows and is retried; at SIGTERM flush_now writes what is left
// within the grace period, and the count that could not be written is reported.
//
// Runs on the event loop (one thread): no locks. The database work runs on db_pool threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/db.hpp"
#include "core/errors.hpp"
#include "policyd/store.hpp"

namespace lupine::policyd {

struct greylist_engine_options {
  std::chrono::milliseconds write_behind{std::chrono::milliseconds{200}};  // 0: write before answering
  std::size_t flush_rows = 1000;       // flush at once when this many triplets are pending
  std::size_t max_pending = 200000;    // triplets held for writing; beyond: the locked path
  std::size_t cache_entries = 100000;  // passed triplets, and auto-allow-listed clients, known here
  unsigned max_reads = 1;              // reads in flight; more asks wait and share the next
  std::size_t max_batch = 256;         // keys per read
};

class greylist_engine {
 public:
  using steady = std::chrono::steady_clock;

  // Batched reads and flushes run on own_db (two threads suffice: one read and one flush
  // in flight); the locked transaction on db, with the other checks.
  greylist_engine(boost::asio::any_io_executor ex, db_pool& db, db_pool& own_db, greylist_db_params params,
                  greylist_engine_options opts);
  greylist_engine(const greylist_engine&) = delete;
  greylist_engine& operator=(const greylist_engine&) = delete;

  // The greylisting answer for key at now. Errors: the database's (db_unavailable, db_error,
  // db_busy) and timed_out when the deadline passes first.
  boost::asio::awaitable<result<greylist_answer>> decide(greylist_key key, sys_time now,
                                                         std::optional<steady::time_point> deadline);

  // The flusher; returns after stop(). Spawn once on the loop.
  boost::asio::awaitable<void> run();
  void stop();
  // Writes what is pending, retrying until the deadline; returns the triplets and clients
  // left unwritten.
  boost::asio::awaitable<std::size_t> flush_now(steady::time_point deadline);

  // The interval the flusher uses: write_behind, at most a quarter of greylist.delay.
  std::chrono::milliseconds flush_interval() const { return interval_; }
  std::size_t pending() const { return triplets_.size() + clients_.size(); }
  std::uint64_t reads() const { return reads_; }            // read statements run
  std::uint64_t lookups() const { return lookups_; }        // keys they looked up
  std::uint64_t flushes() const { return flushes_; }        // write transactions committed
  std::uint64_t written() const { return written_; }        // triplet and client rows they wrote
  std::uint64_t memory_hits() const { return hits_; }       // decisions taken from a pending triplet
  std::uint64_t cache_hits() const { return cache_hits_; }  // from a known passed triplet or client

 private:
  using key_text = std::string;  // net, sender and recipient joined by NULs
  struct pending_triplet {
    greylist_key key;
    greylist_entry entry;
    int base_attempts = 0;      // attempts of the row as read (0: no row)
    std::uint64_t version = 0;  // bumped by every change
    std::uint64_t flushed = 0;  // the version last written (or being written)
    bool in_flight = false;
  };
  struct flushed_row {
    std::string key;
    std::uint64_t version;
    int delta;
  };
  struct read_waiter {
    greylist_key key;
    std::function<void(boost::system::error_code, greylist_lookup)> done;
    std::optional<steady::time_point> deadline;
  };

  boost::asio::awaitable<result<greylist_lookup>> lookup(const greylist_key& key,
                                                         std::optional<steady::time_point> deadline);
  void dispatch_reads();
  boost::asio::awaitable<void> read_batch(std::vector<read_waiter> batch, std::optional<steady::time_point> deadline);
  boost::asio::awaitable<result<greylist_answer>> locked(const greylist_key& key, sys_time now,
                                                         std::optional<steady::time_point> deadline);
  // Decides from prior and records what must be written; nullopt: take the locked path.
  std::optional<greylist_answer> step_in_memory(const greylist_key& key, const key_text& k,
                                                const std::optional<greylist_entry>& prior, int base_attempts,
                                                sys_time now);
  // Decides a triplet held here (pending or known passed). Outer nullopt: not held; inner
  // nullopt: take the locked path.
  std::optional<std::optional<greylist_answer>> from_memory(const greylist_key& key, const key_text& k, sys_time now);
  std::optional<greylist_answer> from_memory_client(const std::string& addr, sys_time now);
  // The answer for an auto-allow-listed client; this sighting is written (and last_seen
  // moved to now) when the stored one is due for its refresh.
  greylist_answer allow_client(const std::string& addr, int passes, sys_time& last_seen, sys_time now);
  void remember(const key_text& k, const greylist_entry& e);
  void remember_client(const std::string& addr, sys_time last_seen, int passes);
  void note_client(const std::string& addr, sys_time at, bool count_pass);
  boost::asio::awaitable<bool> flush_once(std::optional<steady::time_point> deadline);
  std::size_t dirty() const;

  boost::asio::any_io_executor ex_;
  db_pool& db_;
  db_pool& own_db_;
  greylist_db_params params_;
  greylist_engine_options opts_;
  std::chrono::milliseconds interval_;
  std::unordered_map<key_text, pending_triplet> triplets_;
  struct known_client {
    sys_time last_seen;
    int passes;
  };
  std::unordered_map<key_text, greylist_entry> known_;           // passed triplets, as stored
  std::unordered_map<std::string, known_client> clients_known_;  // auto-allow-listed clients
  std::unordered_map<std::string, awl_write> clients_;           // taken whole by each flush
  std::vector<read_waiter> queued_;
  unsigned reads_in_flight_ = 0;
  std::size_t clients_in_flight_ = 0;
  std::size_t changes_ = 0;  // changes since the last flush started
  bool flushing_ = false;
  bool stopped_ = false;
  boost::asio::steady_timer wake_;
  std::uint64_t reads_ = 0, lookups_ = 0, flushes_ = 0, written_ = 0, hits_ = 0, cache_hits_ = 0;
  steady::time_point last_failure_log_{};
};

}  // namespace lupine::policyd
