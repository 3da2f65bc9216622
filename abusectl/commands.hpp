// abusectl's subcommand table (rspamadm style): {name, summary, run}. Each command parses
// its own options and has its own --help. Exit codes: 0 ok, 1 not found / refused /
// failed, 2 usage.
#pragma once

#include <string>
#include <vector>

#include <boost/program_options.hpp>

namespace lupine::abusectl {

struct global_options {
  std::string database;     // -d, or LUPINE_DATABASE, or `database` in the -c file
  std::string config_file;  // -c
};

struct command {
  const char* name;
  const char* summary;
  int (*run)(const global_options& g, const std::vector<std::string>& args);
};

const std::vector<command>& commands();

int cmd_db(const global_options& g, const std::vector<std::string>& args);
int cmd_accounts(const global_options& g, const std::vector<std::string>& args);
int cmd_webmail(const global_options& g, const std::vector<std::string>& args);
int cmd_limits(const global_options& g, const std::vector<std::string>& args);
int cmd_stats(const global_options& g, const std::vector<std::string>& args);
int cmd_case(const global_options& g, const std::vector<std::string>& args);
int cmd_verify(const global_options& g, const std::vector<std::string>& args);
int cmd_restrict(const global_options& g, const std::vector<std::string>& args);
int cmd_terminate(const global_options& g, const std::vector<std::string>& args);
int cmd_restore(const global_options& g, const std::vector<std::string>& args);

constexpr int exit_ok = 0;
constexpr int exit_failed = 1;
constexpr int exit_usage = 2;

// Parses a command's arguments: desc's options, every other word into words (in order).
// Returns -1 to go on, or the exit code to return: exit_usage after printing
// "abusectl NAME: problem" to stderr, or exit_ok after printing desc for --help.
int parse_args(const std::string& name, const boost::program_options::options_description& desc,
               const std::vector<std::string>& args, boost::program_options::variables_map& vm,
               std::vector<std::string>& words);

// The DSN from -d, LUPINE_DATABASE or the config file; throws std::runtime_error if none.
std::string resolve_database(const global_options& g);

}  // namespace lupine::abusectl
