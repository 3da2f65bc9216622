// The one place where pqxx appears in a header: included only by the .cpp files that
// talk SQL (core/db.cpp, policyd/store.cpp, abusectl's commands). Never include it from
// another header.
#pragma once

#include <string>
#include <unordered_set>

#include <pqxx/pqxx>

namespace lupine {

struct db_session {
  explicit db_session(const std::string& dsn) : conn{dsn} {}
  pqxx::connection conn;
  // Per-connection one-time setups already done, by name (e.g. a module's prepared
  // statements). A reconnect makes a new db_session, so they are redone.
  std::unordered_set<std::string> initialized;
};

}  // namespace lupine
