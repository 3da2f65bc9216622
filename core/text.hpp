// Small text helpers shared by both programs. Pure; no locale (ASCII rules, as in DNS names
// and SMTP addresses).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace lupine {

// s with A-Z turned into a-z; other bytes unchanged.
std::string ascii_lower(std::string_view s);

// 64-bit FNV-1a of s, starting from basis. Stable across builds and machines (used for
// stored checksums and keys); not a cryptographic hash.
constexpr std::uint64_t fnv1a_basis = 14695981039346656037ULL;
std::uint64_t fnv1a(std::string_view s, std::uint64_t basis = fnv1a_basis);

// Valid UTF-8 copy of s that PostgreSQL accepts: each byte that is not part of a valid
// sequence becomes the text \xNN, so 8-bit envelope data is kept (as evidence, and as
// distinct greylist keys) instead of failing the statement.
std::string to_valid_utf8(std::string_view s);

}  // namespace lupine
