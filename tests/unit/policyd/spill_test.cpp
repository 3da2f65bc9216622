// Unit tests for event-log spill segments: the row codec, writing and reading segments,
// the bound on disk use, and what a damaged or half-written segment does.
#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "policyd/spill.hpp"

namespace {

using namespace lupine::policyd;
namespace fs = std::filesystem;

event_row sample(int i) {
  event_row r;
  r.ts = sys_time{std::chrono::microseconds{1795788000123456LL + i}};
  r.policyd = "mx1";
  r.postfix_instance = "inst" + std::to_string(i);
  r.queue_id = "Q" + std::to_string(i);
  r.protocol_state = "RCPT";
  r.client_address = "192.0.2." + std::to_string(i % 250);
  r.helo_name = "tab\there, newline\nand back\\slash\r";
  r.sender = std::string{"bin\x01\xff"} + "@x.example";
  r.recipient = "";
  r.verdict = "defer";
  r.action = "DEFER_IF_PERMIT 4.7.1 Greylisted";
  r.recipient_count = i;
  r.size = 1LL << 40;
  r.score = 2.5 + i;
  r.elapsed_us = 123;
  r.detail = "\\N";
  return r;
}

bool same(const event_row& a, const event_row& b) {
  return a.ts == b.ts && a.policyd == b.policyd && a.postfix_instance == b.postfix_instance &&
         a.queue_id == b.queue_id && a.protocol_state == b.protocol_state && a.client_address == b.client_address &&
         a.client_name == b.client_name && a.reverse_client_name == b.reverse_client_name &&
         a.helo_name == b.helo_name && a.sender == b.sender && a.recipient == b.recipient &&
         a.sasl_username == b.sasl_username && a.sasl_method == b.sasl_method && a.policy_context == b.policy_context &&
         a.verdict == b.verdict && a.action == b.action && a.reason == b.reason && a.detail == b.detail &&
         a.recipient_count == b.recipient_count && a.size == b.size && a.score == b.score &&
         a.elapsed_us == b.elapsed_us;
}

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string t = (fs::temp_directory_path() / "lupine-spill-XXXXXX").string();
    path = ::mkdtemp(t.data());
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("a row survives encoding, specials and binary included, on one line") {
  auto r = sample(7);
  auto line = encode_row(r);
  CHECK(line.find('\n') == std::string::npos);
  event_row back;
  REQUIRE(decode_row(line, back));
  CHECK(same(r, back));
}

TEST_CASE("decode_row refuses bad lines") {
  event_row r;
  CHECK_FALSE(decode_row("", r));
  CHECK_FALSE(decode_row("notanumber", r));
  auto line = encode_row(sample(1));
  CHECK_FALSE(decode_row(line + "\textra", r));
  CHECK_FALSE(decode_row(line.substr(0, line.rfind('\t')), r));
  CHECK_FALSE(decode_row("1\t\\x" + line.substr(line.find('\t', 2)), r));
}

TEST_CASE("segments are written, listed oldest first and read back") {
  temp_dir d;
  spill_store store{d.path / "spill", 1 << 20};
  CHECK((fs::status(d.path / "spill").permissions() & fs::perms::all) == fs::perms::owner_all);
  std::vector<event_row> a{sample(1), sample(2)}, b{sample(3)};
  std::string err;
  auto sa = store.write(a, 1, {}, err);
  auto sb = store.write(b, 2, "mx1/shutdown-1-1", err);
  REQUIRE(sa);
  REQUIRE(sb);
  CHECK(store.bytes() == sa->bytes + sb->bytes);
  // A leftover .tmp (a crash mid-write) is removed, not replayed.
  std::ofstream{d.path / "spill" / "99999999999999999999-000001.spill.tmp"} << "LUPINE-SPILL 1 5\n";

  spill_store again{d.path / "spill", 1 << 20};
  auto found = again.scan();
  REQUIRE(found.size() == 2);
  CHECK(found[0].name == sa->name);
  CHECK(found[0].rows == 2);
  CHECK(found[0].key.empty());
  CHECK(found[1].key == "mx1/shutdown-1-1");
  CHECK_FALSE(fs::exists(d.path / "spill" / "99999999999999999999-000001.spill.tmp"));
  CHECK(again.bytes() == sa->bytes + sb->bytes);

  std::vector<event_row> rows;
  REQUIRE(spill_store::read(found[0].path, rows, err));
  REQUIRE(rows.size() == 2);
  CHECK(same(rows[0], a[0]));
  CHECK(same(rows[1], a[1]));
  again.remove(found[0]);
  CHECK_FALSE(fs::exists(found[0].path));
  CHECK(again.bytes() == sb->bytes);
}

TEST_CASE("the disk bound refuses a segment and leaves nothing behind") {
  temp_dir d;
  spill_store store{d.path, 600};
  std::string err;
  REQUIRE(store.write({sample(1)}, 1, {}, err));
  auto big = std::vector<event_row>(5, sample(2));
  CHECK_FALSE(store.write(big, 2, {}, err));
  CHECK(err.find("spill_max_bytes") != std::string::npos);
  CHECK(store.scan().size() == 1);
}

TEST_CASE("a damaged segment is refused and quarantined, never read as rows") {
  temp_dir d;
  spill_store store{d.path, 1 << 20};
  std::string err;
  auto s = store.write({sample(1), sample(2), sample(3)}, 1, {}, err);
  REQUIRE(s);
  std::vector<event_row> rows;
  SUBCASE("truncated") {
    fs::resize_file(s->path, s->bytes - 30);
  }
  SUBCASE("a changed byte") {
    std::fstream f{s->path, std::ios::in | std::ios::out | std::ios::binary};
    f.seekp(40);
    f.put('#');
  }
  SUBCASE("not a segment") {
    std::ofstream{s->path} << "hello\n";
  }
  CHECK_FALSE(spill_store::read(s->path, rows, err));
  CHECK_FALSE(err.empty());
  store.quarantine(*s);
  CHECK_FALSE(fs::exists(s->path));
  CHECK(fs::exists(fs::path{s->path}.replace_extension(".bad")));
  CHECK(store.scan().empty());
}

TEST_CASE("an unusable spill directory is refused at start") {
  temp_dir d;
  std::ofstream{d.path / "file"} << "x";
  CHECK_THROWS(spill_store{d.path / "file", 1 << 20});
  CHECK_THROWS(spill_store{d.path / "file" / "below", 1 << 20});
}
