// Secrets: read from files whose permissions are checked, never taken from the command
// line, never logged. The database password is the one policyd and abusectl need today
// (db.password_file); the same reader serves any later key file.
#pragma once

#include <string>
#include <string_view>

namespace lupine {

// The first line of path (without its line ending). Throws config_error, naming the file
// and the fix, when it is not a regular file, when anyone but its owner (and its group,
// read only) can read or write it, when its owner is neither root nor the effective user,
// or when the line is empty.
std::string read_secret_file(const std::string& path);

// Whether a libpq connection string (key=value or URI) carries a password. False when it
// does not parse (libpq reports that itself at connect time).
bool dsn_has_password(std::string_view dsn);

// The same connection string in key=value form with password set (quoted and escaped).
// Throws config_error when dsn does not parse.
std::string dsn_with_password(std::string_view dsn, const std::string& password);

}  // namespace lupine
