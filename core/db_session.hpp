// The one place where pqxx appears in a header: included only by the .cpp files that
// talk SQL (core/db.cpp, policyd/store.cpp, abusectl's commands). Never include it from
// another header.
#pragma once

#include <pqxx/pqxx>

namespace lupine {

struct db_session {
  explicit db_session(const std::string& dsn) : conn{dsn} {}
  pqxx::connection conn;
};

}  // namespace lupine
