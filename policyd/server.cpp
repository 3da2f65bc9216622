// Listeners, sessions, signals and maintenance; see server.hpp.
#include "policyd/server.hpp"

#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include <fmt/format.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/local/datagram_protocol.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "core/log.hpp"
#include "policyd/checks/account_check.hpp"
#include "policyd/checks/dns_check.hpp"
#include "policyd/checks/flood_check.hpp"
#include "policyd/checks/greylist_check.hpp"
#include "policyd/checks/limits_check.hpp"
#include "policyd/net.hpp"

namespace lupine::policyd {
namespace asio = boost::asio;
using asio::ip::tcp;
using local_stream = asio::local::stream_protocol;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::shared_ptr<const allowlist> build_allowlist(const policyd_config& cfg,
                                                 const std::vector<std::pair<std::string, std::string>>& db_rows,
                                                 std::vector<std::string>& problems) {
  auto a = std::make_shared<allowlist>();
  for (const auto& f : cfg.allowlist_client_files) {
    auto e = load_client_file(f, a->clients);
    problems.insert(problems.end(), e.begin(), e.end());
  }
  for (const auto& f : cfg.allowlist_recipient_files) {
    auto e = load_address_file(f, a->recipients);
    problems.insert(problems.end(), e.begin(), e.end());
  }
  for (const auto& f : cfg.allowlist_sender_files) {
    auto e = load_address_file(f, a->senders);
    problems.insert(problems.end(), e.begin(), e.end());
  }
  for (const auto& [kind, value] : db_rows) {
    std::string err;
    if (kind == "client")
      err = a->clients.add_cidr(value);
    else if (kind == "client_name")
      err = a->clients.add_name(value);
    else if (kind == "sender")
      err = a->senders.add(value);
    else if (kind == "recipient")
      err = a->recipients.add(value);
    else
      err = "unknown kind";
    if (!err.empty()) problems.push_back(fmt::format("allowlist table: {} {}: {}", kind, value, err));
  }
  return a;
}

void sd_notify_ready() {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return;
  std::string p = path;
  if (p[0] == '@') p[0] = '\0';  // abstract namespace
  try {
    asio::io_context io;
    asio::local::datagram_protocol::socket s{io};
    s.open();
    s.send_to(asio::buffer(std::string_view{"READY=1"}), asio::local::datagram_protocol::endpoint{p});
  } catch (const std::exception& e) {
    log(log_level::warning, "sd_notify_failed", "{}", kv("error", e.what()));
  }
}

namespace {

dns_options resolver_options(const policyd_config& c) {
  dns_options o;
  o.servers = c.dns_servers;
  o.timeout = c.dns_timeout;
  o.tries = c.dns_tries;
  o.cache_size = c.dns_cache_size;
  o.ttl_min = std::chrono::duration_cast<std::chrono::seconds>(c.dns_ttl_min);
  o.ttl_max = std::chrono::duration_cast<std::chrono::seconds>(c.dns_ttl_max);
  o.negative_ttl_max = std::chrono::duration_cast<std::chrono::seconds>(c.dns_negative_ttl_max);
  return o;
}

greylist_engine_options greylist_engine_settings(const policyd_config& c) {
  greylist_engine_options o;
  o.write_behind = c.greylist_write_behind;
  o.max_pending = c.greylist_max_pending;
  o.cache_entries = c.greylist_cache_entries;
  return o;
}

event_log_options event_log_settings(const policyd_config& c) {
  event_log_options o;
  o.flush_interval = c.event_log_flush_interval;
  o.flush_rows = c.event_log_flush_rows;
  o.max_buffer_rows = c.event_log_max_buffer_rows;
  if (c.event_log_enable) o.spill_dir = c.event_log_spill_dir;
  o.spill_max_bytes = std::uintmax_t{c.event_log_spill_max_mb} << 20;
  o.spill_after = c.event_log_spill_after;
  o.instance = c.name;
  std::replace_if(
      o.instance.begin(), o.instance.end(), [](char ch) { return ch == ' ' || ch == '/'; }, '_');
  return o;
}

// One connection's bookkeeping, visible to the server for draining.
struct conn_state {
  std::function<void()> close;  // closes the socket (loop thread)
  bool busy = false;            // a request is being decided or answered
};

}  // namespace

struct server::impl {
  impl(asio::io_context& io_, const policyd_config& cfg_, db_pool& db_, db_pool& greylist_db, server& owner_)
      : io{io_},
        cfg{cfg_},
        db{db_},
        owner{owner_},
        elog{io_.get_executor(), db_, event_log_settings(cfg_)},
        greylist{io_.get_executor(), db_, greylist_db, greylist_settings(cfg_), greylist_engine_settings(cfg_)},
        resolver{io_.get_executor(), resolver_options(cfg_)},
        sync{io_.get_executor(), owner_.directory_, cfg_.database, "lupine-policyd", cfg_.accounts_refresh_interval} {
    // Precedence, top-down: the account's state (authenticated requests), flood control
    // (unauthenticated clients), allow-lists, DNS reputation (DNSWL trust, DNSBL and
    // reverse-DNS score), greylisting, and last the sending limits of authenticated
    // submission (last because counting a message must be the final word on it; the
    // allow-list, DNS and greylist checks never judge authenticated requests).
    pipe.add(std::make_unique<account_check>(cfg, owner.directory_));
    pipe.add(std::make_unique<flood_check>(cfg));
    pipe.add(std::make_unique<allowlist_check>(owner.allowlists_));
    auto dns = std::make_unique<dns_check>(cfg, resolver);
    dns_checker = dns.get();
    pipe.add(std::move(dns));
    pipe.add(std::make_unique<greylist_check>(cfg, greylist));
    pipe.add(std::make_unique<limits_check>(cfg, db, owner.directory_));
  }

