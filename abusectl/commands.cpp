// The subcommand table and the shared database lookup.
#include "abusectl/commands.hpp"
#include "core/config.hpp"
#include "core/secrets.hpp"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include <boost/program_options.hpp>

namespace lupine::abusectl {

const std::vector<command>& commands() {
  static const std::vector<command> table{
      {"db", "database schema: migrate, status", cmd_db},
      {"accounts", "account states and the review queue of flags: list, review", cmd_accounts},
      {"webmail", "the webmail networks restricted accounts may use: list, add, remove", cmd_webmail},
      {"limits", "per-account and per-domain sending limit overrides: list, set, clear", cmd_limits},
      {"stats", "an account's outbound traffic against its baseline and the other accounts", cmd_stats},
      {"case", "abuse cases and their spam copies: open, import, show, list, export", cmd_case},
      {"verify", "match a case's spam copies against the event log", cmd_verify},
      {"restrict", "restrict an account to webmail-only for a case and notify the user", cmd_restrict},
      {"terminate", "terminate an account (abuse confirmed) and close the case", cmd_terminate},
      {"restore", "restore an account (not confirmed) and close the case", cmd_restore},
  };
  return table;
}

int parse_args(const std::string& name, const boost::program_options::options_description& desc,
               const std::vector<std::string>& args, boost::program_options::variables_map& vm,
               std::vector<std::string>& words) {
  namespace po = boost::program_options;
  po::options_description hidden;
  hidden.add_options()("lupine-words", po::value<std::vector<std::string>>());
  po::positional_options_description pos;
  pos.add("lupine-words", -1);
  po::options_description all;
  all.add(desc).add(hidden);
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  } catch (const po::error& e) {
    std::cerr << "abusectl " << name << ": " << po_error_text(e) << "\n";
    return exit_usage;
  }
  if (vm.count("help") != 0) {
    std::cout << desc;
    return exit_ok;
  }
  if (vm.count("lupine-words") != 0) words = vm["lupine-words"].as<std::vector<std::string>>();
  return -1;
}

std::string resolve_database(const global_options& g) {
  if (!g.database.empty()) {
    if (dsn_has_password(g.database)) {
      throw std::runtime_error{
          "-d holds a password, which every local user can read (ps): use $LUPINE_DATABASE, ~/.pgpass, or "
          "db.password_file in the -c file"};
    }
    return g.database;
  }
  if (const char* env = std::getenv("LUPINE_DATABASE"); env != nullptr && env[0] != '\0') return env;
  std::string file = g.config_file.empty() ? "/etc/lupine/policyd.conf" : g.config_file;
  std::ifstream in{file};
  if (in) {
    namespace po = boost::program_options;
    po::options_description d;
    d.add_options()("database", po::value<std::string>())("db.password_file", po::value<std::string>());
    // The policyd file holds many other keys: only the database's matter here.
    auto parsed = po::parse_config_file(in, d, true);
    po::variables_map vm;
    po::store(parsed, vm);
    if (vm.count("database") != 0 && !vm["database"].as<std::string>().empty()) {
      auto dsn = vm["database"].as<std::string>();
      if (vm.count("db.password_file") != 0 && !vm["db.password_file"].as<std::string>().empty()) {
        dsn = dsn_with_password(dsn, read_secret_file(vm["db.password_file"].as<std::string>()));
      }
      return dsn;
    }
  } else if (!g.config_file.empty()) {
    throw std::runtime_error{"cannot open " + g.config_file};
  }
  throw std::runtime_error{"no database: give -d DSN, set LUPINE_DATABASE, or put `database = ...` in " + file};
}

}  // namespace lupine::abusectl
