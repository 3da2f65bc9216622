// Fuzz target: the config machinery (core/config.hpp) with policyd's key table
// (policyd/config.hpp). The input is written to a memfd once per input and read back by
// read_config_file() through /proc/self/fd (the code under test wants a path), then every key
// is applied and validate() runs; its lines are also parsed as `-o key=value` overrides and
// applied. config_error is the expected outcome for bad input and is caught; any other
// exception escapes and libFuzzer reports it as a crash. Nothing is written to disk.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "fuzz_check.hpp"
#include "policyd/config.hpp"

namespace {

using lupine::config_error;
using lupine::raw_options;
using lupine::policyd::policyd_config;
using lupine::policyd::policyd_options;

// One memfd for the whole process; each input replaces its contents.
const std::string& config_path() {
  static const std::string path = [] {
    int fd = ::memfd_create("lupine-fuzz-config", MFD_CLOEXEC);
    if (fd < 0) {
      std::perror("fuzz_config: memfd_create");
      std::abort();
    }
    return "/proc/self/fd/" + std::to_string(fd);
  }();
  return path;
}

void write_config(std::string_view data) {
  static const int fd = std::stoi(config_path().substr(std::string_view{"/proc/self/fd/"}.size()));
  if (::ftruncate(fd, 0) != 0) {
    std::perror("fuzz_config: ftruncate");
    std::abort();
  }
  std::size_t done = 0;
  while (done < data.size()) {
    auto n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::perror("fuzz_config: pwrite");
      std::abort();
    }
    done += static_cast<std::size_t>(n);
  }
}

const std::vector<std::string>& keys() {
  static const auto k = lupine::option_keys(policyd_options());
  return k;
}

// apply_options() then validate(), as policyd's startup does (app.cpp).
void apply_and_validate(const std::string& source, const raw_options& file, const raw_options& cli) {
  try {
    raw_options effective;
    policyd_config cfg = lupine::apply_options(policyd_options(), source, file, cli, &effective);
    auto problems = lupine::policyd::validate(cfg);
    lupine::fuzz::check(problems.empty() || problems.back() != '\n', "validate: trailing newline", problems);
  } catch (const config_error& e) {
    lupine::fuzz::check(std::string_view{e.what()}.size() > 0, "config_error without a message");
  }
}

std::vector<std::string> lines_of(std::string_view data) {
  std::vector<std::string> out;
  while (!data.empty() && out.size() < 1000) {
    auto nl = data.find('\n');
    out.emplace_back(data.substr(0, nl));
    if (nl == std::string_view::npos) break;
    data.remove_prefix(nl + 1);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};

  // As a config file: policyd skips abusectl's section, everything else unknown is an error.
  write_config(in);
  raw_options file;
  bool file_ok = true;
  try {
    file = lupine::read_config_file(config_path(), keys(), {"abusectl."});
  } catch (const config_error&) {
    file_ok = false;
  }
  if (file_ok) apply_and_validate("fuzz.conf", file, {});

  // As -o overrides, one per line, over the file's values when the file was good.
  raw_options cli;
  try {
    cli = lupine::parse_overrides(lines_of(in), keys());
  } catch (const config_error&) {
    return 0;
  }
  apply_and_validate("-o", file, cli);
  return 0;
}
