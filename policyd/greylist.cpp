// Greylisting logic; see greylist.hpp.
#include "policyd/greylist.hpp"

#include <algorithm>
#include <cctype>
#include <vector>
#include "core/text.hpp"

namespace lupine::policyd {
namespace {

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_alnum(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z');
}

// A BATV tag: 10 characters, hex (the usual "KDDDSSSSSS" form).
bool is_batv_tag(std::string_view t) {
  return t.size() == 10 && std::all_of(t.begin(), t.end(), is_hex);
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

// prvs=TAG=local or prvs=local=TAG (both orders exist in the wild).
std::string strip_batv(std::string local) {
  for (std::string_view prefix : {"prvs=", "msprvs1="}) {
    if (!starts_with(local, prefix)) continue;
    std::string_view rest{local};
    rest.remove_prefix(prefix.size());
    auto eq = rest.find('=');
    if (eq == std::string_view::npos) return local;
    auto a = rest.substr(0, eq);
    auto b = rest.substr(eq + 1);
    if (is_batv_tag(a) || !is_batv_tag(b)) return std::string{b};
    return std::string{a};
  }
  if (starts_with(local, "btv1==")) {  // btv1==TAG==local
    auto pos = local.rfind("==");
    if (pos != std::string::npos && pos > 4) return local.substr(pos + 2);
  }
  return local;
}

// SRS0=HHH=TT=domain=local -> srs0=#=#=domain=local; SRS1=HHH=fwd==HHH=TT=domain=local ->
// srs1=#=fwd==#=#=domain=local. The hash and timestamp change on every bounce address.
std::string fold_srs0_fields(std::string_view rest) {  // "HHH=TT=domain=local"
  auto e1 = rest.find('=');
  if (e1 == std::string_view::npos) return std::string{rest};
  auto e2 = rest.find('=', e1 + 1);
  if (e2 == std::string_view::npos) return std::string{rest};
  return "#=#" + std::string{rest.substr(e2)};
}

std::string fold_srs(const std::string& local) {
  if (starts_with(local, "srs0=") || starts_with(local, "srs0+") || starts_with(local, "srs0-")) {
    return "srs0=" + fold_srs0_fields(std::string_view{local}.substr(5));
  }
  if (starts_with(local, "srs1=") || starts_with(local, "srs1+") || starts_with(local, "srs1-")) {
    std::string_view rest = std::string_view{local}.substr(5);
    auto e1 = rest.find('=');
    auto dbl = rest.find("==");
    if (e1 == std::string_view::npos || dbl == std::string_view::npos || dbl < e1) return local;
    auto fwd = rest.substr(e1 + 1, dbl - e1 - 1);
    return "srs1=#=" + std::string{fwd} + "==" + fold_srs0_fields(rest.substr(dbl + 2));
  }
  return local;
}

// Replaces bounce tags, token by token (tokens are runs of letters and digits): a token of
// digits only, a hex token of 8 or more characters mixing digits and letters, and any token
// of 20 or more characters holding a digit become '#'. Ordinary names with digits
// ("user1", "johnsmith1980") stay as they are, so distinct people stay distinct.
std::string fold_tags(const std::string& local) {
  std::string out;
  out.reserve(local.size());
  std::size_t i = 0;
  while (i < local.size()) {
    if (!is_alnum(local[i])) {
      out.push_back(local[i++]);
      continue;
    }
    std::size_t j = i;
    std::size_t digits = 0;
    bool hex = true;
    while (j < local.size() && is_alnum(local[j])) {
      if (is_digit(local[j])) ++digits;
      if (!is_hex(local[j])) hex = false;
      ++j;
    }
    std::string_view tok{local.data() + i, j - i};
    bool all_digits = digits == tok.size();
    bool hex_tag = hex && tok.size() >= 8 && digits > 0 && digits < tok.size();
    bool long_id = tok.size() >= 20 && digits > 0;
    if (all_digits || hex_tag || long_id) {
      out.push_back('#');
    } else {
      out.append(tok);
    }
    i = j;
  }
  return out;
}

}  // namespace

std::string normalize_recipient(std::string_view recipient) {
  return ascii_lower(recipient);
}

std::string normalize_sender(std::string_view sender, std::string_view recipient) {
  if (sender.empty() || sender == "<>") return "<>";
  std::string s = ascii_lower(sender);
  auto at = s.rfind('@');
  std::string local = at == std::string::npos ? s : s.substr(0, at);
  std::string domain = at == std::string::npos ? std::string{} : s.substr(at);  // with '@'
  bool srs = starts_with(local, "srs0") || starts_with(local, "srs1");
  if (srs) {
    local = fold_srs(local);
  } else {
    local = strip_batv(std::move(local));
    if (auto plus = local.find('+'); plus != std::string::npos && plus > 0) local.resize(plus);
    // VERP with the recipient inside: list-bounces-user=example.org@...
    if (auto rat = recipient.rfind('@'); rat != std::string_view::npos) {
      std::string embedded = ascii_lower(recipient.substr(0, rat)) + "=" + ascii_lower(recipient.substr(rat + 1));
      if (auto p = local.find(embedded); p != std::string::npos) local.replace(p, embedded.size(), "#rcpt#");
    }
    local = fold_tags(local);
  }
  return local + domain;
}

std::chrono::milliseconds effective_delay(int attempts, const greylist_params& p) {
  auto early = attempts - 1 - static_cast<int>(p.early_retry_grace);
  if (early <= 0 || p.early_retry_penalty.count() == 0) return p.delay;
  // Never past halfway to the retry window: a triplet must stay able to pass.
  auto cap = std::min(std::max(p.delay, p.max_delay), p.delay + (p.retry_window - p.delay) / 2);
  // Compare before multiplying: attempts may be huge.
  if ((cap - p.delay) / p.early_retry_penalty < early) return cap;
  return std::min(cap, p.delay + p.early_retry_penalty * early);
}

greylist_step_result greylist_step(const std::optional<greylist_entry>& prior, sys_time now, const greylist_params& p) {
  using std::chrono::ceil;
  auto fresh = [&](greylist_outcome o) {
    greylist_step_result r{o, greylist_entry{now, now, std::nullopt, 1}};
    r.wait = std::max(seconds{1}, ceil<seconds>(p.delay));
    return r;
  };
  if (!prior) return fresh(greylist_outcome::first_seen);
  const auto& e = *prior;
  if (e.passed_at) {
    if (now - e.last_seen > p.max_age) return fresh(greylist_outcome::first_seen);
    greylist_step_result r{greylist_outcome::passed_before, e};
    r.entry.last_seen = std::max(e.last_seen, now);
    return r;
  }
  // A first_seen in the future (another instance's clock runs ahead) counts as "just now".
  auto age = std::max<sys_time::duration>(now - e.first_seen, sys_time::duration::zero());
  if (age > p.retry_window) return fresh(greylist_outcome::restarted);
  if (age < effective_delay(e.attempts, p)) {
    greylist_step_result r{greylist_outcome::too_early, e};
    r.entry.last_seen = std::max(e.last_seen, now);
    r.entry.attempts = e.attempts + 1;
    auto d = effective_delay(r.entry.attempts, p);
    r.wait = std::max(seconds{1}, ceil<seconds>(d - age));
    r.penalty = ceil<seconds>(d - p.delay);
    return r;
  }
  greylist_step_result r{greylist_outcome::passed_now, e};
  r.entry.last_seen = now;
  r.entry.passed_at = now;
  r.entry.attempts = e.attempts + 1;
  r.delayed = std::chrono::duration_cast<seconds>(age);
  return r;
}

std::string_view to_string(greylist_outcome o) {
  switch (o) {
    case greylist_outcome::first_seen: return "greylist_new";
    case greylist_outcome::too_early: return "greylist_early_retry";
    case greylist_outcome::restarted: return "greylist_restarted";
    case greylist_outcome::passed_now: return "greylist_passed";
    case greylist_outcome::passed_before: return "greylist_known";
  }
  return "greylist";
}

}  // namespace lupine::policyd
