// Structured logging; see log.hpp.
#include "core/log.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>

namespace lupine {
namespace {

std::atomic<int> g_level{static_cast<int>(log_level::info)};
std::atomic<log_sink> g_sink{nullptr};

struct batch_state {
  std::function<void()> schedule;
  fmt::memory_buffer lines;
};
thread_local batch_state t_batch;

constexpr std::size_t batch_bytes = 4096;  // PIPE_BUF: one write(2) on a pipe stays whole

void write_all(const char* p, std::size_t left) {
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

bool under_journal() {
  static const bool yes = std::getenv("JOURNAL_STREAM") != nullptr;
  return yes;
}

std::string_view level_name(log_level lvl) {
  switch (lvl) {
    case log_level::error: return "error";
    case log_level::warning: return "warning";
    case log_level::info: return "info";
    case log_level::debug: return "debug";
  }
  return "info";
}

}  // namespace

void set_log_level(log_level lvl) {
  g_level = static_cast<int>(lvl);
}
log_level current_log_level() {
  return static_cast<log_level>(g_level.load());
}
void set_log_sink(log_sink sink) {
  g_sink = sink;
}

void vlog(log_level lvl, std::string_view event, fmt::string_view f, fmt::format_args args) {
  fmt::memory_buffer buf;
  if (under_journal()) {
    fmt::format_to(std::back_inserter(buf), "<{}>", static_cast<int>(lvl));
  } else {
    auto now = std::chrono::system_clock::now();
    auto t = std::chrono::system_clock::to_time_t(now);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    fmt::format_to(std::back_inserter(buf), "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {} ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms, level_name(lvl));
  }
  buf.append(event);
  if (f.size() != 0) {
    buf.push_back(' ');
    fmt::vformat_to(std::back_inserter(buf), f, args);
  }
  if (auto sink = g_sink.load(); sink != nullptr) {
    sink(lvl, std::string_view{buf.data(), buf.size()});
    return;
  }
  buf.push_back('\n');
  auto& b = t_batch;
  if (!b.schedule) {
    // One write per line so lines from the db threads never interleave.
    write_all(buf.data(), buf.size());
    return;
  }
  if (b.lines.size() + buf.size() > batch_bytes) log_flush();
  if (buf.size() > batch_bytes) {
    write_all(buf.data(), buf.size());
    return;
  }
  bool was_empty = b.lines.size() == 0;
  b.lines.append(std::string_view{buf.data(), buf.size()});
  if (lvl <= log_level::warning) {
    log_flush();  // trouble is written at once
  } else if (was_empty) {
    b.schedule();
  }
}

void log_flush() {
  auto& b = t_batch;
  if (b.lines.size() == 0) return;
  write_all(b.lines.data(), b.lines.size());
  b.lines.clear();
}

void log_batch_this_thread(std::function<void()> schedule) {
  log_flush();
  t_batch.schedule = std::move(schedule);
}

namespace {

bool plain_token(std::string_view v) {
  if (v.empty()) return false;
  for (unsigned char c : v) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) return false;
  }
  return true;
}

void append_quoted(fmt::memory_buffer& out, std::string_view v) {
  if (plain_token(v)) {
    out.append(v);
    return;
  }
  out.push_back('"');
  for (unsigned char c : v) {
    switch (c) {
      case '"': out.append(std::string_view{"\\\""}); break;
      case '\\': out.append(std::string_view{"\\\\"}); break;
      case '\n': out.append(std::string_view{"\\n"}); break;
      case '\r': out.append(std::string_view{"\\r"}); break;
      case '\t': out.append(std::string_view{"\\t"}); break;
      default:
        if (c < ' ' || c == 0x7f) {
          fmt::format_to(std::back_inserter(out), "\\x{:02x}", c);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

}  // namespace

std::string log_quote(std::string_view v) {
  if (plain_token(v)) return std::string{v};
  fmt::memory_buffer out;
  append_quoted(out, v);
  return fmt::to_string(out);
}

void append_log_field(fmt::memory_buffer& out, const log_field& f) {
  out.append(f.key);
  out.push_back('=');
  append_quoted(out, f.value);
}

std::string to_string(const log_field& f) {
  fmt::memory_buffer out;
  append_log_field(out, f);
  return fmt::to_string(out);
}

}  // namespace lupine
