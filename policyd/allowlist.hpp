// Allow-lists: clients (CIDR, v4 and v6; hostname suffix; /regex/) and senders and
// recipients (address, "user@", domain with its subdomains; /regex/). Loaded from files in
// the postgrey formats (whitelist_clients, whitelist_recipients) and from the database's
// allowlist table; an allowlist value is immutable once built, so the loop swaps a
// shared_ptr on SIGHUP and in-flight requests keep the old one. Matching is pure.
// Client hostnames are matched against client_name, Postfix's *verified* name, as postgrey
// does: an unverified PTR never allow-lists a client.
#pragma once

#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "policyd/net.hpp"

namespace lupine::policyd {

// The longest regular expression accepted (allow-list /regex/ entries, rdns.dynamic_patterns):
// libstdc++ compiles one recursively, one stack frame per nesting level.
constexpr std::size_t max_regex_bytes = 1000;

class policy_request;

class address_list {
 public:
  // "user@example.org", "user@" (any domain, also user+ext@), "example.org" (and
  // subdomains), or "/regex/". Returns an error text or "".
  std::string add(std::string_view entry);
  // The entry that matched, or nullopt.
  std::optional<std::string> match(std::string_view address) const;
  std::size_t size() const { return addresses_.size() + users_.size() + domains_.size() + regexes_.size(); }

 private:
  std::unordered_set<std::string> addresses_, users_, domains_;
  std::vector<std::pair<std::string, std::regex>> regexes_;
};

class client_list {
 public:
  // A CIDR, an address, a partial IPv4 "10.1.", a hostname suffix, or "/regex/" (matched
  // against the verified client name and the address). Returns an error text or "".
  std::string add(std::string_view entry);
  std::string add_cidr(std::string_view entry);
  std::string add_name(std::string_view entry);
  std::optional<std::string> match(std::string_view address, std::string_view verified_name) const;
  std::size_t size() const { return nets_.size() + names_.size() + regexes_.size(); }

 private:
  std::vector<cidr> nets_;
  std::vector<std::string> names_;
  std::vector<std::pair<std::string, std::regex>> regexes_;
};

struct allowlist {
  client_list clients;
  address_list senders;
  address_list recipients;

  // "client 192.0.2.0/24", "recipient postmaster@", ... or nullopt.
  std::optional<std::string> match(const policy_request& req) const;
};

// Reads a postgrey-style file into list (one entry per line, `#` comments). Errors name
// the file and line; a missing file is an error.
std::vector<std::string> load_client_file(const std::string& path, client_list& list);
std::vector<std::string> load_address_file(const std::string& path, address_list& list);

}  // namespace lupine::policyd
