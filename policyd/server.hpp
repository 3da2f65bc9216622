// The policy server: listeners (TCP v4/v6, UNIX sockets), one coroutine per connection,
// signals, the maintenance task. One io_context on one thread: sessions, the pipeline's
// in-memory state and the event-log buffer need no locks.
//
// Each connection serves many requests, one at a time, in order. A connection is closed,
// with one log line and no reply, on bad input (protocol.hpp), after server.idle_timeout
// without a request, or when a started request is not complete within
// server.request_timeout (a stalled client). Over server.max_connections, new connections
// are closed at once. One connection's trouble never touches another's.
// SIGTERM/SIGINT: stop accepting, close idle connections, let in-flight requests finish
// (server.shutdown_grace), flush the event log, return from run(). SIGHUP: reload the
// allow-lists (files and table); on error keep the old ones. Account states, webmail
// networks and limit overrides need no signal: directory_sync follows them.
#pragma once

#include <list>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include "core/db.hpp"
#include "policyd/checks/allowlist_check.hpp"
#include "policyd/config.hpp"
#include "policyd/directory.hpp"
#include "policyd/event_log.hpp"
#include "policyd/pipeline.hpp"

namespace lupine::policyd {

// Builds the allow-list from the configured files and database rows. Problems are
// returned one per entry; the list holds whatever was valid.
std::shared_ptr<const allowlist> build_allowlist(const policyd_config& cfg,
                                                 const std::vector<std::pair<std::string, std::string>>& db_rows,
                                                 std::vector<std::string>& problems);

class server {
 public:
  // db serves every check and the event log; greylist_db only greylisting's batched reads
  // and writes (greylist_engine), so that they never wait behind an event-log COPY.
  server(boost::asio::io_context& io, const policyd_config& cfg, db_pool& db, db_pool& greylist_db);
  ~server();

  // Binds every listener; throws config_error naming the endpoint when one cannot be bound.
  void bind();
  // Serves until a stop signal, then drains. Call io.run() after spawning it.
  boost::asio::awaitable<void> run();
  allowlist_holder& allowlists() { return allowlists_; }
  directory& accounts() { return directory_; }
  std::size_t connections() const { return connections_; }

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
  allowlist_holder allowlists_;
  directory directory_;
  std::size_t connections_ = 0;
};

// Tells systemd (Type=notify) we are ready, if NOTIFY_SOCKET is set. No-op otherwise.
void sd_notify_ready();

}  // namespace lupine::policyd
