// Database pool and migrations; see db.hpp. The only core file that includes pqxx.
#include "core/db.hpp"

#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "core/db_session.hpp"
#include "core/log.hpp"
#include "core/text.hpp"

namespace lupine {

namespace {

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"  // Boost declares the base this way
class lupine_error_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "lupine"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::ok: return "ok";
      case errc::db_unavailable: return "database unavailable";
      case errc::db_error: return "database error";
      case errc::db_rejected: return "data rejected by the database";
      case errc::db_busy: return "too many database jobs in flight";
      case errc::timed_out: return "timed out";
      case errc::shutting_down: return "shutting down";
    }
    return "unknown error";
  }
};
#pragma GCC diagnostic pop

// Per pool thread: its connection and when it last failed to connect.
struct thread_state {
  std::unique_ptr<db_session> session;
  std::chrono::steady_clock::time_point last_failure{};
  bool failed_once = false;
};
thread_local thread_state t_state;

// Advisory lock key for migrations: any constant shared by all instances.
constexpr long long migrate_lock_key = 0x4c7570696e65;  // "Lupine"

}  // namespace

const boost::system::error_category& lupine_category() noexcept {
  static const lupine_error_category cat;
  return cat;
}

db_pool::db_pool(db_options opts) : opts_{std::move(opts)}, pool_{opts_.threads} {}

db_pool::~db_pool() {
  stop();
}

void db_pool::stop() {
  if (stopped_.exchange(true)) return;
  pool_.join();
}

db_session* db_pool::session() {
  auto& st = t_state;
  if (st.session && st.session->conn.is_open()) return st.session.get();
  st.session.reset();
  auto now = std::chrono::steady_clock::now();
  if (st.failed_once && now - st.last_failure < opts_.reconnect_interval) return nullptr;
  try {
    auto s = std::make_unique<db_session>(opts_.dsn);
    pqxx::nontransaction tx{s->conn};
    if (opts_.relaxed_commit) tx.exec("SET synchronous_commit = off");
    if (opts_.prefer_index_scans) tx.exec("SET enable_seqscan = off");
    // set_config() rather than SET: the values travel as parameters (SET takes none).
    tx.exec_params("SELECT set_config('statement_timeout', $1, false), set_config('application_name', $2, false)",
                   std::to_string(opts_.statement_timeout.count()), opts_.application_name);
    st.session = std::move(s);
    if (st.failed_once) log(log_level::info, "db_reconnected", "");
    st.failed_once = false;
    return st.session.get();
  } catch (const std::exception& e) {
    if (!st.failed_once) log(log_level::error, "db_connect_failed", "{}", kv("error", e.what()));
    st.failed_once = true;
    st.last_failure = now;
    return nullptr;
  }
}

void db_pool::post_job(std::function<void(db_session&)> body,
                       std::optional<std::chrono::steady_clock::time_point> deadline,
                       std::function<void(boost::system::error_code)> done) {
  if (stopped_.load()) {
    done(make_error_code(errc::shutting_down));
    return;
  }
  boost::asio::post(pool_, [this, body = std::move(body), deadline, done = std::move(done)]() {
    if (deadline && std::chrono::steady_clock::now() >= *deadline) {
      done(make_error_code(errc::timed_out));
      return;
    }
    db_session* s = session();
    if (s == nullptr) {
      done(make_error_code(errc::db_unavailable));
      return;
    }
    boost::system::error_code ec;
    try {
      body(*s);
    } catch (const pqxx::broken_connection& e) {
      log(log_level::error, "db_connection_lost", "{}", kv("error", e.what()));
      t_state.session.reset();
      ec = make_error_code(errc::db_unavailable);
    } catch (const pqxx::sql_error& e) {
      log(log_level::error, "db_statement_failed", "{} {}", kv("error", e.what()), kv("sqlstate", e.sqlstate()));
      auto state = e.sqlstate();
      // 22 data exception, 23 integrity violation, 54 program limit (an index row too big):
      // the same data will fail again, however often it is retried.
      bool data = state.rfind("22", 0) == 0 || state.rfind("23", 0) == 0 || state.rfind("54", 0) == 0;
      ec = make_error_code(data ? errc::db_rejected : errc::db_error);
      if (!s->conn.is_open()) t_state.session.reset();
    } catch (const std::exception& e) {
      log(log_level::error, "db_job_failed", "{}", kv("error", e.what()));
      ec = make_error_code(errc::db_error);
      if (!s->conn.is_open()) t_state.session.reset();
    }
    done(ec);
  });
}

