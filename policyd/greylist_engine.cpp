// Batched greylist reads and write-behind; see greylist_engine.hpp.
#include "policyd/greylist_engine.hpp"

#include <algorithm>
#include <memory>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/log.hpp"

namespace lupine::policyd {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

std::string key_of(const greylist_key& k) {
  std::string out;
  out.reserve(k.client_net.size() + k.sender.size() + k.recipient.size() + 2);
  out.append(k.client_net).push_back('\0');
  out.append(k.sender).push_back('\0');
  out.append(k.recipient);
  return out;
}

std::chrono::milliseconds bounded_interval(const greylist_engine_options& o, const greylist_params& p) {
  if (o.write_behind.count() == 0) return 0ms;
  // Another instance must find the row well before the sender retries.
  return std::max(1ms, std::min(o.write_behind, p.delay / 4));
}

}  // namespace

greylist_engine::greylist_engine(asio::any_io_executor ex, db_pool& db, db_pool& own_db, greylist_db_params params,
                                 greylist_engine_options opts)
    : ex_{ex},
      db_{db},
      own_db_{own_db},
      params_{std::move(params)},
      opts_{opts},
      interval_{bounded_interval(opts, params_.triplet)},
      wake_{ex} {
  opts_.max_reads = std::max(1u, opts_.max_reads);
  opts_.max_batch = std::max<std::size_t>(1, opts_.max_batch);
}

asio::awaitable<result<greylist_answer>> greylist_engine::locked(const greylist_key& key, sys_time now,
                                                                 std::optional<steady::time_point> deadline) {
  auto params = params_;
  std::function<greylist_answer(db_session&)> job = [key, now, params](db_session& s) {
    return greylist_transact(s, key, now, params);
  };
  co_return co_await db_.run<greylist_answer>(std::move(job), deadline);
}

asio::awaitable<result<greylist_answer>> greylist_engine::decide(greylist_key key, sys_time now,
                                                                 std::optional<steady::time_point> deadline) {
  if (interval_.count() == 0) co_return co_await locked(key, now, deadline);
  auto k = key_of(key);
  if (auto it = triplets_.find(k); it != triplets_.end()) {
    ++hits_;
    std::optional<greylist_entry> prior = it->second.entry;
    if (auto ans = step_in_memory(key, prior, it->second.base_attempts, now)) co_return *ans;
    co_return co_await locked(key, now, deadline);
  }
  auto found = co_await lookup(key, deadline);
  if (!found) co_return result<greylist_answer>{boost::system::in_place_error, found.error()};
  if (params_.awl_clients > 0 && found->awl_passes && *found->awl_passes >= static_cast<int>(params_.awl_clients) &&
      now - found->awl_last_seen <= params_.awl_max_age) {
    greylist_answer ans;
    ans.auto_allowed = true;
    ans.awl_passes = *found->awl_passes;
    if (needs_touch(found->awl_last_seen, now, params_.awl_max_age)) note_client(key.client_addr, now, false);
    co_return ans;
  }
  // Another request may have decided this triplet while the read was out: its state is newer.
  std::optional<greylist_answer> ans;
  if (auto it = triplets_.find(k); it != triplets_.end()) {
    ++hits_;
    std::optional<greylist_entry> prior = it->second.entry;
    ans = step_in_memory(key, prior, it->second.base_attempts, now);
  } else {
    ans = step_in_memory(key, found->triplet, found->triplet ? found->triplet->attempts : 0, now);
  }
  if (!ans) co_return co_await locked(key, now, deadline);
  ans->awl_passes = found->awl_passes.value_or(0);
  co_return *ans;
}

