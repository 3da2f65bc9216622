// Event-log spill segments; see spill.hpp.
#include "policyd/spill.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include <fmt/format.h>

namespace lupine::policyd {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view magic = "LUPINE-SPILL 1";
constexpr std::size_t field_count = 22;

void put_text(std::string& out, std::string_view v) {
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default: out += c;
    }
  }
}

bool get_text(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '\\') {
      out += in[i];
      continue;
    }
    if (++i == in.size()) return false;
    switch (in[i]) {
      case '\\': out += '\\'; break;
      case 't': out += '\t'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      default: return false;
    }
  }
  return true;
}

template <class T>
bool get_number(std::string_view in, T& out) {
  auto [p, ec] = std::from_chars(in.data(), in.data() + in.size(), out);
  return ec == std::errc{} && p == in.data() + in.size();
}

std::uint64_t fnv1a(std::uint64_t h, std::string_view s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}
constexpr std::uint64_t fnv_basis = 14695981039346656037ull;

std::string errno_text(std::string_view what, const fs::path& p) {
  return fmt::format("{} {}: {}", what, p.string(), std::strerror(errno));
}

// Writes all of data to fd; false with errno set on failure (ENOSPC among them).
bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    auto n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// The header: MAGIC ROWS [KEY]. Keys are instance names and numbers: no blanks.
bool parse_header(std::string_view line, std::size_t& rows, std::string& key) {
  if (line.substr(0, magic.size()) != magic || line.size() < magic.size() + 2 || line[magic.size()] != ' ') {
    return false;
  }
  line.remove_prefix(magic.size() + 1);
  auto blank = line.find(' ');
  key = blank == std::string_view::npos ? std::string{} : std::string{line.substr(blank + 1)};
  return get_number(line.substr(0, blank), rows);
}

}  // namespace

std::string encode_row(const event_row& r) {
  std::string out;
  out.reserve(256);
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(r.ts.time_since_epoch()).count();
  out += std::to_string(us);
  for (const std::string* f :
       {&r.policyd, &r.postfix_instance, &r.queue_id, &r.protocol_state, &r.client_address, &r.client_name,
        &r.reverse_client_name, &r.helo_name, &r.sender, &r.recipient, &r.sasl_username, &r.sasl_method,
        &r.policy_context, &r.verdict, &r.action, &r.reason, &r.detail}) {
    out += '\t';
    put_text(out, *f);
  }
  fmt::format_to(std::back_inserter(out), "\t{}\t{}\t{}\t{}", r.recipient_count, r.size, r.score, r.elapsed_us);
  return out;
}

bool decode_row(std::string_view line, event_row& r) {
  std::vector<std::string_view> f;
  f.reserve(field_count);
  std::size_t start = 0;
  for (;;) {
    auto tab = line.find('\t', start);
    f.push_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
    if (tab == std::string_view::npos) break;
    start = tab + 1;
    if (f.size() > field_count) return false;
  }
  if (f.size() != field_count) return false;
  long long us = 0;
  if (!get_number(f[0], us)) return false;
  r.ts = sys_time{std::chrono::duration_cast<sys_time::duration>(std::chrono::microseconds{us})};
  std::size_t i = 1;
  for (std::string* t :
       {&r.policyd, &r.postfix_instance, &r.queue_id, &r.protocol_state, &r.client_address, &r.client_name,
        &r.reverse_client_name, &r.helo_name, &r.sender, &r.recipient, &r.sasl_username, &r.sasl_method,
        &r.policy_context, &r.verdict, &r.action, &r.reason, &r.detail}) {
    if (!get_text(f[i++], *t)) return false;
  }
  return get_number(f[18], r.recipient_count) && get_number(f[19], r.size) && get_number(f[20], r.score) &&
         get_number(f[21], r.elapsed_us);
}

spill_store::spill_store(fs::path dir, std::uintmax_t max_bytes)
    : dir_{std::move(dir)},
      max_bytes_{max_bytes},
      start_us_{
          std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
              .count()} {
  std::error_code ec;
  if (!fs::exists(dir_, ec)) {
    fs::create_directories(dir_, ec);
    if (ec) throw std::runtime_error{fmt::format("cannot create {}: {}", dir_.string(), ec.message())};
    ::chmod(dir_.c_str(), 0700);
  }
  if (!fs::is_directory(dir_, ec)) throw std::runtime_error{fmt::format("{} is not a directory", dir_.string())};
  if (::access(dir_.c_str(), W_OK | X_OK) != 0) throw std::runtime_error{errno_text("cannot write to", dir_)};
}

