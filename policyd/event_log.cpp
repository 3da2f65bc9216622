// Event-log batching and spilling; see event_log.hpp.
#include "policyd/event_log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <unistd.h>

#include <fmt/format.h>

#include "core/log.hpp"

namespace lupine::policyd {
namespace asio = boost::asio;
using steady = std::chrono::steady_clock;

namespace {

struct spill_outcome {
  std::optional<spill_segment> segment;
  std::string error;
};

// Runs on the file thread.
asio::awaitable<spill_outcome> write_segment(spill_store* store, std::shared_ptr<std::vector<event_row>> rows,
                                             std::uint64_t seq, std::string key) {
  spill_outcome o;
  o.segment = store->write(*rows, seq, key, o.error);
  co_return o;
}

}  // namespace

event_log::event_log(asio::any_io_executor ex, db_pool& db, event_log_options opts)
    : db_{db}, opts_{std::move(opts)}, wake_{ex} {
  wake_.expires_at(steady::time_point::max());
  if (!opts_.spill_dir.empty()) {
    spill_ = std::make_unique<spill_store>(opts_.spill_dir, opts_.spill_max_bytes);
    std::size_t rows = 0;
    for (auto& s : spill_->scan()) {
      rows += s.rows;
      segments_.emplace_back(0, std::move(s));
    }
    if (!segments_.empty()) {
      log(log_level::info, "event_log_spill_found", "segments={} rows={} {}", segments_.size(), rows,
          kv("dir", opts_.spill_dir.string()));
    }
  }
}

event_log::~event_log() {
  files_.join();
}

bool event_log::spill_ready() const {
  return spill_ && steady::now() >= spill_retry_at_;
}

std::size_t event_log::spill_due() const {
  if (!spill_ready() || file_busy_ || rows_.empty()) return 0;
  if (rows_.size() > opts_.max_buffer_rows) return rows_.size() - opts_.max_buffer_rows / 2;
  if (backing_off_ && steady::now() - spill_clock_ >= opts_.spill_after) return rows_.size();
  return 0;
}

void event_log::drop_oldest() {
  rows_.pop_front();
  ++dropped_;
  auto now = steady::now();
  if (now - last_drop_warning_ > std::chrono::minutes{1}) {
    last_drop_warning_ = now;
    log(log_level::error, "event_log_dropping", "buffered={} dropped_total={} spill={}", rows_.size(), dropped_,
        !spill_         ? "off"
        : spill_ready() ? "busy"
                        : "failing");
  }
}

// Memory is a hard bound only when the spill cannot take the excess; while a spill is
// being written, twice the bound.
void event_log::enforce_bound() {
  const std::size_t hard = spill_ready() ? opts_.max_buffer_rows * 2 : opts_.max_buffer_rows;
  while (rows_.size() > hard) drop_oldest();
}

std::shared_ptr<std::vector<event_row>> event_log::take_front(std::size_t n) {
  n = std::min(n, rows_.size());
  auto batch = std::make_shared<std::vector<event_row>>(std::make_move_iterator(rows_.begin()),
                                                        std::make_move_iterator(rows_.begin() + static_cast<long>(n)));
  rows_.erase(rows_.begin(), rows_.begin() + static_cast<long>(n));
  return batch;
}

void event_log::put_back(std::vector<event_row>& batch) {
  for (auto it = batch.rbegin(); it != batch.rend(); ++it) rows_.push_front(std::move(*it));
  enforce_bound();
}

void event_log::add(event_row row) {
  rows_.push_back(std::move(row));
  enforce_bound();
  if (rows_.size() > opts_.max_buffer_rows && spill_ready() && !file_busy_) {
    // Spilled here, not by the flusher, which may be waiting for the database.
    asio::co_spawn(wake_.get_executor(), spill_front(rows_.size() - opts_.max_buffer_rows / 2), asio::detached);
    return;
  }
  if (rows_.size() >= opts_.flush_rows && !db_busy_ && !backing_off_) wake_.cancel();
}

asio::awaitable<bool> event_log::write_batch(std::optional<time_point> deadline) {
  if (rows_.empty()) co_return true;
  db_busy_ = true;
  std::size_t n = std::min(rows_.size(), std::max<std::size_t>(opts_.flush_rows, 1) * 4);
  if (batch_limit_ != 0) n = std::min(n, batch_limit_);
  const std::uint64_t seq = ++next_seq_;
  auto batch = take_front(n);
  // With a deadline (shutdown) the await may end before the write does, and that write may
  // still commit: it carries a key, and if it times out its rows are spilled under the same
  // key, so the replay stores them only if the write did not.
  std::string key;
  if (deadline) key = fmt::format("{}/shutdown-{}-{}", opts_.instance, ::getpid(), ++keyed_batches_);
  std::function<bool(db_session&)> job = [batch, key](db_session& s) { return write_event_rows(s, *batch, key); };
  auto r = co_await db_.run<bool>(std::move(job), deadline);
  db_busy_ = false;
  if (r) {
    written_ += batch->size();
    ++batches_;
    backing_off_ = false;
    co_return true;
  }
  if (!backing_off_) spill_clock_ = steady::now();
  backing_off_ = true;
  auto now = steady::now();
  if (now - last_failure_log_ > std::chrono::seconds{10}) {
    last_failure_log_ = now;
    log(log_level::warning, "event_log_write_failed", "rows={} buffered={} spilled_segments={} {}", batch->size(),
        rows_.size() + batch->size(), segments_.size(), kv("error", r.error().message()));
  }
  if (r.error() == make_error_code(errc::db_rejected)) {
    // PostgreSQL refused the data, not the connection: halve the batch until the row it
    // refuses is alone, then drop that row (logged and counted) so the log moves on.
    if (batch->size() == 1) {
      ++rejected_;
      const auto& row = batch->front();
      log(log_level::error, "event_log_row_rejected", "rejected_total={} {} {} {} {}", rejected_,
          kv("client", row.client_address), kv("sender", row.sender), kv("rcpt", row.recipient),
          kv("queue_id", row.queue_id));
      batch_limit_ = 0;
      co_return false;
    }
    batch_limit_ = std::max<std::size_t>(1, batch->size() / 2);
  }
  // The rows go back where they were: in front of memory, or, when newer rows were spilled
  // meanwhile (or the write may still commit), to disk under this batch's number and key.
  bool timed_out = r.error() == make_error_code(errc::timed_out);
  bool newer_on_disk = !segments_.empty() && segments_.back().first > seq;
  if (spill_ && (timed_out || newer_on_disk)) {
    bool ok = co_await spill_rows(batch, seq, key);
    if (ok) co_return false;
  }
  put_back(*batch);
  co_return false;
}

asio::awaitable<bool> event_log::spill_rows(std::shared_ptr<std::vector<event_row>> rows, std::uint64_t seq,
                                            std::string key) {
  spill_store* store = spill_.get();
  auto out = co_await asio::co_spawn(files_.get_executor(), write_segment(store, rows, seq, key), asio::use_awaitable);
  if (!out.segment) {
    spill_retry_at_ = steady::now() + std::chrono::seconds{10};
    auto now = steady::now();
    if (now - last_spill_error_log_ > std::chrono::minutes{1}) {
      last_spill_error_log_ = now;
      log(log_level::error, "event_log_spill_failed", "rows={} buffered={} {}", rows->size(), rows_.size(),
          kv("error", out.error));
    }
    co_return false;
  }
  spilled_ += rows->size();
  auto it = segments_.end();
  while (it != segments_.begin() && std::prev(it)->first > seq) --it;
  auto name = out.segment->name;
  segments_.insert(it, {seq, std::move(*out.segment)});
  log(log_level::warning, "event_log_spilled", "rows={} {} spilled_segments={} spill_bytes={}", rows->size(),
      kv("segment", name), segments_.size(), store->bytes());
  co_return true;
}

asio::awaitable<void> event_log::spill_front(std::size_t n) {
  if (n == 0 || !spill_ || file_busy_) co_return;
  file_busy_ = true;
  const std::uint64_t seq = ++next_seq_;
  auto batch = take_front(n);
  bool ok = co_await spill_rows(batch, seq, {});
  file_busy_ = false;
  spill_clock_ = steady::now();
  if (!ok) put_back(*batch);  // in front, in order; retried in 10 s, memory a hard bound meanwhile
}

asio::awaitable<bool> event_log::replay_segment(std::optional<time_point> deadline) {
  if (segments_.empty()) co_return true;
  db_busy_ = true;
  auto seg = segments_.front().second;
  struct outcome {
    std::size_t rows = 0;
    bool stored = false;  // false: recorded before (a replay cut short after its commit)
    std::string damaged;  // the segment failed its checks
  };
  spill_store* store = spill_.get();
  std::string key = seg.key.empty() ? opts_.instance + "/" + seg.name : seg.key;
  // The file is read on the database thread too: a replay never blocks the loop.
  std::function<outcome(db_session&)> job = [store, seg, key](db_session& s) {
    outcome o;
    std::vector<event_row> rows;
    std::error_code ec;
    if (!std::filesystem::exists(seg.path, ec)) return o;  // an earlier replay that timed out finished it
    if (!spill_store::read(seg.path, rows, o.damaged)) {
      store->quarantine(seg);
      return o;
    }
    o.rows = rows.size();
    o.stored = write_event_rows(s, rows, key);
    store->remove(seg);
    return o;
  };
  auto r = co_await db_.run<outcome>(std::move(job), deadline);
  db_busy_ = false;
  if (!r) {
    if (!backing_off_) spill_clock_ = steady::now();
    backing_off_ = true;
    auto now = steady::now();
    if (now - last_failure_log_ > std::chrono::seconds{10}) {
      last_failure_log_ = now;
      log(log_level::warning, "event_log_replay_failed", "{} spilled_segments={} {}", kv("segment", seg.name),
          segments_.size(), kv("error", r.error().message()));
    }
    co_return false;
  }
  segments_.pop_front();
  backing_off_ = false;
  if (!r->damaged.empty()) {
    log(log_level::error, "event_log_spill_damaged", "kept as .bad for the admin {}", kv("error", r->damaged));
  } else if (r->stored) {
    written_ += r->rows;
    ++batches_;
    log(log_level::info, "event_log_replayed", "{} rows={} spilled_segments={}", kv("segment", seg.name), r->rows,
        segments_.size());
  } else {
    log(log_level::info, "event_log_replay_skipped", "{} reason=already_stored", kv("segment", seg.name));
  }
  co_return true;
}

// GCC 12 miscompiles some co_await inside conditions (SIGILL seen here): results go to
// variables first.
asio::awaitable<bool> event_log::drain(std::optional<time_point> deadline) {
  bool ok = true;
  while (ok && !segments_.empty() && !(stopping_ && !deadline)) {
    ok = co_await replay_segment(deadline);
  }
  // Memory only once the disk is empty, and not while a spill is being written: rows
  // reach the table in the order they were logged.
  while (ok && segments_.empty() && !file_busy_ && !rows_.empty()) {
    ok = co_await write_batch(deadline);
    if (!deadline && rows_.size() < opts_.flush_rows) break;
  }
  co_return ok;
}

asio::awaitable<void> event_log::run() {
  auto backoff = opts_.flush_interval;
  next_write_ = steady::now() + opts_.flush_interval;
  while (!stopping_) {
    // Wake for the next write, or for a time-based spill while the database is away.
    auto at = next_write_;
    if (backing_off_ && spill_ && !rows_.empty()) {
      at = std::min(at, std::max(spill_clock_ + opts_.spill_after, spill_retry_at_));
    }
    wake_.expires_at(at);
    boost::system::error_code ec;
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    if (auto n = spill_due(); n > 0) {
      co_await spill_front(n);
      if (stopping_) break;
    }
    // Backing off: only a spill may happen before the next attempt. Otherwise a wake-up
    // (flush_rows reached) writes at once.
    if (backing_off_ && steady::now() < next_write_) continue;
    bool ok = co_await drain(std::nullopt);
    // After a failure, wait longer before the next try (up to 30 s), then back to normal.
    backoff = ok ? opts_.flush_interval : std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds{30});
    next_write_ = steady::now() + backoff;
  }
}

asio::awaitable<std::size_t> event_log::flush_now(time_point deadline) {
  auto ex = co_await asio::this_coro::executor;
  while ((!rows_.empty() || !segments_.empty()) && steady::now() < deadline) {
    if (db_busy_ || file_busy_) {
      asio::steady_timer t{ex, std::chrono::milliseconds{10}};
      co_await t.async_wait(asio::use_awaitable);
      continue;
    }
    bool ok = co_await drain(deadline);
    if (!ok) {
      if (rows_.empty() || spill_ready()) break;  // the database is away: segments stay, memory to disk
      asio::steady_timer t{ex, std::chrono::milliseconds{200}};
      co_await t.async_wait(asio::use_awaitable);
    }
  }
  while (db_busy_ || file_busy_) {
    asio::steady_timer t{ex, std::chrono::milliseconds{10}};
    co_await t.async_wait(asio::use_awaitable);
  }
  // What the database did not take goes to disk: replayed by the next start.
  if (!rows_.empty() && spill_) {
    spill_retry_at_ = {};
    co_await spill_front(rows_.size());
  }
  co_return rows_.size();
}

void event_log::stop() {
  stopping_ = true;
  wake_.cancel();
}

}  // namespace lupine::policyd
