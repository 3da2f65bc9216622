// The event log: one row per policy request, buffered on the loop and written in batches
// (COPY, one transaction) by the db pool, never on the request path.
//
// add() is O(1) and never blocks. A flusher coroutine writes every flush_interval, or at
// once when flush_rows are waiting. A failed write keeps the rows, in order, for the next
// attempt; beyond max_buffer_rows the oldest rows are dropped, counted and logged (at most
// one warning per minute). XXX: rows beyond the bound are lost while the database is away;
// spilling them to disk is a later issue (reliability). flush_now() is for SIGTERM.
// Loop thread only.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/db.hpp"
#include "policyd/store.hpp"

namespace lupine::policyd {

struct event_log_options {
  std::chrono::milliseconds flush_interval{1000};
  std::size_t flush_rows = 1000;
  std::size_t max_buffer_rows = 200000;
};

class event_log {
 public:
  event_log(boost::asio::any_io_executor ex, db_pool& db, event_log_options opts);

  void add(event_row row);
  // The flusher: runs until stop(); spawn it once.
  boost::asio::awaitable<void> run();
  // Writes everything buffered, retrying until the deadline. Returns rows left unwritten.
  boost::asio::awaitable<std::size_t> flush_now(std::chrono::steady_clock::time_point deadline);
  void stop();

  std::size_t buffered() const { return rows_.size(); }
  std::uint64_t written() const { return written_; }
  std::uint64_t dropped() const { return dropped_ + rejected_; }

 private:
  // Writes up to one batch; false when the write failed (rows kept, in order).
  boost::asio::awaitable<bool> write_batch(std::optional<std::chrono::steady_clock::time_point> deadline);

  db_pool& db_;
  event_log_options opts_;
  std::deque<event_row> rows_;
  boost::asio::steady_timer wake_;
  bool stopping_ = false;
  bool writing_ = false;
  bool backing_off_ = false;     // the last write failed: no early wake-ups until one succeeds
  std::size_t batch_limit_ = 0;  // after a rejected batch: bisect to find the bad row (0: normal)
  std::uint64_t rejected_ = 0;   // rows PostgreSQL refused even alone (dropped, logged)
  std::uint64_t written_ = 0;
  std::uint64_t dropped_ = 0;
  std::chrono::steady_clock::time_point last_drop_warning_{};
  std::chrono::steady_clock::time_point last_failure_log_{};
};

}  // namespace lupine::policyd