std::optional<greylist_answer> greylist_engine::step_in_memory(const greylist_key& key,
                                                               const std::optional<greylist_entry>& prior,
                                                               int base_attempts, sys_time now) {
  greylist_answer ans;
  ans.step = greylist_step(prior, now, params_.triplet);
  const auto outcome = ans.step.outcome;
  auto k = key_of(key);
  if (outcome == greylist_outcome::restarted || (outcome == greylist_outcome::first_seen && prior)) {
    // A row is replaced: the locked transaction decides, against what is stored now.
    triplets_.erase(k);
    return std::nullopt;
  }
  bool write =
      outcome != greylist_outcome::passed_before || needs_touch(prior->last_seen, now, params_.triplet.max_age);
  if (write) {
    auto it = triplets_.find(k);
    if (it == triplets_.end()) {
      if (triplets_.size() >= opts_.max_pending) return std::nullopt;
      it = triplets_.emplace(std::move(k), pending_triplet{key, ans.step.entry, base_attempts}).first;
    } else {
      it->second.entry = ans.step.entry;
    }
    ++it->second.version;
    if (++changes_ >= opts_.flush_rows) wake_.cancel();
  }
  if (outcome == greylist_outcome::passed_now && params_.awl_clients > 0) note_client(key.client_addr, now, true);
  return ans;
}

void greylist_engine::note_client(const std::string& addr, sys_time at, bool count_pass) {
  auto it = clients_.find(addr);
  if (it == clients_.end()) {
    if (clients_.size() >= opts_.max_pending) return;  // a refresh or a count lost, not a decision
    it = clients_.emplace(addr, awl_write{addr, at}).first;
  }
  auto& w = it->second;
  w.seen = std::max(w.seen, at);
  if (count_pass) {
    // Counted at most once per awl_count_interval, here as in the table.
    if (w.passes == 0) {
      w.passes = 1;
      w.first_pass = w.last_pass = at;
    } else if (at - w.last_pass >= params_.awl_count_interval) {
      ++w.passes;
      w.last_pass = at;
    }
  }
  if (++changes_ >= opts_.flush_rows) wake_.cancel();
}

asio::awaitable<result<greylist_lookup>> greylist_engine::lookup(const greylist_key& key,
                                                                 std::optional<steady::time_point> deadline) {
  auto init = [this, &key, deadline](auto handler) {
    auto ex = asio::get_associated_executor(handler, ex_);
    auto shared = std::make_shared<decltype(handler)>(std::move(handler));
    // Resumed through a post: never inside the coroutine that completes the read.
    queued_.push_back(read_waiter{key,
                                  [ex, shared](boost::system::error_code ec, greylist_lookup l) {
                                    asio::post(
                                        ex, [shared, ec, l = std::move(l)]() mutable { (*shared)(ec, std::move(l)); });
                                  },
                                  deadline});
    dispatch_reads();
  };
  auto token = asio::as_tuple(asio::use_awaitable);
  auto [ec, found] =
      co_await asio::async_initiate<decltype(token), void(boost::system::error_code, greylist_lookup)>(init, token);
  if (ec) co_return result<greylist_lookup>{boost::system::in_place_error, ec};
  co_return std::move(found);
}

void greylist_engine::dispatch_reads() {
  while (reads_in_flight_ < opts_.max_reads && !queued_.empty()) {
    auto n = std::min(queued_.size(), opts_.max_batch);
    std::vector<read_waiter> batch;
    batch.reserve(n);
    std::move(queued_.begin(), queued_.begin() + static_cast<std::ptrdiff_t>(n), std::back_inserter(batch));
    queued_.erase(queued_.begin(), queued_.begin() + static_cast<std::ptrdiff_t>(n));
    // The batch ends when its most hurried request must have its answer.
    std::optional<steady::time_point> deadline;
    for (const auto& w : batch) {
      if (w.deadline && (!deadline || *w.deadline < *deadline)) deadline = w.deadline;
    }
    ++reads_in_flight_;
    asio::co_spawn(ex_, read_batch(std::move(batch), deadline), asio::detached);
  }
}

asio::awaitable<void> greylist_engine::read_batch(std::vector<read_waiter> batch,
                                                  std::optional<steady::time_point> deadline) {
  std::vector<greylist_key> keys;
  keys.reserve(batch.size());
  for (auto& w : batch) keys.push_back(std::move(w.key));
  ++reads_;
  lookups_ += keys.size();
  std::function<std::vector<greylist_lookup>(db_session&)> job = [keys = std::move(keys)](db_session& s) {
    return greylist_read(s, keys);
  };
  auto r = co_await own_db_.run<std::vector<greylist_lookup>>(std::move(job), deadline);
  --reads_in_flight_;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (r) {
      batch[i].done({}, std::move((*r)[i]));
    } else {
      batch[i].done(r.error(), {});
    }
  }
  dispatch_reads();
}

