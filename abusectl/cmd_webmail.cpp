// abusectl webmail list|add|remove: the webmail_network table, the hosts a restricted
// account may still send from (policyd) and log in from (Dovecot, through the
// dovecot_account view). NET is checked by PostgreSQL's own inet and cidr input inside the
// change's transaction, so abusectl accepts exactly what the table stores; each change
// writes its audit row in that transaction. Refused, because a typo must not open a
// network: host bits set (192.0.2.1/24, which cidr itself refuses) and the classful
// abbreviations that cidr alone would widen ("10.1" becomes 10.1.0.0/16).
#include <iostream>
#include <optional>

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

// The first column of sql run on arg inside a savepoint, or nullopt when PostgreSQL refuses
// the value (SQLSTATE class 22): the outer transaction stays usable either way.
// XXX: savepoints by hand. libpqxx 6.4's subtransaction sends its SAVEPOINT only when its
// first exec() runs, and exec_params() does not trigger that (seen in the server log).
std::optional<std::string> try_text(pqxx::work& tx, const std::string& sql, const std::string& arg) {
  tx.exec("SAVEPOINT net_check");
  try {
    auto r = tx.exec_params1(sql, arg);
    tx.exec("RELEASE SAVEPOINT net_check");
    return r[0].as<std::string>();
  } catch (const pqxx::data_exception&) {
    tx.exec("ROLLBACK TO SAVEPOINT net_check");
    return std::nullopt;
  }
}

// NET as the table stores it ("192.0.2.0/24", "192.0.2.1/32"), or nullopt after printing
// why it is refused.
std::optional<std::string> checked_net(pqxx::work& tx, const std::string& raw) {
  // Both casts must accept it: inet refuses "10.1", cidr refuses host bits.
  if (auto net = try_text(tx, "SELECT $1::text::cidr::text, $1::text::inet::text", raw)) return net;
  std::string why;
  if (auto net = try_text(tx, "SELECT network($1::text::inet)::text", raw)) {
    why = fmt::format(" (host bits are set; the network is {})", *net);
  } else if (auto wide = try_text(tx, "SELECT $1::text::cidr::text", raw)) {
    why = fmt::format(" (abbreviated; write {} if that is meant)", *wide);
  }
  std::cerr << fmt::format("abusectl webmail: not a network: {}{}\n", printable(raw), why);
  return std::nullopt;
}

int list_networks(db_session& s, bool json) {
  pqxx::read_transaction tx{s.conn};
  auto res = tx.exec(
      "SELECT net::text, comment, created_by,"
      " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
      " FROM webmail_network ORDER BY net");
  listing l{{{"net"}, {"comment"}, {"created_by"}, {"created_at"}}, {}};
  for (const auto& r : res) {
    auto& row = l.rows.emplace_back();
    for (const auto& f : r) row.push_back(field_cell(f));
  }
  if (json) {
    print_json(std::cout, l);
  } else if (l.rows.empty()) {
    std::cout << "no webmail networks\n";
  } else {
    print_table(std::cout, l);
  }
  return exit_ok;
}

int add_network(db_session& s, const std::string& raw, const std::string& comment) {
  const auto actor = operator_name();
  pqxx::work tx{s.conn};
  auto net = checked_net(tx, raw);
  if (!net) return exit_usage;
  auto added = tx.exec_params(
      "INSERT INTO webmail_network (net, comment, created_by) VALUES ($1::cidr, $2, $3)"
      " ON CONFLICT (net) DO NOTHING RETURNING net",
      *net, comment, actor);
  if (added.empty()) {
    std::cerr << fmt::format("abusectl webmail: {} is already listed\n", *net);
    return exit_failed;
  }
  tx.exec_params("INSERT INTO audit (actor, action, new_value, reason) VALUES ($1, 'webmail', $2, $3)", actor, *net,
                 comment);
  tx.commit();
  std::cout << fmt::format("added {}\n", *net);
  return exit_ok;
}

int remove_network(db_session& s, const std::string& raw, const std::string& comment) {
  const auto actor = operator_name();
  pqxx::work tx{s.conn};
  auto net = checked_net(tx, raw);
  if (!net) return exit_usage;
  auto removed = tx.exec_params("DELETE FROM webmail_network WHERE net = $1::cidr RETURNING net", *net);
  if (removed.empty()) {
    std::cerr << fmt::format("abusectl webmail: {} is not listed\n", *net);
    return exit_failed;
  }
  tx.exec_params("INSERT INTO audit (actor, action, old_value, reason) VALUES ($1, 'webmail', $2, $3)", actor, *net,
                 comment);
  auto left = tx.exec1("SELECT count(*) FROM webmail_network")[0].as<long long>();
  tx.commit();
  std::cout << fmt::format("removed {}\n", *net);
  // The dovecot_account view then gives restricted accounts allow_nets = '' (no address).
  if (left == 0)
    std::cerr << "abusectl webmail: warning: no webmail networks left; restricted accounts cannot log in\n";
  return exit_ok;
}

}  // namespace

int cmd_webmail(const global_options& g, const std::vector<std::string>& args) {
  po::options_description desc{
      "Usage: abusectl webmail list [--json]\n"
      "       abusectl webmail add NET [--comment TEXT]\n"
      "       abusectl webmail remove NET [--comment TEXT]\n\n"
      "  list    the webmail networks: where restricted accounts may send and log in from\n"
      "  add     add NET, an IPv4/IPv6 address or network (192.0.2.0/24, 2001:db8::/32)\n"
      "  remove  remove NET\n"
      "Changes are audited (action webmail, the comment as reason).\n\nOptions"};
  desc.add_options()("help,h", "show this help")("json", "list: machine-readable output (a JSON array)")(
      "comment", po::value<std::string>()->value_name("TEXT"), "add, remove: the reason (stored, and audited)");
  po::variables_map vm;
  std::vector<std::string> words;
  if (int rc = parse_args("webmail", desc, args, vm, words); rc >= 0) return rc;
  std::string action = words.empty() ? std::string{} : words.front();
  std::vector<std::string> rest;
  if (!words.empty()) rest.assign(words.begin() + 1, words.end());
  bool json = vm.count("json") != 0;
  std::string comment = vm.count("comment") != 0 ? vm["comment"].as<std::string>() : "";
  if (action == "list") {
    if (!rest.empty() || vm.count("comment") != 0) {
      std::cerr << "abusectl webmail: usage: abusectl webmail list [--json]\n";
      return exit_usage;
    }
  } else if (action == "add" || action == "remove") {
    if (rest.size() != 1 || json) {
      std::cerr << fmt::format("abusectl webmail: usage: abusectl webmail {} NET [--comment TEXT]\n", action);
      return exit_usage;
    }
  } else {
    std::cerr << "abusectl webmail: expected list, add or remove\n" << desc;
    return exit_usage;
  }
  try {
    auto s = db_connect(resolve_database(g), "lupine-abusectl");
    if (action == "list") return list_networks(*s, json);
    if (action == "add") return add_network(*s, rest.front(), comment);
    return remove_network(*s, rest.front(), comment);
  } catch (const std::exception& e) {
    std::cerr << "abusectl webmail: " << one_line(e.what()) << "\n";
    return exit_failed;
  }
}

}  // namespace lupine::abusectl
