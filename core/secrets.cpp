// Secret files and connection strings; see secrets.hpp. libpq's own parser (PQconninfoParse)
// reads connection strings, so both the key=value and the URI forms are understood exactly
// as libpq will (this file and db.cpp are the only ones that see libpq).
#include "core/secrets.hpp"

#include <fcntl.h>
#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "core/config.hpp"

namespace lupine {

namespace {

using conninfo = std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)>;

conninfo parse(std::string_view dsn, std::string* error) {
  char* err = nullptr;
  std::string copy{dsn};
  conninfo opts{PQconninfoParse(copy.c_str(), &err), &PQconninfoFree};
  if (err != nullptr) {
    if (error != nullptr) *error = err;
    PQfreemem(err);
  }
  return opts;
}

std::string quote(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// key='value' for every option set, with password set to `password`.
std::string rebuild(const PQconninfoOption* o, const std::string& password) {
  std::string out;
  bool have_password = false;
  for (; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    std::string_view key = o->keyword;
    std::string_view val = o->val;
    if (key == "password") {
      have_password = true;
      val = password;
    }
    if (!out.empty()) out += ' ';
    out += fmt::format("{}={}", key, quote(val));
  }
  if (!have_password) {
    if (!out.empty()) out += ' ';
    out += "password=" + quote(password);
  }
  return out;
}

}  // namespace

std::string read_secret_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) throw config_error{fmt::format("{}: cannot open: {}", path, std::strerror(errno))};
  struct stat st {};
  std::string problem;
  if (::fstat(fd, &st) != 0) {
    problem = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    problem = "not a regular file";
  } else if ((st.st_mode & (S_IRWXO | S_IWGRP | S_IXGRP)) != 0) {
    problem =
        fmt::format("mode {:04o} lets others read or change it; chmod 0600 (or 0640 for a group the daemon is in)",
                    st.st_mode & 07777);
  } else if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    problem = fmt::format("owned by uid {}, neither root nor this process's user: chown it", st.st_uid);
  }
  std::string data;
  if (problem.empty()) {
    char buf[4096];
    for (;;) {
      auto n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      data.append(buf, static_cast<std::size_t>(n));
      if (data.size() > 64 * 1024) {
        problem = "larger than 64 KiB: not a secret file";
        break;
      }
    }
  }
  ::close(fd);
  if (!problem.empty()) throw config_error{fmt::format("{}: refused: {}", path, problem)};
  auto eol = data.find_first_of("\r\n");
  if (eol != std::string::npos) data.resize(eol);
  if (data.empty()) throw config_error{fmt::format("{}: the first line is empty", path)};
  return data;
}

bool dsn_has_password(std::string_view dsn) {
  auto opts = parse(dsn, nullptr);
  if (!opts) return false;
  for (auto* o = opts.get(); o->keyword != nullptr; ++o) {
    if (std::string_view{o->keyword} == "password" && o->val != nullptr && o->val[0] != '\0') return true;
  }
  return false;
}

std::string dsn_with_password(std::string_view dsn, const std::string& password) {
  std::string error;
  auto opts = parse(dsn, &error);
  if (!opts) throw config_error{"database: " + error};
  return rebuild(opts.get(), password);
}

}  // namespace lupine
