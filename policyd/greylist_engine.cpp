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
  // Another instance must find the row well before the sender retries. (With a delay near
  // zero every retry passes anyway: no flush more often than every 10 ms.)
  return std::max(std::min(o.write_behind, 10ms), std::min(o.write_behind, p.delay / 4));
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
  if (auto ans = from_memory_client(key.client_addr, now)) co_return *ans;
  auto k = key_of(key);
  if (auto ans = from_memory(key, k, now)) {
    if (*ans) co_return **ans;
    co_return co_await locked(key, now, deadline);
  }
  auto found = co_await lookup(key, deadline);
  if (!found) co_return result<greylist_answer>{boost::system::in_place_error, found.error()};
  if (found->awl_passes && awl_allows(params_, *found->awl_passes, found->awl_last_seen, now)) {
    auto last_seen = found->awl_last_seen;
    auto ans = allow_client(key.client_addr, *found->awl_passes, last_seen, now);
    remember_client(key.client_addr, last_seen, ans.awl_passes);
    co_return ans;
  }
  // Another request may have decided this triplet while the read was out: its state is newer.
  std::optional<greylist_answer> ans;
  if (auto mem = from_memory(key, k, now)) {
    ans = *mem;
  } else {
    ans = step_in_memory(key, k, found->triplet, found->triplet ? found->triplet->attempts : 0, now);
  }
  if (!ans) co_return co_await locked(key, now, deadline);
  ans->awl_passes = found->awl_passes.value_or(0);
  co_return *ans;
}

std::optional<greylist_answer> greylist_engine::from_memory_client(const std::string& addr, sys_time now) {
  if (params_.awl_clients == 0) return std::nullopt;
  auto it = clients_known_.find(addr);
  if (it == clients_known_.end()) return std::nullopt;
  auto& c = it->second;
  if (!awl_allows(params_, c.passes, c.last_seen, now)) {
    clients_known_.erase(it);
    return std::nullopt;
  }
  ++cache_hits_;
  return allow_client(addr, c.passes, c.last_seen, now);
}

greylist_answer greylist_engine::allow_client(const std::string& addr, int passes, sys_time& last_seen, sys_time now) {
  greylist_answer ans;
  ans.auto_allowed = true;
  ans.awl_passes = passes;
  if (needs_touch(last_seen, now, params_.awl_max_age)) {
    note_client(addr, now, false);
    last_seen = now;
  }
  return ans;
}

std::optional<std::optional<greylist_answer>> greylist_engine::from_memory(const greylist_key& key, const key_text& k,
                                                                           sys_time now) {
  if (auto it = triplets_.find(k); it != triplets_.end()) {
    ++hits_;
    std::optional<greylist_entry> prior = it->second.entry;
    return step_in_memory(key, k, prior, it->second.base_attempts, now);
  }
  if (auto it = known_.find(k); it != known_.end()) {
    ++cache_hits_;
    std::optional<greylist_entry> prior = it->second;
    return step_in_memory(key, k, prior, prior->attempts, now);
  }
  return std::nullopt;
}

void greylist_engine::remember(const key_text& k, const greylist_entry& e) {
  if (opts_.cache_entries == 0) return;
  if (auto it = known_.find(k); it != known_.end()) {
    it->second = e;
    return;
  }
  if (known_.size() >= opts_.cache_entries) known_.erase(known_.begin());  // any one: the bound is what matters
  known_.emplace(k, e);
}

void greylist_engine::remember_client(const std::string& addr, sys_time last_seen, int passes) {
  if (opts_.cache_entries == 0) return;
  if (auto it = clients_known_.find(addr); it != clients_known_.end()) {
    it->second = known_client{last_seen, passes};
    return;
  }
  if (clients_known_.size() >= opts_.cache_entries) clients_known_.erase(clients_known_.begin());
  clients_known_.emplace(addr, known_client{last_seen, passes});
}

std::optional<greylist_answer> greylist_engine::step_in_memory(const greylist_key& key, const key_text& k,
                                                               const std::optional<greylist_entry>& prior,
                                                               int base_attempts, sys_time now) {
  greylist_answer ans;
  ans.step = greylist_step(prior, now, params_.triplet);
  const auto outcome = ans.step.outcome;
  if (outcome == greylist_outcome::restarted || (outcome == greylist_outcome::first_seen && prior)) {
    // A row is replaced: the locked transaction decides, against what is stored now.
    triplets_.erase(k);
    known_.erase(k);
    return std::nullopt;
  }
  bool write =
      outcome != greylist_outcome::passed_before || needs_touch(prior->last_seen, now, params_.triplet.max_age);
  if (!write) {
    // A passed triplet stays passed (until not seen for max_age, and this sighting is
    // written hourly): the next decision needs no read.
    remember(k, *prior);
  } else {
    known_.erase(k);  // pending now; remembered again once written
    auto it = triplets_.find(k);
    if (it == triplets_.end()) {
      if (triplets_.size() >= opts_.max_pending) return std::nullopt;
      it = triplets_.emplace(k, pending_triplet{key, ans.step.entry, base_attempts}).first;
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
    if (t.version == row.version) {
      // Stored as it is. A passed triplet is remembered; any other is read again next time.
      if (t.entry.passed_at) remember(it->first, t.entry);
      triplets_.erase(it);
    }
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
