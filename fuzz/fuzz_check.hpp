// Shared by the fuzz targets: invariant checks that abort, so libFuzzer keeps the input as a
// crash like any sanitizer report, and a small generator seeded from the input itself, so
// chunk sizes and other choices replay exactly from a saved input. Test code only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace lupine::fuzz {

// Prints what broke (with the offending text, escaped and cut) and aborts.
[[noreturn]] inline void broken(std::string_view what, std::string_view detail = {}) {
  std::fprintf(stderr, "invariant broken: %.*s", static_cast<int>(what.size()), what.data());
  if (!detail.empty()) {
    std::fputs(": '", stderr);
    for (std::size_t i = 0; i < detail.size() && i < 200; ++i) {
      auto c = static_cast<unsigned char>(detail[i]);
      if (c < 0x20 || c >= 0x7f || c == '\\') {
        std::fprintf(stderr, "\\x%02x", c);
      } else {
        std::fputc(c, stderr);
      }
    }
    std::fputs(detail.size() > 200 ? "'..." : "'", stderr);
  }
  std::fputc('\n', stderr);
  std::abort();
}

inline void check(bool ok, std::string_view what, std::string_view detail = {}) {
  if (!ok) broken(what, detail);
}

// xorshift64*, seeded from the input bytes (FNV-1a): deterministic per input.
class input_rng {
 public:
  explicit input_rng(std::string_view data) {
    for (unsigned char c : data) state_ = (state_ ^ c) * 1099511628211ULL;
    if (state_ == 0) state_ = 1;
  }
  std::uint64_t next() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 2685821657736338717ULL;
  }
  // Uniform enough in [lo, hi].
  std::size_t between(std::size_t lo, std::size_t hi) { return lo + static_cast<std::size_t>(next() % (hi - lo + 1)); }

 private:
  std::uint64_t state_ = 14695981039346656037ULL;
};

}  // namespace lupine::fuzz