std::vector<spill_segment> spill_store::scan() {
  std::vector<spill_segment> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator{dir_, ec}) {
    const auto& p = e.path();
    if (p.extension() == ".tmp") {
      fs::remove(p, ec);
      continue;
    }
    if (p.extension() != ".spill" || !e.is_regular_file(ec)) continue;
    spill_segment s;
    s.name = p.filename().string();
    s.path = p;
    s.bytes = e.file_size(ec);
    // A segment whose header cannot be read is still listed, so that its replay fails
    // loudly and quarantines it.
    read_header(p, s.rows, s.key);
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::lock_guard lock{mu_};
  bytes_ = 0;
  for (const auto& s : out) bytes_ += s.bytes;
  return out;
}

bool spill_store::read_header(const fs::path& path, std::size_t& rows, std::string& key) {
  std::ifstream in{path, std::ios::binary};
  std::string line;
  return std::getline(in, line) && parse_header(line, rows, key);
}

std::optional<spill_segment> spill_store::write(const std::vector<event_row>& rows, std::uint64_t seq,
                                                const std::string& key, std::string& error) {
  std::string body;
  body.reserve(rows.size() * 256);
  for (const auto& r : rows) {
    body += encode_row(r);
    body += '\n';
  }
  std::string data = fmt::format("{} {}{}{}\n", magic, rows.size(), key.empty() ? "" : " ", key);
  data += body;
  data += fmt::format("END {} {:016x}\n", rows.size(), fnv1a(fnv_basis, body));

  spill_segment s;
  {
    std::lock_guard lock{mu_};
    if (bytes_ + data.size() > max_bytes_) {
      error = fmt::format("spill directory {} would exceed event_log.spill_max_bytes ({} bytes held, {} more needed)",
                          dir_.string(), bytes_, data.size());
      return std::nullopt;
    }
  }
  s.name = fmt::format("{:020}-{:010}.spill", start_us_, seq);
  s.path = dir_ / s.name;
  s.rows = rows.size();
  s.bytes = data.size();
  s.key = key;
  auto tmp = s.path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = errno_text("cannot create", tmp);
    return std::nullopt;
  }
  bool ok = write_all(fd, data) && ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  if (!ok) {
    errno = saved;
    error = errno_text("cannot write", tmp);
    ::unlink(tmp.c_str());
    return std::nullopt;
  }
  if (::rename(tmp.c_str(), s.path.c_str()) != 0 || !fsync_dir(dir_)) {
    error = errno_text("cannot commit", s.path);
    ::unlink(tmp.c_str());
    ::unlink(s.path.c_str());
    return std::nullopt;
  }
  std::lock_guard lock{mu_};
  bytes_ += s.bytes;
  return s;
}

bool spill_store::read(const fs::path& path, std::vector<event_row>& rows, std::string& error) {
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    error = errno_text("cannot open", path);
    return false;
  }
  std::string line, key;
  std::size_t want = 0;
  if (!std::getline(in, line) || !parse_header(line, want, key)) {
    error = fmt::format("{}: not a spill segment (bad header)", path.string());
    return false;
  }
  rows.clear();
  rows.reserve(want);
  std::uint64_t h = fnv_basis;
  bool ended = false;
  while (std::getline(in, line)) {
    if (line.rfind("END ", 0) == 0) {
      ended = line == fmt::format("END {} {:016x}", rows.size(), h) && rows.size() == want;
      break;
    }
    event_row r;
    if (!decode_row(line, r)) {
      error = fmt::format("{}: bad row {}", path.string(), rows.size() + 1);
      return false;
    }
    h = fnv1a(fnv1a(h, line), "\n");
    rows.push_back(std::move(r));
  }
  if (!ended) {
    error = fmt::format("{}: truncated or damaged (trailer does not match {} rows)", path.string(), rows.size());
    return false;
  }
  return true;
}

void spill_store::remove(const spill_segment& s) {
  std::error_code ec;
  fs::remove(s.path, ec);
  std::lock_guard lock{mu_};
  bytes_ -= std::min(bytes_, s.bytes);
}

void spill_store::quarantine(const spill_segment& s) {
  std::error_code ec;
  auto bad = s.path;
  bad.replace_extension(".bad");
  fs::rename(s.path, bad, ec);
  std::lock_guard lock{mu_};
  bytes_ -= std::min(bytes_, s.bytes);
}

std::uintmax_t spill_store::bytes() const {
  std::lock_guard lock{mu_};
  return bytes_;
}

}  // namespace lupine::policyd
