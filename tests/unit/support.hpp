// Helpers shared by the unit tests: a self-removing temporary directory and readable
// renderings for failure messages.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace lupine::test {

// A directory under $TMPDIR (or /tmp), removed with everything in it at scope exit.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    auto pattern = (std::filesystem::temp_directory_path() / "lupine-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error{"mkdtemp failed"};
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string write(const std::string& name, const std::string& text) const {
    auto p = path / name;
    std::ofstream out{p};
    out << text;
    return p.string();
  }
};

// ["a", "b"]
inline std::string show(const std::vector<std::string>& v) {
  std::string out = "[";
  for (const auto& s : v) {
    if (out.size() > 1) out += ", ";
    out += "\"" + s + "\"";
  }
  return out + "]";
}

}  // namespace lupine::test
