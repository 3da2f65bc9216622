#include "core/text.hpp"

#include <doctest/doctest.h>

TEST_SUITE("text") {
  TEST_CASE("ascii_lower lowers only A to Z and keeps other bytes") {
    CHECK(lupine::ascii_lower("MiXeD.Example.ORG") == "mixed.example.org");
    CHECK(lupine::ascii_lower("J\xc3\x89R\xc3\x94ME@x") == "j\xc3\x89r\xc3\x94me@x");
    CHECK(lupine::ascii_lower("") == "");
  }

  TEST_CASE("fnv1a gives the published FNV-1a 64 values and depends on the basis") {
    CHECK(lupine::fnv1a("") == 0xcbf29ce484222325ULL);
    CHECK(lupine::fnv1a("a") == 0xaf63dc4c8601ec8cULL);
    CHECK(lupine::fnv1a("foobar") == 0x85944171f73967e8ULL);
    CHECK(lupine::fnv1a("a", 1) != lupine::fnv1a("a"));
  }
}