std::unique_ptr<db_session, void (*)(db_session*)> db_connect(const std::string& dsn,
                                                              const std::string& application_name) {
  try {
    auto* s = new db_session{dsn};  // NOLINT: owned by the unique_ptr below at once
    std::unique_ptr<db_session, void (*)(db_session*)> owned{s, [](db_session* p) { delete p; }};
    pqxx::nontransaction tx{owned->conn};
    tx.exec_params("SELECT set_config('application_name', $1, false)", application_name);
    return owned;
  } catch (const pqxx::broken_connection& e) {
    std::string msg = e.what();
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    throw std::runtime_error{fmt::format("cannot connect to the database ({}): {}", dsn, msg)};
  }
}

namespace {

// The migration lock: a session-level advisory lock, held for the object's lifetime.
class migrate_lock {
 public:
  explicit migrate_lock(db_session& s) : s_{s} {
    pqxx::nontransaction tx{s_.conn};
    tx.exec_params("SELECT pg_advisory_lock($1)", migrate_lock_key);
  }
  ~migrate_lock() {
    try {
      pqxx::nontransaction tx{s_.conn};
      tx.exec_params("SELECT pg_advisory_unlock($1)", migrate_lock_key);
    } catch (const std::exception&) {
      // The lock dies with the session anyway.
    }
  }
  migrate_lock(const migrate_lock&) = delete;
  migrate_lock& operator=(const migrate_lock&) = delete;

