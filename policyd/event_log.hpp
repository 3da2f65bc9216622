// The event log: one row per policy request, buffered on the loop and written in batches
// (COPY, one transaction) by the db pool, never on the request path.
//
// add() is O(1) and never blocks. A flusher coroutine writes every flush_interval, or at
// once when flush_rows are waiting. A failed write keeps the rows, in order, for the next
// attempt (backing off up to 30 s). While the database is away the rows wait in memory up
// to max_buffer_rows, or for spill_after, and then the oldest go to a spill segment on local
// disk (spill.hpp), written on a file thread of their own. When the database answers again
// the segments are replayed first, oldest first, each exactly once, then memory: the rows
// reach event_log in the order they were logged. Rows are dropped (counted, logged at most
// once a minute) only when memory is full and the spill cannot take them (no spill
// directory, disk full, spill_max_bytes). flush_now() is for SIGTERM: it writes what it
// can before the deadline and spills the rest. Loop thread only.
#pragma once

#include <chrono>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "core/db.hpp"
#include "policyd/spill.hpp"
#include "policyd/store.hpp"

namespace lupine::policyd {

struct event_log_options {
  std::chrono::milliseconds flush_interval{1000};
  std::size_t flush_rows = 1000;
  std::size_t max_buffer_rows = 200000;
  std::filesystem::path spill_dir;  // empty: no spilling
  std::uintmax_t spill_max_bytes = std::uintmax_t{1} << 30;
  std::chrono::milliseconds spill_after{10000};  // while the db is away, memory goes to disk this often
  std::string instance;                          // names replayed segments in event_log_spill
};

class event_log {
 public:
  // Opens the spill directory and lists the segments an earlier run left (replayed first).
  // Throws std::runtime_error when the spill directory is unusable.
  event_log(boost::asio::any_io_executor ex, db_pool& db, event_log_options opts);
  ~event_log();

  void add(event_row row);
  // The flusher: runs until stop(); spawn it once.
  boost::asio::awaitable<void> run();
  // Writes everything buffered, retrying until the deadline, then spills what is left.
  // Returns rows neither written nor spilled (lost).
  boost::asio::awaitable<std::size_t> flush_now(std::chrono::steady_clock::time_point deadline);
  void stop();

  std::size_t buffered() const { return rows_.size(); }
  std::uint64_t written() const { return written_; }
  std::uint64_t batches() const { return batches_; }  // write transactions committed
  std::uint64_t spilled() const { return spilled_; }
  std::uint64_t dropped() const { return dropped_ + rejected_; }

 private:
  using time_point = std::chrono::steady_clock::time_point;
  // Writes up to one batch; false when the write failed (rows kept, in order).
  boost::asio::awaitable<bool> write_batch(std::optional<time_point> deadline);
  // Replays the oldest segment; false when the database did not take it.
  boost::asio::awaitable<bool> replay_segment(std::optional<time_point> deadline);
  // Segments first, then memory; false at the first failure.
  boost::asio::awaitable<bool> drain(std::optional<time_point> deadline);
  // Moves the oldest n rows to a new segment; false (rows kept) when the spill failed.
  boost::asio::awaitable<void> spill_front(std::size_t n);
  // Writes rows as segment number seq on the file thread and files it in order.
  boost::asio::awaitable<bool> spill_rows(std::shared_ptr<std::vector<event_row>> rows, std::uint64_t seq,
                                          std::string key);
  // How many of the oldest rows should go to disk now (0: none).
  std::size_t spill_due() const;
  bool spill_ready() const;
  void enforce_bound();
  void drop_oldest();
  std::shared_ptr<std::vector<event_row>> take_front(std::size_t n);
  void put_back(std::vector<event_row>& batch);

  db_pool& db_;
  event_log_options opts_;
  std::deque<event_row> rows_;
  boost::asio::steady_timer wake_;
  std::unique_ptr<spill_store> spill_;
  // On disk, oldest first, all older than rows_; with their sequence numbers (this run's
  // segments are numbered when their rows leave rows_, so a failed database batch spilled
  // after a newer segment still sorts before it).
  std::deque<std::pair<std::uint64_t, spill_segment>> segments_;
  boost::asio::thread_pool files_{1};  // spill writes (write + fsync) stay off the loop
  std::uint64_t next_seq_ = 0;
  bool stopping_ = false;
  bool db_busy_ = false;         // a batch or a replay is being written
  bool file_busy_ = false;       // a spill is being written
  bool backing_off_ = false;     // the last write failed: no early wake-ups until one succeeds
  std::size_t batch_limit_ = 0;  // after a rejected batch: bisect to find the bad row (0: normal)
  time_point spill_retry_at_{};  // after a failed spill: not before this
  time_point spill_clock_{};     // backing off: when memory rows last went to disk (or the outage began)
  time_point next_write_{};      // the next database attempt
  time_point last_drop_warning_{};
  time_point last_failure_log_{};
  time_point last_spill_error_log_{};
  std::uint64_t rejected_ = 0;  // rows PostgreSQL refused even alone (dropped, logged)
  std::uint64_t written_ = 0;
  std::uint64_t batches_ = 0;
  std::uint64_t dropped_ = 0;
  std::uint64_t spilled_ = 0;
  std::uint64_t keyed_batches_ = 0;
};

}  // namespace lupine::policyd
