// The operator's name for audit rows; see operator.hpp.
#include "abusectl/operator.hpp"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include <fmt/format.h>

namespace lupine::abusectl {

std::string operator_name() {
  if (const char* sudo = std::getenv("SUDO_USER"); sudo != nullptr && sudo[0] != '\0') return sudo;
  const uid_t uid = ::geteuid();
  std::vector<char> buf(16384);  // glibc's _SC_GETPW_R_SIZE_MAX hint is 1024; NSS entries fit in this
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr && found->pw_name != nullptr &&
      found->pw_name[0] != '\0') {
    return found->pw_name;
  }
  return fmt::format("uid:{}", uid);
}

}  // namespace lupine::abusectl