 private:
  db_session& s_;
};

// version -> (file name, checksum) of the applied migrations; empty without schema_migrations.
using applied_map = std::map<int, std::pair<std::string, std::string>>;

// A server error as one readable line: no "ERROR:" prefix, no PL/pgSQL CONTEXT lines.
std::string trimmed(std::string msg) {
  if (msg.rfind("ERROR:", 0) == 0) msg.erase(0, msg.find_first_not_of(' ', 6));
  if (auto ctx = msg.find("\nCONTEXT:"); ctx != std::string::npos) msg.erase(ctx);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

// Reads schema_migrations (SELECT only: a restricted role can do it). A role that may not
// read it is told what to do instead of getting a bare "permission denied".
applied_map read_applied(db_session& s) {
  applied_map applied;
  try {
    pqxx::nontransaction tx{s.conn};
    if (!tx.exec1("SELECT to_regclass('schema_migrations') IS NOT NULL")[0].as<bool>()) return applied;
    for (const auto& row : tx.exec("SELECT version, name, checksum FROM schema_migrations")) {
      applied[row[0].as<int>()] = {row[1].as<std::string>(), row[2].as<std::string>()};
    }
  } catch (const pqxx::insufficient_privilege& e) {
    throw std::runtime_error{fmt::format(
        "database role \"{}\" may not read schema_migrations ({}): either migrations are pending (run `abusectl db "
        "migrate` as the schema owner) or the role is not a member of lupine_policyd or lupine_abusectl "
        "(docs/operations.md, \"Database roles\")",
        s.conn.username(), trimmed(e.what()))};
  }
  return applied;
}

// Whether the connected role may apply migrations: it has the privileges of the role that
// owns schema_migrations (the schema owner; a superuser has all), or, before the first
// migration, may create tables. Otherwise the reason, naming what to run instead.
std::string may_not_migrate(db_session& s, const applied_map& applied, const std::vector<const migration*>& pending) {
  pqxx::nontransaction tx{s.conn};
  auto r = tx.exec1(
      "SELECT CASE WHEN t.oid IS NULL THEN coalesce(has_schema_privilege(current_schema(), 'CREATE'), false)"
      "            ELSE pg_has_role(current_user, c.relowner, 'USAGE') END,"
      " current_user, coalesce(pg_get_userbyid(c.relowner), ''), coalesce(current_schema(), '')"
      " FROM (SELECT to_regclass('schema_migrations') AS oid) t LEFT JOIN pg_class c ON c.oid = t.oid");
  if (r[0].as<bool>()) return {};
  const auto user = r[1].as<std::string>();
  const auto owner = r[2].as<std::string>();
  std::string names;
  for (const auto* m : pending) names += (names.empty() ? "" : ", ") + m->name;
  if (owner.empty()) {
    return fmt::format(
        "the database has no Lupine schema yet and database role \"{}\" may not create it (no CREATE privilege on "
        "schema \"{}\"): run `abusectl db migrate` as the role that is to own the schema",
        user, r[3].as<std::string>());
  }
  int have = applied.empty() ? 0 : applied.rbegin()->first;
  return fmt::format(
      "the database schema is at version {} and {} {} pending, but database role \"{}\" may not apply migrations "
      "(the schema belongs to \"{}\"): run `abusectl db migrate` as \"{}\" (or a superuser), then start again",
      have, names, pending.size() == 1 ? "is" : "are", user, owner, owner);
}

std::vector<const migration*> pending_of(const std::vector<migration>& all, const applied_map& applied) {
  std::vector<const migration*> out;
  for (const auto& m : all) {
    if (applied.find(m.version) == applied.end()) out.push_back(&m);
  }
  return out;
}

}  // namespace

int schema_version(db_session& s) {
  auto applied = read_applied(s);
  return applied.empty() ? 0 : applied.rbegin()->first;
}

migrate_report migrate(db_session& s, const std::vector<migration>& all) {
  migrate_report rep;
  // Nothing pending, the common start: read only. No lock and no CREATE, so a role with
  // SELECT on schema_migrations alone (lupine_policyd, lupine_abusectl) gets through.
  auto applied = read_applied(s);
  std::optional<migrate_lock> lock;
  if (!pending_of(all, applied).empty()) {
    lock.emplace(s);  // instances starting together take turns; then look again
    applied = read_applied(s);
    if (auto pending = pending_of(all, applied); !pending.empty()) {
      if (auto why = may_not_migrate(s, applied, pending); !why.empty()) throw std::runtime_error{why};
    }
  }
  rep.from_version = applied.empty() ? 0 : applied.rbegin()->first;
  int newest_known = all.empty() ? 0 : all.back().version;
  if (rep.from_version > newest_known) {
    rep.warnings.push_back(fmt::format("database schema version {} is newer than this program knows ({}); upgrade it",
                                       rep.from_version, newest_known));
  }
  for (const auto& m : all) {
    auto sum = fmt::format("{:016x}", fnv1a(m.sql));
    if (auto it = applied.find(m.version); it != applied.end()) {
      if (it->second.second != sum) {
        rep.warnings.push_back(
            fmt::format("{} was changed after it was applied; shipped migrations must never be edited", m.name));
      }
      continue;
    }
    try {
      if (rep.applied.empty() && applied.empty()) {
        pqxx::work tx{s.conn};
        tx.exec(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())");
        tx.commit();
      }
      pqxx::work tx{s.conn};
      tx.exec(m.sql);
      tx.exec_params("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)", m.version, m.name,
                     sum);
      tx.commit();
    } catch (const pqxx::sql_error& e) {
      std::string msg = trimmed(e.what());
      if (e.sqlstate() == "42501") {
        msg += fmt::format(" (database role \"{}\" lacks a privilege: run `abusectl db migrate` as the schema owner)",
                           s.conn.username());
      }
      throw std::runtime_error{fmt::format("migration {} failed, rolled back: {}", m.name, msg)};
    }
    rep.applied.push_back(m.name);
  }
  rep.to_version = std::max(rep.from_version, newest_known);
  return rep;
}

}  // namespace lupine