  asio::io_context& io;
  const policyd_config& cfg;
  db_pool& db;
  server& owner;
  pipeline pipe;
  event_log elog;
  greylist_engine greylist;
  dns_resolver resolver;
  dns_check* dns_checker = nullptr;  // owned by pipe
  directory_sync sync;
  std::uint64_t next_connection = 0;
  std::vector<std::unique_ptr<tcp::acceptor>> tcp_acceptors;
  std::vector<std::unique_ptr<local_stream::acceptor>> unix_acceptors;
  std::vector<std::string> unix_paths;
  std::list<conn_state> conns;
  // Lives as long as the server: once Asio forgets a signal it restores the default action,
  // and a HUP or second TERM during the drain would kill the process mid-flush.
  asio::signal_set signals{io, SIGTERM, SIGINT, SIGHUP};
  bool stopping = false;
  std::uint64_t requests = 0;
  steady::time_point last_refusal_log{};
  std::uint64_t refused = 0;

  template <class Socket>
  asio::awaitable<void> serve(Socket sock, std::string peer);
  template <class Acceptor>
  asio::awaitable<void> accept_loop(Acceptor& acc, std::string name);
  asio::awaitable<void> handle_signals();
  asio::awaitable<void> maintenance();
  asio::awaitable<void> reload();
  asio::awaitable<void> drain();
  void log_decision(const policy_request& req, const decision& d, std::chrono::microseconds took);
};

server::server(asio::io_context& io, const policyd_config& cfg, db_pool& db, db_pool& greylist_db)
    : impl_{std::make_unique<impl>(io, cfg, db, greylist_db, *this)} {}

server::~server() {
  for (const auto& p : impl_->unix_paths) ::unlink(p.c_str());
}

void server::bind() {
  auto& im = *impl_;
  for (const auto& ep : im.cfg.listen) {
    try {
      if (ep.type == listen_endpoint::kind::inet) {
        auto addr = asio::ip::make_address(ep.host);
        tcp::endpoint endpoint{addr, ep.port};
        auto acc = std::make_unique<tcp::acceptor>(im.io);
        acc->open(endpoint.protocol());
        acc->set_option(tcp::acceptor::reuse_address(true));
        if (addr.is_v6() && addr.to_v6().is_unspecified()) acc->set_option(asio::ip::v6_only(false));
        acc->bind(endpoint);
        acc->listen(asio::socket_base::max_listen_connections);
        im.tcp_acceptors.push_back(std::move(acc));
      } else {
        namespace fs = std::filesystem;
        std::error_code ec;
        if (fs::is_socket(ep.path, ec)) {
          // Stale from a crash, or another policyd's? Only a socket nobody answers on goes.
          local_stream::socket probe{im.io};
          boost::system::error_code cec;
          probe.connect(local_stream::endpoint{ep.path}, cec);
          if (!cec) throw config_error{fmt::format("listen = {}: another process is listening there", ep.text)};
          fs::remove(ep.path, ec);
        }
        auto acc = std::make_unique<local_stream::acceptor>(im.io);
        local_stream::endpoint endpoint{ep.path};
        acc->open(endpoint.protocol());
        acc->bind(endpoint);
        acc->listen(asio::socket_base::max_listen_connections);
        ::chmod(ep.path.c_str(), static_cast<mode_t>(im.cfg.unix_socket_mode));
        im.unix_paths.push_back(ep.path);
        im.unix_acceptors.push_back(std::move(acc));
      }
      log(log_level::info, "listening", "{}", kv("endpoint", ep.text));
    } catch (const boost::system::system_error& e) {
      throw config_error{fmt::format("listen = {}: cannot listen: {}", ep.text, e.code().message())};
    }
  }
}

asio::awaitable<void> server::run() {
  auto& im = *impl_;
  auto ex = co_await asio::this_coro::executor;
  // A line per decision: written in bursts, once per round of the loop (core/log.hpp).
  log_batch_this_thread([ex] { asio::post(ex, [] { log_flush(); }); });
  std::vector<std::string> problems;
  for (auto& acc : im.tcp_acceptors) {
    auto name = acc->local_endpoint().address().to_string() + ":" + std::to_string(acc->local_endpoint().port());
    asio::co_spawn(ex, im.accept_loop(*acc, name), asio::detached);
  }
  for (std::size_t i = 0; i < im.unix_acceptors.size(); ++i) {
    asio::co_spawn(ex, im.accept_loop(*im.unix_acceptors[i], im.unix_paths[i]), asio::detached);
  }
  if (im.cfg.event_log_enable) {
    asio::co_spawn(ex, im.elog.run(), [](std::exception_ptr e) {
      if (e) log(log_level::error, "panic", "event log flusher died");
    });
  }
  if (im.cfg.greylist_enable) {
    asio::co_spawn(ex, im.greylist.run(), [](std::exception_ptr e) {
      if (e) log(log_level::error, "panic", "greylist flusher died");
    });
  }
  asio::co_spawn(ex, im.maintenance(), asio::detached);
  im.sync.start();
  if (!im.cfg.dnsbl_lists.empty()) asio::co_spawn(ex, im.dns_checker->self_test_loop(im.stopping), asio::detached);
  sd_notify_ready();
  log(log_level::info, "ready", "{} greylist={} event_log={}", kv("name", im.cfg.name), im.cfg.greylist_enable,
      im.cfg.event_log_enable);
  co_await im.handle_signals();
  // Signals during the drain are noted, not fatal.
  auto late = [](impl* self) -> asio::awaitable<void> {
    for (;;) {
      auto [ec, sig] = co_await self->signals.async_wait(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      log(log_level::info, "signal_ignored", "signal={} reason=shutting_down", sig);
    }
  };
  asio::co_spawn(ex, late(&im), asio::detached);
  co_await im.drain();
  boost::system::error_code ignored;
  im.signals.cancel(ignored);
  log_batch_this_thread({});
}

template <class Acceptor>
asio::awaitable<void> server::impl::accept_loop(Acceptor& acc, std::string name) {
  auto ex = co_await asio::this_coro::executor;
  while (!stopping) {
    auto [ec, sock] = co_await acc.async_accept(asio::as_tuple(asio::use_awaitable));
    if (stopping || ec == asio::error::operation_aborted) break;
    if (ec) {
      // EMFILE and friends: log, breathe, go on (the listener must survive).
      log(log_level::error, "accept_failed", "{} {}", kv("listener", name), kv("error", ec.message()));
      asio::steady_timer t{ex, 100ms};
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    std::string peer;
    if constexpr (std::is_same_v<Acceptor, tcp::acceptor>) {
      boost::system::error_code e2;
      auto rep = sock.remote_endpoint(e2);
      peer = e2 ? "?" : fmt::format("{}:{}", rep.address().to_string(), rep.port());
      sock.set_option(tcp::no_delay(true), e2);
    } else {
      peer = "unix:" + name;
    }
    if (owner.connections_ >= cfg.max_connections) {
      ++refused;
      auto now = steady::now();
      if (now - last_refusal_log > 1s) {
        last_refusal_log = now;
        log(log_level::warning, "connection_refused", "reason=max_connections max={} refused_total={} {}",
            cfg.max_connections, refused, kv("peer", peer));
      }
      boost::system::error_code ignored;
      sock.close(ignored);
      continue;
    }
    auto session = serve(std::move(sock), std::move(peer));
    asio::co_spawn(ex, std::move(session), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& err) {
        log(log_level::error, "session_failed", "{}", kv("error", err.what()));
      }
    });
  }
}

template <class Socket>
asio::awaitable<void> server::impl::serve(Socket sock, std::string peer) {
  auto ex = co_await asio::this_coro::executor;
  ++owner.connections_;
  const std::uint64_t connection_id = ++next_connection;
  conns.push_back(conn_state{});
  auto me = std::prev(conns.end());
  me->close = [&sock] {
    boost::system::error_code ignored;
    sock.close(ignored);
  };
  // The watchdog closes the socket when the deadline passes; reads then fail.
  auto deadline = std::make_shared<steady::time_point>(steady::now() + cfg.idle_timeout);
  auto alive = std::make_shared<bool>(true);
  auto timed_out = std::make_shared<bool>(false);
  auto timer = std::make_shared<asio::steady_timer>(ex);
  auto watchdog = [](std::shared_ptr<asio::steady_timer> t, std::shared_ptr<steady::time_point> dl,
                     std::shared_ptr<bool> live, std::shared_ptr<bool> fired,
                     std::function<void()> close) -> asio::awaitable<void> {
    while (*live) {
      if (*dl <= steady::now()) {
        *fired = true;
        close();
        co_return;
      }
      t->expires_at(*dl);
      co_await t->async_wait(asio::as_tuple(asio::use_awaitable));
    }
  };
  auto wd = watchdog(timer, deadline, alive, timed_out, me->close);
  asio::co_spawn(ex, std::move(wd), asio::detached);

  std::string buf;
  buf.reserve(2048);
  policy_request req;
  std::optional<steady::time_point> request_start;  // first bytes of the unfinished request
  std::string why = "eof";
  std::size_t served = 0;
  try {
    for (;;) {
      auto pr = parse_request(buf, cfg.limits, req);
      if (pr.state == parse_result::status::error) {
        why = "protocol_error";
        log(log_level::warning, "protocol_error", "{} {} requests={}", kv("peer", peer),
            kv("error", to_string(pr.error)), served);
        break;
      }
      if (pr.state == parse_result::status::complete) {
        buf.erase(0, pr.consumed);
        request_start.reset();
        me->busy = true;
        auto t0 = steady::now();
        *deadline = t0 + cfg.request_budget + cfg.request_timeout;
        if (timer->expiry() > *deadline) timer->cancel();  // a client that stops reading is cut off
        request_context ctx{req, std::chrono::system_clock::now() + cfg.clock_offset, t0 + cfg.request_budget,
                            connection_id};
        decision d = co_await pipe.run(ctx);
        auto reply = format_reply(d.action);
        auto [wec, n] = co_await asio::async_write(sock, asio::buffer(reply), asio::as_tuple(asio::use_awaitable));
        (void)n;
        auto took = std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - t0);
        ++requests;
        ++served;
        log_decision(req, d, took);
        if (cfg.event_log_enable) {
          event_row row;
          row.ts = ctx.now;
          row.policyd = cfg.name;
          row.postfix_instance = req.get("instance");
          row.queue_id = req.get("queue_id");
          row.protocol_state = req.get("protocol_state");
          row.client_address = req.get("client_address");
          row.client_name = req.get("client_name");
          row.reverse_client_name = req.get("reverse_client_name");
          row.helo_name = req.get("helo_name");
          row.sender = req.get("sender");
          row.recipient = req.get("recipient");
          row.recipient_count = parse_uint(req.get("recipient_count")).value_or(0) > 1'000'000'000
                                    ? 0
                                    : static_cast<long long>(parse_uint(req.get("recipient_count")).value_or(0));
          auto sz = parse_uint(req.get("size")).value_or(0);
          row.size = sz > (1ULL << 62) ? 0 : static_cast<long long>(sz);
          row.sasl_username = req.get("sasl_username");
          row.sasl_method = req.get("sasl_method");
          row.policy_context = req.get("policy_context");
          row.verdict = std::string{to_string(d.v)};
          row.action = d.action;
          row.reason = d.reason;
          row.detail = d.detail;
          row.score = d.score;
          row.elapsed_us = std::min<long long>(took.count(), 2'000'000'000LL);
          elog.add(std::move(row));
        }
        me->busy = false;
        if (wec) {
          why = "write_failed";
          break;
        }
        if (stopping) {
          why = "shutdown";
          break;
        }
        continue;
      }
      // Need more bytes: idle between requests, or the rest of a started request. A started
      // request gets request_timeout from its first bytes in all, however it trickles in.
      if (buf.empty()) {
        *deadline = steady::now() + cfg.idle_timeout;
      } else {
        if (!request_start) request_start = steady::now();
        *deadline = *request_start + cfg.request_timeout;
      }
      if (timer->expiry() > *deadline) timer->cancel();  // the watchdog must wake sooner
      if (stopping && buf.empty()) {
        why = "shutdown";
        break;
      }
      char chunk[4096];
      auto [ec, n] = co_await sock.async_read_some(asio::buffer(chunk), asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (*timed_out) {
          why = buf.empty() ? "idle_timeout" : "request_timeout";
          if (!buf.empty()) {
            log(log_level::warning, "client_stalled", "{} bytes={} requests={}", kv("peer", peer), buf.size(), served);
          }
        } else if (stopping) {
          why = "shutdown";
        } else if (ec != asio::error::eof) {
          why = ec.message();
        } else if (!buf.empty()) {
          why = "eof_mid_request";
        }
        break;
      }
      buf.append(chunk, n);
    }
  } catch (const std::exception& e) {
    // Last resort: a bug must cost this connection only.
    why = "internal_error";
    log(log_level::error, "session_error", "{} {}", kv("peer", peer), kv("error", e.what()));
  }
  *alive = false;
  timer->cancel();
  boost::system::error_code ignored;
  sock.close(ignored);
  log(log_level::debug, "disconnect", "{} requests={} {}", kv("peer", peer), served, kv("why", why));
  pipe.connection_closed(connection_id);
  conns.erase(me);
  --owner.connections_;
}

void server::impl::log_decision(const policy_request& req, const decision& d, std::chrono::microseconds took) {
  if (!log_enabled(log_level::info)) return;
  // One line per request: built by appending, not by a twelve-field format string (whose
  // parsing was a tenth of policyd's instructions in callgrind).
  fmt::memory_buffer line;
  auto add = [&line](std::string_view key, std::string_view value) {
    line.push_back(' ');
    append_log_field(line, kv(key, value));
  };
  fmt::format_to(std::back_inserter(line), "verdict={}", d.v);
  add("reason", d.reason);
  fmt::format_to(std::back_inserter(line), " score={}", d.score);
  add("state", req.get("protocol_state"));
  add("client", req.get("client_address"));
  add("helo", req.get("helo_name"));
  add("sender", req.get("sender"));
  add("rcpt", req.get("recipient"));
  add("instance", req.get("instance"));
  add("queue_id", req.get("queue_id"));
  fmt::format_to(std::back_inserter(line), " ms={:.3f}", static_cast<double>(took.count()) / 1000.0);
  if (!d.detail.empty()) add("detail", d.detail);
  log(log_level::info, "decision", "{}", std::string_view{line.data(), line.size()});
}

asio::awaitable<void> server::impl::handle_signals() {
  for (;;) {
    auto [ec, sig] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    if (sig == SIGHUP) {
      co_await reload();
      continue;
    }
    log(log_level::info, "shutdown_started", "signal={} connections={}", sig == SIGTERM ? "TERM" : "INT",
        owner.connections_);
    co_return;
  }
}

asio::awaitable<void> server::impl::reload() {
  std::vector<std::pair<std::string, std::string>> rows;
  if (cfg.allowlist_database) {
    std::function<std::vector<std::pair<std::string, std::string>>(db_session&)> job = [](db_session& s) {
      return load_allowlist_rows(s);
    };
    auto r = co_await db.run(std::move(job), steady::now() + 10s);
    if (!r) {
      log(log_level::error, "reload_failed", "allow-lists kept {}", kv("error", r.error().message()));
      co_return;
    }
    rows = std::move(*r);
  }
  std::vector<std::string> problems;
  auto a = build_allowlist(cfg, rows, problems);
  if (!problems.empty()) {
    for (const auto& p : problems) log(log_level::error, "reload_failed", "{}", kv("problem", p));
    log(log_level::error, "reload_failed", "allow-lists kept (fix the problems above)");
    co_return;
  }
  owner.allowlists_.set(a);
  log(log_level::info, "reloaded", "clients={} recipients={} senders={}", a->clients.size(), a->recipients.size(),
      a->senders.size());
}

asio::awaitable<void> server::impl::maintenance() {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer t{ex};
  maintenance_params mp{cfg.greylist, cfg.greylist_awl_max_age, cfg.event_log_retention, cfg.maintenance_batch_rows};
  while (!stopping) {
    auto now = std::chrono::system_clock::now();
    std::function<maintenance_report(db_session&)> job = [now, mp](db_session& s) {
      return run_maintenance(s, now, mp);
    };
    auto r = co_await db.run(std::move(job));
    if (r && r->ran) {
      auto lvl = (r->greylist_deleted + r->awl_deleted + r->partitions_created + r->partitions_dropped +
                  r->counters_deleted) > 0
                     ? log_level::info
                     : log_level::debug;
      log(lvl, "maintenance",
          "greylist_deleted={} awl_deleted={} counters_deleted={} partitions_created={} partitions_dropped={}",
          r->greylist_deleted, r->awl_deleted, r->counters_deleted, r->partitions_created, r->partitions_dropped);
    } else if (!r) {
      log(log_level::warning, "maintenance_failed", "{}", kv("error", r.error().message()));
    }
    t.expires_after(cfg.maintenance_interval);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

asio::awaitable<void> server::impl::drain() {
  auto ex = co_await asio::this_coro::executor;
  stopping = true;
  boost::system::error_code ignored;
  for (auto& a : tcp_acceptors) a->close(ignored);
  for (auto& a : unix_acceptors) a->close(ignored);
  for (auto& c : conns) {
    if (!c.busy) c.close();
  }
  auto grace_end = steady::now() + cfg.shutdown_grace;
  asio::steady_timer t{ex};
  while (!conns.empty() && steady::now() < grace_end) {
    t.expires_after(5ms);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  std::size_t abandoned = conns.size();
  for (auto& c : conns) c.close();
  elog.stop();
  resolver.cancel_all();
  sync.stop();
  // Greylist state first: it is small, and the next instance to see these senders needs it.
  std::size_t greylist_left = co_await greylist.flush_now(std::max(grace_end, steady::now() + 2s));
  std::size_t left = 0;
  if (cfg.event_log_enable) {
    left = co_await elog.flush_now(std::max(grace_end, steady::now() + 2s));
  }
  log(log_level::info, "shutdown_complete",
      "requests={} event_rows_written={} event_rows_lost={} event_rows_spilled={} event_log_batches={} "
      "greylist_reads={} greylist_lookups={} greylist_memory_hits={} greylist_cache_hits={} greylist_flushes={} "
      "greylist_rows_written={} greylist_rows_lost={} abandoned={}",
      requests, elog.written(), left + elog.dropped(), elog.spilled(), elog.batches(), greylist.reads(),
      greylist.lookups(), greylist.memory_hits(), greylist.cache_hits(), greylist.flushes(), greylist.written(),
      greylist_left, abandoned);
}

}  // namespace lupine::policyd
