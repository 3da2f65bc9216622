// abusectl case open|import|show|list|export and abusectl verify: the complaint side of an
// investigation (docs/abusectl.md).
//
// open/import read every file and parse every copy before touching the database: a
// missing or unparsable file changes nothing. The copies are stored byte for byte with
// their SHA-256, their header block and what parse_message found (our submission hop's
// queue id, authenticated sender, client address and time). When --account is not given
// and every copy names the same authenticated sender, that is the case's account.
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <boost/program_options.hpp>

#include "abusectl/commands.hpp"
#include "abusectl/eml.hpp"
#include "abusectl/operator.hpp"
#include "abusectl/output.hpp"
#include "abusectl/settings.hpp"
#include "abusectl/stats.hpp"
#include "abusectl/verify.hpp"
#include "core/config.hpp"
#include "core/db.hpp"
#include "core/db_session.hpp"
#include "core/text.hpp"

namespace lupine::abusectl {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr std::size_t max_file_bytes = 50u << 20;

struct copy {
  std::string file;  // base name
  int part = 0;
  std::string raw;
  parsed_message parsed;
};

std::string iso(const std::optional<sys_time>& t) {
  if (!t) return {};
  auto secs = std::chrono::system_clock::to_time_t(*t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::optional<std::string> opt(const std::string& s) {
  if (s.empty()) return std::nullopt;
  return s;
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

// Reads and parses every file; "" or the reason nothing may be imported.
std::string load_copies(const std::vector<std::string>& files, const settings& cfg, std::vector<copy>& out) {
  for (const auto& f : files) {
    std::error_code ec;
    auto size = fs::file_size(f, ec);
    if (ec) return fmt::format("cannot read {}: {}", f, ec.message());
    if (size > max_file_bytes) return fmt::format("{}: larger than {} MB", f, max_file_bytes >> 20);
    std::ifstream in{f, std::ios::binary};
    if (!in) return fmt::format("cannot read {}", f);
    std::ostringstream ss;
    ss << in.rdbuf();
    std::string raw = ss.str();
    std::string err;
    auto parts = extract_messages(raw, err);
    if (!err.empty() || parts.empty()) return fmt::format("{}: {}", f, err.empty() ? "no message in it" : err);
    bool attached = parts.size() > 1 || parts.front() != raw;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      copy c;
      c.file = fs::path{f}.filename().string();
      c.part = attached ? static_cast<int>(i + 1) : 0;
      c.raw = std::move(parts[i]);
      c.parsed = parse_message(c.raw, cfg.our_hosts, err);
      if (!err.empty()) {
        return fmt::format("{}{}: cannot parse: {}", f, attached ? fmt::format(" (copy {})", i + 1) : "", err);
      }
      out.push_back(std::move(c));
    }
  }
  return {};
}

void insert_copies(pqxx::work& tx, long long case_id, const std::vector<copy>& copies, const std::string& actor) {
  for (const auto& c : copies) {
    const auto& p = c.parsed;
    tx.exec_params(
        "INSERT INTO case_message (case_id, file_name, part, sha256, raw, headers, message_id, msg_date,"
        " from_header, to_header, subject, envelope_from, queue_id, sasl_user, client_ip, received_at, notes,"
        " imported_by) VALUES ($1, $2, $3, encode(sha256($4::bytea), 'hex'), $4::bytea, $5, $6, $7::timestamptz,"
        " $8, $9, $10, $11, $12, $13, $14, $15::timestamptz, $16, $17)",
        case_id, c.file, c.part, pqxx::binarystring{c.raw}, to_valid_utf8(p.headers), opt(to_valid_utf8(p.message_id)),
        opt(iso(p.date)), opt(to_valid_utf8(p.from)), opt(to_valid_utf8(p.to)), opt(to_valid_utf8(p.subject)),
        opt(to_valid_utf8(p.envelope_from)), opt(p.queue_id), opt(ascii_lower(p.sasl_user)), opt(p.client_ip),
        opt(iso(p.received_at)), to_valid_utf8(join(p.notes, "\n")), actor);
  }
}

void print_import(const std::vector<copy>& copies) {
  for (const auto& c : copies) {
    const auto& p = c.parsed;
    std::cout << fmt::format(
        "  {}{}: {}", c.file, c.part > 0 ? fmt::format(" copy {}", c.part) : "",
        p.has_our_hop ? fmt::format("queue id {} from {} by {}", p.queue_id.empty() ? "-" : p.queue_id,
                                    p.client_ip.empty() ? "-" : p.client_ip, p.sasl_user.empty() ? "-" : p.sasl_user)
                      : std::string{"no Received header by our hosts"});
    std::cout << "\n";
    for (const auto& n : p.notes) std::cout << "    note: " << printable(n) << "\n";
  }
}

struct parsed_args {
  po::variables_map vm;
  std::vector<std::string> positional;
};

int parse(const char* name, po::options_description& desc, const std::vector<std::string>& args, parsed_args& out) {
  return parse_args(name, desc, args, out.vm, out.positional);
}

bool case_number(const char* name, const std::string& text, long long& id) {
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc{} || p != text.data() + text.size() || id <= 0) {
    std::cerr << fmt::format("abusectl {}: bad case number '{}'\n", name, printable(text));
    return false;
  }
  return true;
}

int case_open(const global_options& g, const std::vector<std::string>& args, bool import) {
  const char* name = import ? "case import" : "case open";
  po::options_description desc{import ? "Usage: abusectl case import N FILE...\n\nAdd spam copies to case N.\n\nOptions"
                                      : "Usage: abusectl case open --reporter WHO [--account LOGIN] [--summary TEXT] "
                                        "[FILE...]\n\nRecord a complaint and import its spam copies (.eml files, or a "
                                        "mail with\nmessage/rfc822 attachments).\n\nOptions"};
  desc.add_options()("help,h", "show this help")("json", "print the outcome as one JSON object");
  if (!import) {
    desc.add_options()("reporter", po::value<std::string>()->value_name("WHO"), "who complained (required)")(
        "account", po::value<std::string>()->value_name("LOGIN"), "the account named (default: from the copies)")(
        "summary", po::value<std::string>()->value_name("TEXT"), "free text");
  }
  parsed_args a;
  if (int rc = parse(name, desc, args, a); rc >= 0) return rc;
  long long case_id = 0;
  std::vector<std::string> files = a.positional;
  if (import) {
    if (files.size() < 2) {
      std::cerr << "abusectl case import: usage: abusectl case import N FILE...\n";
      return exit_usage;
    }
    if (!case_number(name, files.front(), case_id)) return exit_usage;
    files.erase(files.begin());
  } else if (a.vm.count("reporter") == 0 || a.vm["reporter"].as<std::string>().empty()) {
    std::cerr << "abusectl case open: --reporter is required (who complained)\n";
    return exit_usage;
  }
  try {
    auto cfg = load_settings(g);
    std::vector<copy> copies;
    if (auto err = load_copies(files, cfg, copies); !err.empty()) {
      std::cerr << fmt::format("abusectl {}: {}: nothing changed\n", name, one_line(err));
      return exit_failed;
    }
    std::string account = a.vm.count("account") != 0 ? ascii_lower(a.vm["account"].as<std::string>()) : "";
    std::set<std::string> senders;
    for (const auto& c : copies) {
      if (!c.parsed.sasl_user.empty()) senders.insert(ascii_lower(c.parsed.sasl_user));
    }
    bool found_account = account.empty() && senders.size() == 1 && !import;
    if (found_account) account = *senders.begin();
    auto actor = operator_name();
    auto s = db_connect(cfg.database, "lupine-abusectl");
    pqxx::work tx{s->conn};
    if (import) {
      auto r = tx.exec_params("SELECT coalesce(account, '') FROM abuse_case WHERE id = $1 FOR UPDATE", case_id);
      if (r.empty()) {
        std::cerr << fmt::format("abusectl case import: no case {}\n", case_id);
        return exit_failed;
      }
      account = r[0][0].as<std::string>();  // the audit row names the case's account
    } else {
      case_id =
          tx.exec_params1(
                "INSERT INTO abuse_case (account, reporter, summary, opened_by) VALUES ($1, $2, $3, $4) RETURNING id",
                opt(account), a.vm["reporter"].as<std::string>(),
                a.vm.count("summary") != 0 ? a.vm["summary"].as<std::string>() : std::string{}, actor)[0]
              .as<long long>();
    }
    insert_copies(tx, case_id, copies, actor);
    tx.exec_params(
        "INSERT INTO audit (actor, action, login, case_id, old_value, new_value, reason)"
        " VALUES ($1, $2, $3, $4, NULL, $5, $6)",
        actor, import ? "case_import" : "case_open", opt(account), case_id,
        fmt::format("{} cop{}", copies.size(), copies.size() == 1 ? "y" : "ies"),
        import ? join(files, " ") : a.vm["reporter"].as<std::string>());
    tx.commit();
    if (a.vm.count("json") != 0) {
      std::string list;
      for (const auto& c : copies) {
        std::string notes;
        for (const auto& n : c.parsed.notes) notes += (notes.empty() ? "" : ", ") + json_string(n);
        list += fmt::format(
            "{}{{\"file\": {}, \"part\": {}, \"our_hop\": {}, \"queue_id\": {}, \"sasl_user\": {}, "
            "\"client_ip\": {}, \"notes\": [{}]}}",
            list.empty() ? "" : ", ", json_string(c.file), c.part, c.parsed.has_our_hop ? "true" : "false",
            json_string(c.parsed.queue_id), json_string(c.parsed.sasl_user), json_string(c.parsed.client_ip), notes);
      }
      std::cout << fmt::format("{{\"case\": {}, \"account\": {}, \"copies\": [{}]}}\n", case_id,
                               account.empty() ? std::string{"null"} : json_string(account), list);
      return exit_ok;
    }
    std::cout << fmt::format("case {}{}: {} cop{} imported{}\n", case_id, import ? "" : " opened", copies.size(),
                             copies.size() == 1 ? "y" : "ies",
                             found_account     ? fmt::format("; account {} (from the copies)", account)
                             : account.empty() ? std::string{"; no account yet"}
                                               : fmt::format("; account {}", account));
    print_import(copies);
    return exit_ok;
  } catch (const std::exception& e) {
    std::cerr << fmt::format("abusectl {}: {}\n", name, one_line(e.what()));
    return exit_failed;
  }
}

int case_list(const global_options& g, const std::vector<std::string>& args) {
  po::options_description desc{"Usage: abusectl case list [--state STATE] [--account LOGIN] [--json]\n\nOptions"};
  desc.add_options()("help,h", "show this help")("state", po::value<std::string>()->value_name("STATE"),
                                                 "open, restricted, terminated or restored")(
      "account", po::value<std::string>()->value_name("LOGIN"), "cases about this account")("json", "JSON output");
  parsed_args a;
  if (int rc = parse("case list", desc, args, a); rc >= 0) return rc;
  std::optional<std::string> state;
  if (a.vm.count("state") != 0) {
    state = a.vm["state"].as<std::string>();
    if (*state != "open" && *state != "restricted" && *state != "terminated" && *state != "restored") {
      std::cerr << fmt::format("abusectl case list: bad --state '{}'\n", printable(*state));
      return exit_usage;
    }
  }
  std::optional<std::string> account;
  if (a.vm.count("account") != 0) account = ascii_lower(a.vm["account"].as<std::string>());
  try {
    auto cfg = load_settings(g);
    auto s = db_connect(cfg.database, "lupine-abusectl");
    pqxx::read_transaction tx{s->conn};
    auto r = tx.exec_params(
        "SELECT c.id::text, c.state, c.account, c.reporter,"
        " to_char(c.opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), c.opened_by,"
        " (SELECT count(*) FROM case_message m WHERE m.case_id = c.id)::text, c.summary"
        " FROM abuse_case c WHERE ($1::text IS NULL OR c.state = $1) AND ($2::text IS NULL OR c.account = $2)"
        " ORDER BY c.id",
        state, account);
    listing l;
    l.columns = {{"id", true},  {"state"},     {"account"},      {"reporter"},
                 {"opened_at"}, {"opened_by"}, {"copies", true}, {"summary"}};
    for (const auto& row : r) {
      std::vector<cell> cells;
      for (const auto& f : row) cells.push_back(field_cell(f));
      l.rows.push_back(std::move(cells));
    }
    if (a.vm.count("json") != 0) {
      print_json(std::cout, l);
    } else if (l.rows.empty()) {
      std::cout << "no cases\n";
    } else {
      print_table(std::cout, l);
    }
    return exit_ok;
  } catch (const std::exception& e) {
    std::cerr << fmt::format("abusectl case list: {}\n", one_line(e.what()));
    return exit_failed;
  }
}

// The case as JSON: the case row, its copies (parsed fields, headers), its audit trail, the
// verdicts. With raw, each copy's original bytes are left out (the export writes files).
std::string case_json(pqxx::transaction_base& tx, long long id, const std::vector<copy_verdict>& verdicts) {
  auto c = tx.exec_params(
      "SELECT id, state, account, reporter, summary, opened_by,"
      " to_char(opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), closed_by,"
      " to_char(closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
      " FROM abuse_case WHERE id = $1",
      id);
  auto js = [](const pqxx::field& f) { return f.is_null() ? std::string{"null"} : json_string(f.c_str()); };
  const auto& r = c[0];
  std::string out = fmt::format(
      "{{\"id\": {}, \"state\": {}, \"account\": {}, \"reporter\": {}, \"summary\": {}, \"opened_by\": {}, "
      "\"opened_at\": {}, \"closed_by\": {}, \"closed_at\": {},\n \"copies\": [",
      r[0].c_str(), js(r[1]), js(r[2]), js(r[3]), js(r[4]), js(r[5]), js(r[6]), js(r[7]), js(r[8]));
  auto m = tx.exec_params(
      "SELECT id, file_name, part, sha256, message_id,"
      " to_char(msg_date AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), from_header, to_header, subject,"
      " envelope_from, queue_id, sasl_user, client_ip,"
      " to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), notes, headers, imported_by,"
      " to_char(imported_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
      " FROM case_message WHERE case_id = $1 ORDER BY id",
      id);
  bool first = true;
  for (const auto& row : m) {
    const copy_verdict* v = nullptr;
    for (const auto& x : verdicts) {
      if (x.message_id == row[0].as<long long>()) v = &x;
    }
    std::string checks;
    if (v != nullptr) {
      for (const auto& ch : v->checks) {
        checks += fmt::format("{}{{\"check\": {}, \"status\": {}, \"detail\": {}}}", checks.empty() ? "" : ", ",
                              json_string(ch.what), json_string(ch.status), json_string(ch.detail));
      }
    }
    out += fmt::format(
        "{}\n  {{\"id\": {}, \"file\": {}, \"part\": {}, \"sha256\": {}, \"message_id\": {}, \"date\": {}, "
        "\"from\": {}, \"to\": {}, \"subject\": {}, \"envelope_from\": {}, \"queue_id\": {}, \"sasl_user\": {}, "
        "\"client_ip\": {}, \"received_at\": {}, \"notes\": {}, \"imported_by\": {}, \"imported_at\": {}, "
        "\"matched\": {}, \"verdict\": {}, \"checks\": [{}], \"headers\": {}}}",
        first ? "" : ",", row[0].c_str(), js(row[1]), row[2].c_str(), js(row[3]), js(row[4]), js(row[5]), js(row[6]),
        js(row[7]), js(row[8]), js(row[9]), js(row[10]), js(row[11]), js(row[12]), js(row[13]), js(row[14]),
        js(row[16]), js(row[17]), v != nullptr && v->matched ? "true" : "false",
        v != nullptr ? json_string(v->summary) : "null", checks, js(row[15]));
    first = false;
  }
  out += "],\n \"audit\": [";
  auto au = tx.exec_params(
      "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), actor, action, login, old_value,"
      " new_value, reason FROM audit WHERE case_id = $1 ORDER BY id",
      id);
  first = true;
  for (const auto& row : au) {
    out += fmt::format(
        "{}\n  {{\"id\": {}, \"at\": {}, \"actor\": {}, \"action\": {}, \"login\": {}, \"old_value\": {}, "
        "\"new_value\": {}, \"reason\": {}}}",
        first ? "" : ",", row[0].c_str(), js(row[1]), js(row[2]), js(row[3]), js(row[4]), js(row[5]), js(row[6]),
        js(row[7]));
    first = false;
  }
  out += "]}";
  return out;
}

int case_show(const global_options& g, const std::vector<std::string>& args) {
  po::options_description desc{"Usage: abusectl case show N [--json]\n\nOptions"};
  desc.add_options()("help,h", "show this help")("json", "JSON output");
  parsed_args a;
  if (int rc = parse("case show", desc, args, a); rc >= 0) return rc;
  long long id = 0;
  if (a.positional.size() != 1) {
    std::cerr << "abusectl case show: usage: abusectl case show N [--json]\n";
    return exit_usage;
  }
  if (!case_number("case show", a.positional.front(), id)) return exit_usage;
  try {
    auto cfg = load_settings(g);
    auto s = db_connect(cfg.database, "lupine-abusectl");
    pqxx::read_transaction tx{s->conn};
    auto c = tx.exec_params(
        "SELECT state, coalesce(account, '-'), reporter, summary, opened_by,"
        " to_char(opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), coalesce(closed_by, ''),"
        " coalesce(to_char(closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')"
        " FROM abuse_case WHERE id = $1",
        id);
    if (c.empty()) {
      std::cerr << fmt::format("abusectl case show: no case {}\n", id);
      return exit_failed;
    }
    auto verdicts = verify_case(tx, id);
    if (a.vm.count("json") != 0) {
      std::cout << case_json(tx, id, verdicts) << "\n";
      return exit_ok;
    }
    const auto& r = c[0];
    std::cout << fmt::format("case {}  {}  account {}\nreported by {}; opened by {} at {}{}\n", id, r[0].c_str(),
                             r[1].c_str(), printable(r[2].c_str()), r[4].c_str(), r[5].c_str(),
                             std::string_view{r[6].c_str()}.empty()
                                 ? std::string{}
                                 : fmt::format("; closed by {} at {}", r[6].c_str(), r[7].c_str()));
    if (!std::string_view{r[3].c_str()}.empty()) std::cout << "summary: " << printable(r[3].c_str()) << "\n";
    std::cout << fmt::format("\ncopies ({}):\n", verdicts.size());
    for (const auto& v : verdicts) {
      std::cout << fmt::format("  #{} {}{}: {} - {}\n", v.message_id, printable(v.file),
                               v.part > 0 ? fmt::format(" copy {}", v.part) : "", v.matched ? "matched" : "not matched",
                               printable(v.summary));
    }
    auto au = tx.exec_params(
        "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), actor, action,"
        " coalesce(old_value, '-'), coalesce(new_value, '-'), reason FROM audit WHERE case_id = $1 ORDER BY id",
        id);
    std::cout << "\naudit:\n";
    for (const auto& row : au) {
      std::cout << fmt::format("  {} {} {}: {} -> {}{}\n", row[0].c_str(), printable(row[1].c_str()), row[2].c_str(),
                               printable(row[3].c_str()), printable(row[4].c_str()),
                               std::string_view{row[5].c_str()}.empty() ? "" : "  (" + printable(row[5].c_str()) + ")");
    }
    return exit_ok;
  } catch (const std::exception& e) {
    std::cerr << fmt::format("abusectl case show: {}\n", one_line(e.what()));
    return exit_failed;
  }
}

int case_export(const global_options& g, const std::vector<std::string>& args) {
  po::options_description desc{
      "Usage: abusectl case export N --out DIR\n\nWrite the evidence bundle of case N into DIR/case-N/: case.json (the "
      "case, its audit\ntrail, each copy's parsed headers and verdict, the matching event-log rows) and the\noriginal "
      "copies as copy-ID.eml, with SHA256SUMS.\n\nOptions"};
  desc.add_options()("help,h", "show this help")("out", po::value<std::string>()->value_name("DIR"),
                                                 "where to write (required)");
  parsed_args a;
  if (int rc = parse("case export", desc, args, a); rc >= 0) return rc;
  long long id = 0;
  if (a.positional.size() != 1 || a.vm.count("out") == 0) {
    std::cerr << "abusectl case export: usage: abusectl case export N --out DIR\n";
    return exit_usage;
  }
  if (!case_number("case export", a.positional.front(), id)) return exit_usage;
  fs::path dir = fs::path{a.vm["out"].as<std::string>()} / fmt::format("case-{}", id);
  try {
    auto cfg = load_settings(g);
    auto s = db_connect(cfg.database, "lupine-abusectl");
    if (fs::exists(dir)) {
      std::cerr << fmt::format("abusectl case export: {} exists: nothing written\n", dir.string());
      return exit_failed;
    }
    // The account's statistics from a week before the first copy (or the case) until now.
    std::string stats = "null";
    {
      std::string account;
      std::optional<long long> from;
      {
        pqxx::read_transaction tx{s->conn};
        auto c = tx.exec_params(
            "SELECT coalesce(c.account, ''), extract(epoch FROM least(c.opened_at, (SELECT min(coalesce(m.received_at,"
            " m.imported_at)) FROM case_message m WHERE m.case_id = c.id)))::bigint FROM abuse_case c WHERE c.id = $1",
            id);
        if (c.empty()) {
          std::cerr << fmt::format("abusectl case export: no case {}\n", id);
          return exit_failed;
        }
        account = c[0][0].as<std::string>();
        if (!c[0][1].is_null()) from = c[0][1].as<long long>();
      }
      if (!account.empty()) {
        auto progress = [](std::string_view note) {
          if (::isatty(STDERR_FILENO) != 0) std::cerr << note << "\n";
        };
        stats_request req;
        req.account = account;
        req.until = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
        req.since = (from ? std::chrono::system_clock::time_point{std::chrono::seconds{*from}} : req.until) -
                    std::chrono::hours{24 * 7};
        if (auto st = compute_stats(*s, req, progress)) {
          stats = stats_json(*st);
          while (!stats.empty() && stats.back() == '\n') stats.pop_back();
        }
      }
    }
    pqxx::read_transaction tx{s->conn};
    auto verdicts = verify_case(tx, id);
    std::string json = case_json(tx, id, verdicts);
    // The event-log rows of every matched transaction.
    std::string rows = "[";
    bool first = true;
    std::set<std::pair<std::string, std::string>> written;  // a transaction several copies match: once
    for (const auto& v : verdicts) {
      // Only what the copies were matched to: a bundle must not carry other people's mail records.
      if (!v.matched || v.instance.empty() || !written.emplace(v.policyd, v.instance).second) continue;
      auto r = tx.exec_params(
          "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS ts, policyd, postfix_instance,"
          " queue_id, protocol_state, host(client_address) AS client_address, client_name, helo_name, sender, "
          "recipient,"
          " recipient_count, size, sasl_username, verdict, action, reason, detail"
          " FROM event_log WHERE policyd = $1 AND postfix_instance = $2 ORDER BY ts",
          v.policyd, v.instance);
      for (const auto& row : r) {
        std::string obj = "{";
        for (std::size_t i = 0; i < row.size(); ++i) {
          obj +=
              fmt::format("{}{}: {}", i == 0 ? "" : ", ", json_string(r.column_name(static_cast<int>(i))),
                          row[static_cast<int>(i)].is_null() ? "null" : json_string(row[static_cast<int>(i)].c_str()));
        }
        rows += fmt::format("{}\n  {}}}", first ? "" : ",", obj);
        first = false;
      }
    }
    rows += "]";
    auto copies = tx.exec_params("SELECT id, raw, sha256 FROM case_message WHERE case_id = $1 ORDER BY id", id);
    fs::create_directories(dir);
    std::string sums;
    for (const auto& row : copies) {
      pqxx::binarystring raw{row[1]};
      auto file = fmt::format("copy-{}.eml", row[0].c_str());
      std::ofstream out{dir / file, std::ios::binary};
      out.write(raw.get(), static_cast<std::streamsize>(raw.size()));
      if (!out) throw std::runtime_error{"cannot write " + (dir / file).string()};
      sums += fmt::format("{}  {}\n", row[2].c_str(), file);
    }
    {
      std::ofstream out{dir / "case.json"};
      json.pop_back();  // the closing brace: the log rows go inside
      out << json << ",\n \"event_log\": " << rows << ",\n \"statistics\": " << stats
          << ",\n \"exported_by\": " << json_string(operator_name()) << "}\n";
      if (!out) throw std::runtime_error{"cannot write " + (dir / "case.json").string()};
    }
    {
      std::ofstream out{dir / "SHA256SUMS"};
      out << sums;
    }
    std::cout << fmt::format("case {} exported to {} ({} cop{})\n", id, dir.string(), copies.size(),
                             copies.size() == 1 ? "y" : "ies");
    return exit_ok;
  } catch (const std::exception& e) {
    std::cerr << fmt::format("abusectl case export: {}\n", one_line(e.what()));
    return exit_failed;
  }
}

}  // namespace

int cmd_case(const global_options& g, const std::vector<std::string>& args) {
  static const char* usage =
      "Usage: abusectl case open|import|show|list|export ...\n\n"
      "  open --reporter WHO [--account LOGIN] [--summary TEXT] [FILE...]   record a complaint\n"
      "  import N FILE...                                                  add spam copies\n"
      "  show N [--json]                                                   the case, copies, verdicts, audit\n"
      "  list [--state STATE] [--account LOGIN] [--json]\n"
      "  export N --out DIR                                                the evidence bundle\n"
      "\n`abusectl case ACTION --help` for each.\n";
  if (args.empty() || args.front() == "--help" || args.front() == "-h") {
    (args.empty() ? std::cerr : std::cout) << usage;
    return args.empty() ? exit_usage : exit_ok;
  }
  std::vector<std::string> rest{args.begin() + 1, args.end()};
  const auto& action = args.front();
  if (action == "open") return case_open(g, rest, false);
  if (action == "import") return case_open(g, rest, true);
  if (action == "show") return case_show(g, rest);
  if (action == "list") return case_list(g, rest);
  if (action == "export") return case_export(g, rest);
  std::cerr << fmt::format("abusectl case: unknown action '{}'\n{}", printable(action), usage);
  return exit_usage;
}

int cmd_verify(const global_options& g, const std::vector<std::string>& args) {
  po::options_description desc{
      "Usage: abusectl verify N [--json]\n\nMatch each spam copy of case N against the event log (queue id, "
      "sender account,\nclient address, time, envelope sender, recipients) and say, per copy, matched or\nnot and "
      "why. Exit 0 when every copy matched, 1 otherwise.\n\nOptions"};
  desc.add_options()("help,h", "show this help")("json", "JSON output");
  parsed_args a;
  if (int rc = parse("verify", desc, args, a); rc >= 0) return rc;
  long long id = 0;
  if (a.positional.size() != 1) {
    std::cerr << "abusectl verify: usage: abusectl verify N [--json]\n";
    return exit_usage;
  }
  if (!case_number("verify", a.positional.front(), id)) return exit_usage;
  try {
    auto cfg = load_settings(g);
    auto s = db_connect(cfg.database, "lupine-abusectl");
    pqxx::work tx{s->conn};
    if (tx.exec_params("SELECT 1 FROM abuse_case WHERE id = $1", id).empty()) {
      std::cerr << fmt::format("abusectl verify: no case {}\n", id);
      return exit_failed;
    }
    auto verdicts = verify_case(tx, id);
    std::size_t matched = 0;
    for (const auto& v : verdicts) matched += v.matched ? 1 : 0;
    tx.exec_params(
        "INSERT INTO audit (actor, action, login, case_id, old_value, new_value, reason)"
        " SELECT $1, 'verify', account, id, NULL, $2, '' FROM abuse_case WHERE id = $3",
        operator_name(), fmt::format("{} of {} matched", matched, verdicts.size()), id);
    tx.commit();
    if (a.vm.count("json") != 0) {
      std::cout << "[";
      bool first = true;
      for (const auto& v : verdicts) {
        std::string checks;
        for (const auto& ch : v.checks) {
          checks += fmt::format("{}{{\"check\": {}, \"status\": {}, \"detail\": {}}}", checks.empty() ? "" : ", ",
                                json_string(ch.what), json_string(ch.status), json_string(ch.detail));
        }
        std::cout << fmt::format(
            "{}\n  {{\"copy\": {}, \"file\": {}, \"part\": {}, \"matched\": {}, \"why\": {}, \"checks\": [{}]}}",
            first ? "" : ",", v.message_id, json_string(v.file), v.part, v.matched ? "true" : "false",
            json_string(v.summary), checks);
        first = false;
      }
      std::cout << "]\n";
    } else {
      for (const auto& v : verdicts) {
        std::cout << fmt::format("copy #{} ({}{}): {} - {}\n", v.message_id, printable(v.file),
                                 v.part > 0 ? fmt::format(" copy {}", v.part) : "",
                                 v.matched ? "MATCHED" : "NOT MATCHED", printable(v.summary));
        for (const auto& ch : v.checks) {
          std::cout << fmt::format("    {:<16} {:<9} {}\n", ch.what, ch.status, printable(ch.detail));
        }
      }
      std::cout << fmt::format("{} of {} copies matched\n", matched, verdicts.size());
    }
    return matched == verdicts.size() && !verdicts.empty() ? exit_ok : exit_failed;
  } catch (const std::exception& e) {
    std::cerr << fmt::format("abusectl verify: {}\n", one_line(e.what()));
    return exit_failed;
  }
}

}  // namespace lupine::abusectl
