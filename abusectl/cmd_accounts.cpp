// abusectl accounts [--state S] [--json]: the accounts that have a state row, or with
// --state flagged the review queue (account_flag rows not yet reviewed). abusectl accounts
// review FLAG_ID --note TEXT closes one flag and writes its audit row in the same
// transaction; an unknown or already reviewed flag is refused and nothing changes.
// States themselves change only through lupine_set_account_state (sql/003), not here.
#include <charconv>
#include <iostream>

#include <fmt/format.h>
#include <boost/program_options.hpp>

#include "abusectl/commands.hpp"
#include "abusectl/operator.hpp"
#include "abusectl/output.hpp"
#include "core/config.hpp"
#include "core/db.hpp"
#include "core/db_session.hpp"

namespace lupine::abusectl {
namespace po = boost::program_options;

namespace {

int list_accounts(db_session& s, const std::string& state, bool json) {
  pqxx::read_transaction tx{s.conn};
  const std::string select =
      "SELECT login, state, to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
      " changed_by, reason, case_id FROM account";
  auto res = state.empty() ? tx.exec(select + " ORDER BY login")
                           : tx.exec_params(select + " WHERE state = $1 ORDER BY login", state);
  listing l{{{"login"}, {"state"}, {"changed_at"}, {"changed_by"}, {"reason"}, {"case_id", true}}, {}};
  for (const auto& r : res) {
    auto& row = l.rows.emplace_back();
    for (const auto& f : r) row.push_back(field_cell(f));
  }
  if (json) {
    print_json(std::cout, l);
  } else if (l.rows.empty()) {
    std::cout << (state.empty() ? std::string{"no accounts\n"} : fmt::format("no accounts in state {}\n", state));
  } else {
    print_table(std::cout, l);
  }
  return exit_ok;
}

int list_flags(db_session& s, bool json) {
  pqxx::read_transaction tx{s.conn};
  auto res = tx.exec(
      "SELECT id, login, kind, measure, window_s, max_value, value,"
      " to_char(first_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
      " to_char(last_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), hits, policyd"
      " FROM account_flag WHERE reviewed_at IS NULL ORDER BY first_at, id");
  listing l{{{"id", true},
             {"login"},
             {"kind"},
             {"measure"},
             {"window"},
             {"max_value", true},
             {"value", true},
             {"first_at"},
             {"last_at"},
             {"hits", true},
             {"policyd"}},
            {}};
  for (const auto& r : res) {
    auto& row = l.rows.emplace_back();
    for (const auto& f : r) row.push_back(field_cell(f));
    row.at(4) = format_window(r[4].as<long long>());
  }
  if (json) {
    print_json(std::cout, l);
  } else if (l.rows.empty()) {
    std::cout << "no open flags\n";
  } else {
    print_table(std::cout, l);
  }
  return exit_ok;
}

int review_flag(db_session& s, long long id, const std::string& note) {
  const auto actor = operator_name();
  pqxx::work tx{s.conn};
  // The reviewed_at test in the UPDATE, not a read before it: of two operators reviewing
  // the same flag at once, exactly one wins.
  auto done = tx.exec_params(
      "UPDATE account_flag SET reviewed_at = now(), reviewed_by = $2, review_note = $3"
      " WHERE id = $1 AND reviewed_at IS NULL RETURNING login",
      id, actor, note);
  if (done.empty()) {
    auto prev = tx.exec_params(
        "SELECT reviewed_by, to_char(reviewed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        " FROM account_flag WHERE id = $1",
        id);
    if (prev.empty()) {
      std::cerr << fmt::format("abusectl accounts: no flag {}\n", id);
    } else {
      std::cerr << fmt::format("abusectl accounts: flag {} was already reviewed by {} at {}\n", id,
                               printable(field_cell(prev[0][0]).value_or("?")), field_cell(prev[0][1]).value_or("?"));
    }
    return exit_failed;  // the UPDATE matched nothing; tx rolls back
  }
  const auto login = done[0][0].as<std::string>();
  tx.exec_params(
      "INSERT INTO audit (actor, action, login, new_value, reason) VALUES ($1, 'flag_review', $2, 'reviewed', $3)",
      actor, login, note);
  tx.commit();
  std::cout << fmt::format("flag {} ({}) reviewed\n", id, printable(login));
  return exit_ok;
}

}  // namespace

int cmd_accounts(const global_options& g, const std::vector<std::string>& args) {
  po::options_description desc{
      "Usage: abusectl accounts [--state active|restricted|terminated|flagged] [--json]\n"
      "       abusectl accounts review FLAG_ID --note TEXT\n\n"
      "  (no action)  list the accounts that have a state row (an account without one is\n"
      "               active); --state flagged lists the review queue: flags not yet reviewed\n"
      "  review       mark flag FLAG_ID reviewed, with a note; audited as flag_review\n\nOptions"};
  desc.add_options()("help,h", "show this help")("state", po::value<std::string>()->value_name("STATE"),
                                                 "active, restricted, terminated, or flagged")(
      "json", "machine-readable output (a JSON array)")("note", po::value<std::string>()->value_name("TEXT"),
                                                        "review: why the flag is closed (required)");
  po::variables_map vm;
  std::vector<std::string> words;
  if (int rc = parse_args("accounts", desc, args, vm, words); rc >= 0) return rc;
  std::string action = words.empty() ? std::string{} : words.front();
  std::vector<std::string> rest;
  if (!words.empty()) rest.assign(words.begin() + 1, words.end());
  bool json = vm.count("json") != 0;
  std::string state = vm.count("state") != 0 ? vm["state"].as<std::string>() : "";
  long long flag_id = 0;
  std::string note;
  if (action.empty()) {
    if (vm.count("note") != 0) {
      std::cerr << "abusectl accounts: --note is for review only\n";
      return exit_usage;
    }
    if (vm.count("state") != 0 && state != "active" && state != "restricted" && state != "terminated" &&
        state != "flagged") {
      std::cerr << fmt::format(
          "abusectl accounts: bad --state '{}': expected active, restricted, terminated or flagged\n",
          printable(state));
      return exit_usage;
    }
  } else if (action == "review") {
    if (vm.count("state") != 0 || json) {
      std::cerr << "abusectl accounts: --state and --json are for listing only\n";
      return exit_usage;
    }
    if (rest.size() != 1) {
      std::cerr << "abusectl accounts: usage: abusectl accounts review FLAG_ID --note TEXT\n";
      return exit_usage;
    }
    const auto& text = rest.front();
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), flag_id);
    if (ec != std::errc{} || p != text.data() + text.size() || flag_id <= 0) {
      std::cerr << fmt::format("abusectl accounts: bad flag id '{}': expected a positive integer\n", printable(text));
      return exit_usage;
    }
    note = vm.count("note") != 0 ? vm["note"].as<std::string>() : "";
    if (note.empty()) {
      std::cerr << "abusectl accounts: review needs --note TEXT (why the flag is closed)\n";
      return exit_usage;
    }
  } else {
    std::cerr << fmt::format("abusectl accounts: unknown action '{}'; expected review (or none, to list)\n",
                             printable(action));
    return exit_usage;
  }
  try {
    auto s = db_connect(resolve_database(g), "lupine-abusectl");
    if (action == "review") return review_flag(*s, flag_id, note);
    if (state == "flagged") return list_flags(*s, json);
    return list_accounts(*s, state, json);
  } catch (const std::exception& e) {
    std::cerr << "abusectl accounts: " << one_line(e.what()) << "\n";
    return exit_failed;
  }
}

}  // namespace lupine::abusectl
