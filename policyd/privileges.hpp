// Dropping root after binding: policyd may be started as root (to bind a privileged port or
// a socket under Postfix's spool), but never serves requests as root.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace lupine::policyd {

// When the process runs as root: gives `own` (and, for directories, their entries) to the
// user, then switches group, supplementary groups and user for good, and checks root
// cannot be regained. Returns an error text (refusing root when user is empty or names
// uid 0, an unknown user or group, a failed call); empty on success. Not root: nothing
// happens (a non-empty user only gets a log line).
std::string drop_privileges(const std::string& user, const std::string& group,
                            const std::vector<std::filesystem::path>& own);

}  // namespace lupine::policyd
