// Database access for both programs: a pool of worker threads, each owning one libpqxx
// connection, and the schema migrations.
//
// libpqxx blocks, so policyd never calls it on its event loop: db_pool::run() posts the
// job to a pool thread and resumes the awaiting coroutine on the caller's executor. Each
// thread connects lazily, reconnects after a failure at most once per reconnect_interval,
// and sets statement_timeout so an abandoned query does not run on. Jobs see an opaque
// db_session; only files that include core/db_session.hpp touch pqxx.
// Errors: result<T> with errc::db_unavailable (connect/broken), errc::db_error (the
// statement failed), errc::db_busy (max_inflight reached; shed, never queued unboundedly).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/errors.hpp"

namespace lupine {

struct db_session;  // defined in core/db_session.hpp (wraps pqxx::connection)

struct db_options {
  std::string dsn;
  unsigned threads = 4;
  unsigned max_inflight = 512;
  std::chrono::milliseconds statement_timeout{2000};
  std::chrono::milliseconds reconnect_interval{1000};
  std::string application_name = "lupine";
  // Commit without waiting for the WAL flush (synchronous_commit = off) by default, for
  // state that may be lost in a database crash without harm (greylist triplets: the
  // sender is greylisted once more). Jobs whose rows must survive a crash say
  // SET LOCAL synchronous_commit = on in their transaction.
  bool relaxed_commit = false;
  // enable_seqscan = off for the connection. A prepared statement's generic plan is made
  // once, from the table's size at that moment: made while a table is empty (a fresh
  // install, a test), it scans the whole table for every key ever after, however large the
  // table grows. policyd only looks rows up by key, so it tells the planner to prefer its
  // indexes (a scan still happens where no index serves).
  bool prefer_index_scans = false;
};

class db_pool {
 public:
  explicit db_pool(db_options opts);
  ~db_pool();
  db_pool(const db_pool&) = delete;
  db_pool& operator=(const db_pool&) = delete;

  // Runs job on a pool thread and resumes on the awaiting coroutine's executor (which must
  // be a single-threaded one, such as policyd's loop). With a deadline, the await ends with
  // errc::timed_out when it passes; the job still finishes on its thread (statement_timeout
  // bounds it) and its result is dropped. The job may throw pqxx exceptions; they become
  // errc values here.
  template <class R>
  boost::asio::awaitable<result<R>> run(std::function<R(db_session&)> job,
                                        std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) {
    namespace asio = boost::asio;
    if (inflight_.load() >= opts_.max_inflight) {
      co_return result<R>{boost::system::in_place_error, make_error_code(errc::db_busy)};
    }
    ++inflight_;
    auto value = std::make_shared<std::optional<R>>();
    auto body = [value, job = std::move(job)](db_session& s) { value->emplace(job(s)); };
    auto init = [this, body = std::move(body), deadline](auto handler) mutable {
      auto ex = asio::get_associated_executor(handler);
      auto shared = std::make_shared<decltype(handler)>(std::move(handler));
      auto finished = std::make_shared<bool>(false);
      std::shared_ptr<asio::steady_timer> timer;
      if (deadline) timer = std::make_shared<asio::steady_timer>(ex, *deadline);
      // Runs on the awaiting executor only, so `finished` needs no lock.
      auto complete = [shared, finished, timer](boost::system::error_code ec) {
        if (*finished) return;
        *finished = true;
        if (timer) timer->cancel();
        (*shared)(ec);
      };
      if (timer) {
        timer->async_wait([complete](boost::system::error_code ec) {
          if (!ec) complete(make_error_code(errc::timed_out));
        });
      }
      auto work = std::make_shared<asio::executor_work_guard<decltype(ex)>>(ex);
      post_job(std::move(body), deadline, [this, complete, work](boost::system::error_code ec) {
        --inflight_;
        auto ex2 = work->get_executor();
        asio::post(ex2, [complete, work, ec]() {
          complete(ec);
          work->reset();
        });
      });
    };
    auto token = asio::as_tuple(asio::use_awaitable);
    auto [ec] = co_await asio::async_initiate<decltype(token), void(boost::system::error_code)>(std::move(init), token);
    if (ec) co_return result<R>{boost::system::in_place_error, ec};
    co_return std::move(**value);
  }

  unsigned inflight() const { return inflight_.load(); }
  // Finishes queued jobs and joins the threads; later run() calls fail with shutting_down.
  void stop();

 private:
  // Runs body on a pool thread, then done(ec) there. A job still queued when its deadline
  // passes is not run at all (timed_out): after a stall nobody waits for it any more.
  void post_job(std::function<void(db_session&)> body, std::optional<std::chrono::steady_clock::time_point> deadline,
                std::function<void(boost::system::error_code)> done);
  db_session* session();  // this thread's connection, connecting if needed; nullptr if down

  db_options opts_;
  boost::asio::thread_pool pool_;
  std::atomic<unsigned> inflight_{0};
  std::atomic<bool> stopped_{false};
};

// Blocking, for abusectl and startup: one connection on the calling thread.
// Throws config_error-like std::runtime_error with a clear message when it cannot connect.
std::unique_ptr<db_session, void (*)(db_session*)> db_connect(const std::string& dsn,
                                                              const std::string& application_name);

struct migration {
  int version;
  std::string name;
  std::string sql;
};
const std::vector<migration>& embedded_migrations();  // generated from sql/ at build time

struct migrate_report {
  int from_version = 0;
  int to_version = 0;
  std::vector<std::string> applied;   // file names applied now
  std::vector<std::string> warnings;  // edited files, a newer schema than ours
};
// Applies every migration newer than the database's version, each in its own transaction,
// under an advisory lock so that instances starting together do not race. With nothing
// pending it only reads schema_migrations (no lock, no CREATE), so a role with SELECT on it
// alone (lupine_policyd, lupine_abusectl: sql/005) succeeds. Throws std::runtime_error
// naming the file when one fails (that file's changes are rolled back), and, before
// touching anything, with a message that says to run `abusectl db migrate` as the schema
// owner when migrations are pending and the connected role does not have the owner's rights.
migrate_report migrate(db_session& s, const std::vector<migration>& all);
// The highest applied version (0 for an empty database). Throws std::runtime_error saying
// what to do when the role may not read schema_migrations.
int schema_version(db_session& s);

}  // namespace lupine
