// Structured logging: one logfmt line per event on stderr.
//
// Lines read `event key=value ...`. Under systemd (JOURNAL_STREAM set) each line starts
// with the sd-daemon priority prefix `<N>` and journald adds the time; on a terminal the
// line starts with an ISO time and the level. Values that come from the network must go
// through kv() so that a client cannot forge a line (quotes, newlines, `=` are escaped).
// Thread-safe: one write(2) per line. Never log secrets.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace lupine {

enum class log_level { error = 3, warning = 4, info = 6, debug = 7 };

// Lines above this level are dropped. Default info; each -v raises it to debug.
void set_log_level(log_level lvl);
log_level current_log_level();
// Whether a line at lvl would be written: to skip building one that would not.
inline bool log_enabled(log_level lvl) {
  return static_cast<int>(lvl) <= static_cast<int>(current_log_level());
}

// A sink for tests: when set, lines go here instead of stderr.
using log_sink = void (*)(log_level, std::string_view line);
void set_log_sink(log_sink sink);

void vlog(log_level lvl, std::string_view event, fmt::string_view fmt, fmt::format_args args);

// Batching for a busy thread (policyd's event loop logs a line per request): the calling
// thread's lines collect in a buffer, written by one write(2) when it nears 4 KiB (PIPE_BUF,
// so a write stays whole even on a pipe shared with other threads), at a warning or error,
// or at log_flush(). `schedule` is called when a line enters the empty buffer: it must make
// the thread call log_flush() soon (policyd posts it to the loop: after the handlers already
// queued, so a burst of decisions costs one write and a quiet one is written at once).
// An empty `schedule` turns batching off for the thread, after a flush.
void log_batch_this_thread(std::function<void()> schedule);
void log_flush();

template <typename... Args>
void log(log_level lvl, std::string_view event, fmt::format_string<Args...> f, Args&&... args) {
  if (!log_enabled(lvl)) return;
  vlog(lvl, event, f, fmt::make_format_args(args...));
}

// Quote a value for logfmt: bare when it is a plain token, otherwise in double quotes
// with `"`, `\` and control characters escaped. Empty values become "".
std::string log_quote(std::string_view v);

// key=value with the value quoted as needed, written straight into the line (no string of
// its own: one decision line has ten of them). It refers to its arguments: pass it to log()
// in the same expression, or make a string of it with to_string().
struct log_field {
  std::string_view key;
  std::string_view value;
};
inline log_field kv(std::string_view key, std::string_view value) {
  return log_field{key, value};
}
std::string to_string(const log_field& f);
// Appends key=quoted value.
void append_log_field(fmt::memory_buffer& out, const log_field& f);

}  // namespace lupine

template <>
struct fmt::formatter<lupine::log_field> {
  constexpr auto parse(format_parse_context& ctx) { return ctx.begin(); }
  auto format(const lupine::log_field& f, format_context& ctx) const {
    fmt::memory_buffer buf;
    lupine::append_log_field(buf, f);
    // format_to appends a string_view in one piece (std::copy would push char by char).
    return fmt::format_to(ctx.out(), "{}", std::string_view{buf.data(), buf.size()});
  }
};
