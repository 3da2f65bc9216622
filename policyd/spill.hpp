// Event-log spill files: rows the database could not take yet, kept on local disk until it
// can (DESIGN.md "Storage and the event log": nothing lost).
//
// A segment is one file of rows, oldest first. It is written to NAME.tmp, fsync'd, renamed
// to NAME.spill and the directory fsync'd, so a crash never leaves a half segment under a
// .spill name. Names sort by creation time (microseconds, then a sequence number), which is
// the replay order. The file ends with a trailer (row count and FNV-1a of the rows) that is
// checked on reading; a segment that fails the check is renamed NAME.bad and kept for the
// admin, never silently deleted. NAME is START-SEQ: the store's creation time in microseconds
// and the caller's sequence number, which orders the segments of one run.
//
// Replay is exactly once: the segment's name is recorded in event_log_spill in the same
// transaction as its rows (write_event_rows), so a crash between that commit and the unlink
// only means the file is found again, recognised and removed.
//
// spill_store is used from one thread at a time (the event log's file thread for writes,
// a database thread for replays, never both on one segment).
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policyd/store.hpp"

namespace lupine::policyd {

struct spill_segment {
  std::string name;  // the file name without directory, e.g. 00001764288000123456-000001.spill
  std::filesystem::path path;
  std::size_t rows = 0;
  std::uintmax_t bytes = 0;
  // The name its replay is recorded under in event_log_spill. Empty: INSTANCE/name. A batch
  // whose database write timed out at shutdown (it may still commit) is spilled under the
  // key that write used, so only one of the two is ever stored.
  std::string key;
};

// One row as one line of text (no newline) and back. decode_row() is false on a bad line.
std::string encode_row(const event_row& r);
bool decode_row(std::string_view line, event_row& r);

class spill_store {
 public:
  // dir is created (mode 0700) if missing; max_bytes bounds the segments on disk together.
  // Throws std::runtime_error when dir cannot be created or is not a writable directory.
  spill_store(std::filesystem::path dir, std::uintmax_t max_bytes);

  // The segments already on disk (an earlier run's), oldest first. Leftover .tmp files
  // (a crash mid-write: those rows had not been taken from memory yet) are removed.
  std::vector<spill_segment> scan();

  // Writes rows as a new segment and fsyncs it. On failure: nullopt, and error says why
  // (disk full, the max_bytes bound, permissions); nothing is left behind.
  // seq orders the segments of this run (the caller's order, not the order of writing).
  std::optional<spill_segment> write(const std::vector<event_row>& rows, std::uint64_t seq, const std::string& key,
                                     std::string& error);

  // Reads a segment back; false with error set when it is missing or fails its checks.
  static bool read(const std::filesystem::path& path, std::vector<event_row>& rows, std::string& error);
  // The header's row count and key; false when the file does not start like a segment.
  static bool read_header(const std::filesystem::path& path, std::size_t& rows, std::string& key);

  // After a replay: deletes the file. A segment that failed its checks is renamed .bad.
  void remove(const spill_segment& s);
  void quarantine(const spill_segment& s);

  std::uintmax_t bytes() const;

 private:
  std::filesystem::path dir_;
  std::uintmax_t max_bytes_;
  long long start_us_;     // names this run's segments after every earlier run's
  mutable std::mutex mu_;  // bytes_: written on the file and database threads, read on the loop
  std::uintmax_t bytes_ = 0;
};

}  // namespace lupine::policyd
