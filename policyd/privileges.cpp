// Dropping root after binding; see privileges.hpp.
#include "policyd/privileges.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/log.hpp"

namespace lupine::policyd {
namespace fs = std::filesystem;

std::string drop_privileges(const std::string& user, const std::string& group, const std::vector<fs::path>& own) {
  if (::geteuid() != 0) {
    if (!user.empty()) log(log_level::info, "server_user_ignored", "{} reason=not_started_as_root", kv("user", user));
    return {};
  }
  if (user.empty()) {
    return "refusing to serve as root: set server.user (for example lupine) to the user policyd should run as "
           "after binding";
  }
  std::vector<char> buf(16384);
  struct passwd pw {};
  struct passwd* found = nullptr;
  if (int rc = ::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found); rc != 0 || found == nullptr) {
    return fmt::format("server.user = {}: no such user", user);
  }
  uid_t uid = pw.pw_uid;
  gid_t gid = pw.pw_gid;
  if (uid == 0) return fmt::format("server.user = {}: that is root; name an unprivileged user", user);
  if (!group.empty()) {
    std::vector<char> gbuf(16384);
    struct group gr {};
    struct group* gfound = nullptr;
    if (int rc = ::getgrnam_r(group.c_str(), &gr, gbuf.data(), gbuf.size(), &gfound); rc != 0 || gfound == nullptr) {
      return fmt::format("server.group = {}: no such group", group);
    }
    gid = gr.gr_gid;
  }
  for (const auto& p : own) {
    std::error_code ec;
    if (!fs::exists(p, ec)) continue;
    if (::lchown(p.c_str(), uid, gid) != 0) {
      return fmt::format("cannot give {} to {}: {}", p.string(), user, std::strerror(errno));
    }
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::directory_iterator{p, ec}) {
        if (::lchown(e.path().c_str(), uid, gid) != 0) {
          return fmt::format("cannot give {} to {}: {}", e.path().string(), user, std::strerror(errno));
        }
      }
    }
  }
  // Group first (root is needed to change it), then the user; glibc applies both to every
  // thread of the process.
  if (::initgroups(user.c_str(), gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
    return fmt::format("cannot switch to {}: {}", user, std::strerror(errno));
  }
  if (::setuid(0) == 0 || ::geteuid() == 0) return "root could be regained after switching user: refusing to run";
  // Changing credentials makes the process non-dumpable: no core file for a crash report,
  // and LeakSanitizer cannot inspect it. The process holds nothing its own user may not see.
  ::prctl(PR_SET_DUMPABLE, 1);
  log(log_level::info, "privileges_dropped", "{} uid={} gid={}", kv("user", user), uid, gid);
  return {};
}

}  // namespace lupine::policyd
