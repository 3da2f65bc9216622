#include "core/text.hpp"

#include <doctest/doctest.h>

TEST_SUITE("text") {
  TEST_CASE("ascii_lower lowers only A to Z and keeps other bytes") {
    CHECK(lupine::ascii_lower("MiXeD.Example.ORG") == "mixed.example.org");
    CHECK(lupine::ascii_lower("J\xc3\x89R\xc3\x94ME@x") == "j\xc3\x89r\xc3\x94me@x");
    CHECK(lupine::ascii_lower("") == "");
  }

  TEST_CASE("to_valid_utf8 keeps ASCII and valid UTF-8, and escapes every other byte") {
    CHECK(lupine::to_valid_utf8("plain.ascii+tag@example.org \\N") == "plain.ascii+tag@example.org \\N");
    CHECK(lupine::to_valid_utf8("") == "");
    CHECK(lupine::to_valid_utf8("caf\xc3\xa9 \xf0\x9f\x93\xa7") == "caf\xc3\xa9 \xf0\x9f\x93\xa7");
    CHECK(lupine::to_valid_utf8(std::string_view{"a\0b", 3}) == "a\\x00b");
    CHECK(lupine::to_valid_utf8("caf\xe9") == "caf\\xe9");                // Latin-1
    CHECK(lupine::to_valid_utf8("\xc0\xaf") == "\\xc0\\xaf");             // overlong
    CHECK(lupine::to_valid_utf8("x\xed\xa0\x80") == "x\\xed\\xa0\\x80");  // surrogate
    CHECK(lupine::to_valid_utf8("abc\xe2\x82") == "abc\\xe2\\x82");       // truncated
  }

  TEST_CASE("fnv1a gives the published FNV-1a 64 values and depends on the basis") {
    CHECK(lupine::fnv1a("") == 0xcbf29ce484222325ULL);
    CHECK(lupine::fnv1a("a") == 0xaf63dc4c8601ec8cULL);
    CHECK(lupine::fnv1a("foobar") == 0x85944171f73967e8ULL);
    CHECK(lupine::fnv1a("a", 1) != lupine::fnv1a("a"));
  }
}
