// Who is running abusectl: the actor written into audit rows and changed_by columns.
#pragma once

#include <string>

namespace lupine::abusectl {

// $SUDO_USER when set and not empty (an operator working through sudo), else the login name
// of the effective user (getpwuid(geteuid())), else "uid:N" when the passwd database has no
// entry. Never fails, never empty. XXX: $SUDO_USER is taken on trust, as sudo sets it; the
// database role's privileges, not this name, are what protect the tables.
std::string operator_name();

}  // namespace lupine::abusectl
