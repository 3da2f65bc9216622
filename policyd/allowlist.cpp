// Allow-list matching and file loading; see allowlist.hpp.
#include "policyd/allowlist.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>

#include <fmt/format.h>

#include "core/text.hpp"
#include "policyd/protocol.hpp"

namespace lupine::policyd {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool is_regex(std::string_view e) {
  return e.size() >= 2 && e.front() == '/' && e.back() == '/';
}

std::string compile(std::string_view e, std::vector<std::pair<std::string, std::regex>>& out) {
  // libstdc++ compiles a regex recursively: a long one could overflow the stack.
  if (e.size() > max_regex_bytes + 2) return fmt::format("regular expression longer than {} bytes", max_regex_bytes);
  try {
    out.emplace_back(std::string{e},
                     std::regex{std::string{e.substr(1, e.size() - 2)},
                                std::regex::ECMAScript | std::regex::icase | std::regex_constants::__polynomial});
    return {};
  } catch (const std::regex_error& err) {
    return fmt::format("bad regular expression: {}", err.what());
  }
}

bool valid_hostname(std::string_view n) {
  if (n.empty() || n.size() > 253) return false;
  return std::all_of(n.begin(), n.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '.' || c == '_'; });
}

// Does name equal suffix or end with "." + suffix?
bool domain_match(std::string_view name, std::string_view suffix) {
  if (name.size() < suffix.size()) return false;
  if (name.substr(name.size() - suffix.size()) != suffix) return false;
  return name.size() == suffix.size() || name[name.size() - suffix.size() - 1] == '.';
}

template <class List>
std::vector<std::string> load_file(const std::string& path, List& list) {
  std::vector<std::string> errors;
  std::ifstream in{path};
  if (!in) {
    errors.push_back(fmt::format("{}: cannot open", path));
    return errors;
  }
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::string_view l = line;
    if (auto hash = l.find('#'); hash != std::string_view::npos) l = l.substr(0, hash);
    l = trim(l);
    if (l.empty()) continue;
    if (auto err = list.add(l); !err.empty()) errors.push_back(fmt::format("{}:{}: {}: {}", path, n, l, err));
  }
  return errors;
}

}  // namespace

std::string address_list::add(std::string_view entry) {
  if (is_regex(entry)) return compile(entry, regexes_);
  auto e = ascii_lower(entry);
  auto at = e.find('@');
  if (at == std::string::npos) {
    if (!valid_hostname(e)) return "expected an address, user@, a domain or /regex/";
    domains_.insert(e);
  } else if (at + 1 == e.size()) {
    if (at == 0) return "empty user name";
    users_.insert(e.substr(0, at));
  } else {
    if (at == 0) return "empty user name";
    addresses_.insert(e);
  }
  return {};
}

std::optional<std::string> address_list::match(std::string_view address) const {
  if (address.empty()) return std::nullopt;
  auto a = ascii_lower(address);
  if (addresses_.count(a) != 0) return a;
  auto at = a.rfind('@');
  std::string_view local = at == std::string::npos ? std::string_view{a} : std::string_view{a}.substr(0, at);
  std::string_view domain = at == std::string::npos ? std::string_view{} : std::string_view{a}.substr(at + 1);
  if (!users_.empty()) {
    if (users_.count(std::string{local}) != 0) return std::string{local} + "@";
    if (auto plus = local.find('+'); plus != std::string_view::npos) {
      if (users_.count(std::string{local.substr(0, plus)}) != 0) return std::string{local.substr(0, plus)} + "@";
    }
  }
  // The domain and each parent domain.
  for (std::string_view d = domain; !d.empty();) {
    if (domains_.count(std::string{d}) != 0) return std::string{d};
    auto dot = d.find('.');
    if (dot == std::string_view::npos) break;
    d.remove_prefix(dot + 1);
  }
  for (const auto& [text, re] : regexes_) {
    if (std::regex_search(a, re)) return text;
  }
  return std::nullopt;
}

std::string client_list::add(std::string_view entry) {
  if (is_regex(entry)) return compile(entry, regexes_);
  if (auto c = parse_cidr(entry)) {
    nets_.push_back(*c);
    return {};
  }
  return add_name(entry);
}

std::string client_list::add_cidr(std::string_view entry) {
  auto c = parse_cidr(entry);
  if (!c) return "expected an address or CIDR";
  nets_.push_back(*c);
  return {};
}

std::string client_list::add_name(std::string_view entry) {
  auto e = ascii_lower(entry);
  if (!e.empty() && e.front() == '.') e.erase(0, 1);
  if (!valid_hostname(e) || e.find('.') == std::string::npos) {
    return "expected an address, CIDR, hostname suffix or /regex/";
  }
  // Every label non-empty, and the last one not all digits: "10..1" or "300.1.2.3" is a
  // mistyped address, not a hostname.
  if (e.find("..") != std::string::npos || e.back() == '.') return "malformed address or hostname";
  auto last = e.substr(e.rfind('.') + 1);
  if (std::all_of(last.begin(), last.end(), [](unsigned char c) { return std::isdigit(c) != 0; })) {
    return "malformed IP address";
  }
  names_.push_back(e);
  return {};
}

std::optional<std::string> client_list::match(std::string_view address, std::string_view verified_name) const {
  if (!nets_.empty()) {
    if (auto a = parse_ip(address)) {
      for (const auto& n : nets_) {
        if (n.contains(*a)) return n.to_string();
      }
    }
  }
  auto name = ascii_lower(verified_name);
  if (!name.empty() && name != "unknown") {
    for (const auto& s : names_) {
      if (domain_match(name, s)) return s;
    }
  }
  for (const auto& [text, re] : regexes_) {
    if ((!name.empty() && name != "unknown" && std::regex_search(name, re)) ||
        std::regex_search(std::string{address}, re)) {
      return text;
    }
  }
  return std::nullopt;
}

std::optional<std::string> allowlist::match(const policy_request& req) const {
  if (auto m = clients.match(req.get("client_address"), req.get("client_name"))) return "client " + *m;
  if (auto m = recipients.match(req.get("recipient"))) return "recipient " + *m;
  if (auto m = senders.match(req.get("sender"))) return "sender " + *m;
  return std::nullopt;
}

std::vector<std::string> load_client_file(const std::string& path, client_list& list) {
  return load_file(path, list);
}

std::vector<std::string> load_address_file(const std::string& path, address_list& list) {
  return load_file(path, list);
}

}  // namespace lupine::policyd
