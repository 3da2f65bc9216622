// Unit tests for secret files (permission checks) and passwords in connection strings.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/config.hpp"
#include "core/secrets.hpp"

namespace {

namespace fs = std::filesystem;

struct secret_file {
  fs::path path;
  explicit secret_file(const std::string& content, mode_t mode) {
    std::string t = (fs::temp_directory_path() / "lupine-secret-XXXXXX").string();
    int fd = ::mkstemp(t.data());
    REQUIRE(fd >= 0);
    ::close(fd);
    path = t;
    std::ofstream{path} << content;
    ::chmod(path.c_str(), mode);
  }
  ~secret_file() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

}  // namespace

TEST_CASE("a secret file gives its first line, and only when others cannot read it") {
  SUBCASE("0600 and 0640 are accepted; the line ending is not part of the secret") {
    secret_file a{"s3cret\nsecond line\n", 0600};
    CHECK(lupine::read_secret_file(a.path) == "s3cret");
    secret_file b{"pa ss\r\n", 0640};
    CHECK(lupine::read_secret_file(b.path) == "pa ss");
  }
  SUBCASE("readable or writable by others, or writable by the group, is refused, naming the fix") {
    for (mode_t m : {0644, 0604, 0602, 0660, 0666}) {
      secret_file f{"x\n", m};
      CHECK_THROWS_WITH_AS(lupine::read_secret_file(f.path), doctest::Contains("chmod 0600"), lupine::config_error);
    }
  }
  SUBCASE("empty, missing, a directory, a symlink") {
    secret_file e{"\nlater\n", 0600};
    CHECK_THROWS_WITH_AS(lupine::read_secret_file(e.path), doctest::Contains("empty"), lupine::config_error);
    CHECK_THROWS_AS(lupine::read_secret_file("/nonexistent/lupine/pw"), lupine::config_error);
    CHECK_THROWS_AS(lupine::read_secret_file("/"), lupine::config_error);
    secret_file target{"x\n", 0600};
    auto link = fs::path{target.path.string() + ".link"};
    fs::create_symlink(target.path, link);
    CHECK_THROWS_AS(lupine::read_secret_file(link), lupine::config_error);
    fs::remove(link);
  }
}

TEST_CASE("passwords in connection strings: found and added, in both forms") {
  CHECK_FALSE(lupine::dsn_has_password("host=/run/postgresql dbname=lupine"));
  CHECK(lupine::dsn_has_password("host=/tmp dbname=x password=abc"));
  CHECK(lupine::dsn_has_password("postgresql://u:abc@localhost/db"));
  CHECK_FALSE(lupine::dsn_has_password("postgresql://u@localhost/db"));
  CHECK_FALSE(lupine::dsn_has_password("this is = not a dsn '"));

  auto k = lupine::dsn_with_password("host=/tmp dbname=lupine", "it's a \\ secret");
  CHECK(k.find("password='it\\'s a \\\\ secret'") != std::string::npos);
  CHECK(k.find("dbname='lupine'") != std::string::npos);
  CHECK(lupine::dsn_has_password(k));
  auto u = lupine::dsn_with_password("postgresql://mx1@db.example:5433/lupine?sslmode=require", "pw");
  CHECK(u.find("host='db.example'") != std::string::npos);
  CHECK(u.find("port='5433'") != std::string::npos);
  CHECK(u.find("user='mx1'") != std::string::npos);
  CHECK(u.find("sslmode='require'") != std::string::npos);
  CHECK(u.find("password='pw'") != std::string::npos);
  // The file wins over a password already in the string.
  auto w = lupine::dsn_with_password("dbname=x password=old", "new");
  CHECK(w.find("old") == std::string::npos);
  CHECK(w.find("password='new'") != std::string::npos);
  CHECK_THROWS_AS(lupine::dsn_with_password("nonsense '", "pw"), lupine::config_error);
}