std::size_t greylist_engine::dirty() const {
  std::size_t n = 0;
  for (const auto& [k, t] : triplets_) n += (t.in_flight || t.version != t.flushed) ? 1 : 0;
  return n + clients_.size() + clients_in_flight_;
}

asio::awaitable<bool> greylist_engine::flush_once(std::optional<steady::time_point> deadline) {
  std::vector<triplet_write> tw;
  std::vector<awl_write> cw;
  std::vector<flushed_row> trows;
  for (auto& [k, t] : triplets_) {
    if (t.in_flight || t.version == t.flushed) continue;
    int delta = t.entry.attempts - t.base_attempts;
    tw.push_back(triplet_write{t.key, t.entry, delta});
    trows.push_back(flushed_row{k, t.version, delta});
    t.in_flight = true;
    t.flushed = t.version;
  }
  for (auto& [k, c] : clients_) cw.push_back(std::move(c));
  clients_.clear();
  clients_in_flight_ = cw.size();
  changes_ = 0;
  if (tw.empty() && cw.empty()) co_return true;
  flushing_ = true;
  auto interval = params_.awl_count_interval;
  std::size_t rows = tw.size() + cw.size();
  auto sent_clients = std::make_shared<std::vector<awl_write>>(std::move(cw));
  std::function<bool(db_session&)> job = [tw = std::move(tw), sent_clients, interval](db_session& s) mutable {
    greylist_write_batch(s, std::move(tw), *sent_clients, interval);
    return true;
  };
  auto r = co_await own_db_.run<bool>(std::move(job), deadline);
  flushing_ = false;
  clients_in_flight_ = 0;
  for (const auto& row : trows) {
    auto it = triplets_.find(row.key);
    if (it == triplets_.end()) continue;  // replaced by the locked path meanwhile
    auto& t = it->second;
    t.in_flight = false;
    if (!r) {
      t.flushed = 0;  // written again by the next flush
      continue;
    }
    t.base_attempts += row.delta;
    if (t.version == row.version) triplets_.erase(it);  // stored as it is: read it from the table again
  }
  if (!r) {
    // Put the clients back, merged with what came since (a retry counts them then).
    for (auto& old : *sent_clients) {
      auto [it, fresh] = clients_.try_emplace(old.client_addr, old);
      if (fresh) continue;
      auto& w = it->second;
      w.seen = std::max(w.seen, old.seen);
      if (old.passes > 0) {
        if (w.passes == 0) w.last_pass = old.last_pass;
        w.first_pass = old.first_pass;
        w.passes += old.passes;
      }
    }
  }
  if (!r) {
    if (steady::now() - last_failure_log_ >= 10s) {
      last_failure_log_ = steady::now();
      log(log_level::warning, "greylist_write_failed", "rows={} pending={} {}", rows, pending(),
          kv("error", r.error().message()));
    }
    co_return false;
  }
  ++flushes_;
  written_ += rows;
  co_return true;
}

asio::awaitable<void> greylist_engine::run() {
  if (interval_.count() == 0) co_return;
  bool failed = false;
  while (!stopped_) {
    if (failed || changes_ < opts_.flush_rows) {
      wake_.expires_after(failed ? std::min<std::chrono::milliseconds>(interval_, 1s) : interval_);
      co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (stopped_) break;
    bool ok = co_await flush_once(std::nullopt);  // (not `!co_await` in a loop: see event_log::drain)
    failed = !ok;
  }
}

void greylist_engine::stop() {
  stopped_ = true;
  wake_.cancel();
}

asio::awaitable<std::size_t> greylist_engine::flush_now(steady::time_point deadline) {
  stop();
  asio::steady_timer t{ex_};
  while (steady::now() < deadline) {
    if (flushing_) {
      t.expires_after(5ms);
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    if (dirty() == 0) break;
    bool ok = co_await flush_once(deadline);
    if (!ok) {
      t.expires_after(100ms);
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }
  co_return dirty();
}

}  // namespace lupine::policyd
