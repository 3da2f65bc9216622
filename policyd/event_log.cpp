// Event-log batching; see event_log.hpp.
#include "policyd/event_log.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/log.hpp"

namespace lupine::policyd {
namespace asio = boost::asio;

event_log::event_log(asio::any_io_executor ex, db_pool& db, event_log_options opts) : db_{db}, opts_{opts}, wake_{ex} {
  wake_.expires_at(std::chrono::steady_clock::time_point::max());
}

void event_log::add(event_row row) {
  rows_.push_back(std::move(row));
  if (rows_.size() > opts_.max_buffer_rows) {
    rows_.pop_front();
    ++dropped_;
    auto now = std::chrono::steady_clock::now();
    if (now - last_drop_warning_ > std::chrono::minutes{1}) {
      last_drop_warning_ = now;
      log(log_level::warning, "event_log_dropping", "buffered={} dropped_total={}", rows_.size(), dropped_);
    }
  }
  if (rows_.size() >= opts_.flush_rows && !writing_ && !backing_off_) wake_.cancel();
}

asio::awaitable<bool> event_log::write_batch(std::optional<std::chrono::steady_clock::time_point> deadline) {
  if (rows_.empty()) co_return true;
  writing_ = true;
  std::size_t n = std::min(rows_.size(), std::max<std::size_t>(opts_.flush_rows, 1) * 4);
  if (batch_limit_ != 0) n = std::min(n, batch_limit_);
  auto batch = std::make_shared<std::vector<event_row>>(std::make_move_iterator(rows_.begin()),
                                                        std::make_move_iterator(rows_.begin() + static_cast<long>(n)));
  rows_.erase(rows_.begin(), rows_.begin() + static_cast<long>(n));
  std::function<bool(db_session&)> job = [batch](db_session& s) {
    write_event_rows(s, *batch);
    return true;
  };
  auto r = co_await db_.run<bool>(std::move(job), deadline);
  writing_ = false;
  if (!r) {
    backing_off_ = true;
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
    // Put the rows back in front, in order, unless that would exceed the bound.
    for (auto it = batch->rbegin(); it != batch->rend(); ++it) {
      if (rows_.size() >= opts_.max_buffer_rows) {
        ++dropped_;
        continue;
      }
      rows_.push_front(std::move(*it));
    }
    auto now = std::chrono::steady_clock::now();
    if (now - last_failure_log_ > std::chrono::seconds{10}) {
      last_failure_log_ = now;
      log(log_level::warning, "event_log_write_failed", "rows={} buffered={} {}", batch->size(), rows_.size(),
          kv("error", r.error().message()));
    }
    co_return false;
  }
  written_ += batch->size();
  backing_off_ = false;
  co_return true;
}

asio::awaitable<void> event_log::run() {
  auto backoff = opts_.flush_interval;
  while (!stopping_) {
    wake_.expires_after(backoff);
    boost::system::error_code ec;
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    bool ok = true;
    while (ok && !rows_.empty() && !stopping_) {
      ok = co_await write_batch(std::nullopt);
      if (rows_.size() < opts_.flush_rows) break;
    }
    // After a failure, wait longer before the next try (up to 30 s), then back to normal.
    backoff = ok ? opts_.flush_interval : std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds{30});
  }
}

asio::awaitable<std::size_t> event_log::flush_now(std::chrono::steady_clock::time_point deadline) {
  auto ex = co_await asio::this_coro::executor;
  while (!rows_.empty() && std::chrono::steady_clock::now() < deadline) {
    if (writing_) {
      asio::steady_timer t{ex, std::chrono::milliseconds{10}};
      co_await t.async_wait(asio::use_awaitable);
      continue;
    }
    if (!co_await write_batch(deadline)) {
      asio::steady_timer t{ex, std::chrono::milliseconds{200}};
      co_await t.async_wait(asio::use_awaitable);
    }
  }
  co_return rows_.size();
}

void event_log::stop() {
  stopping_ = true;
  wake_.cancel();
}

}  // namespace lupine::policyd
