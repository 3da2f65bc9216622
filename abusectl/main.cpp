// abusectl: the abuse desk's shell tool. main() parses the global options and dispatches
// to the subcommand table (abusectl/commands.cpp).
#include <cstdlib>
#include <iostream>

#include <boost/program_options.hpp>

#include "abusectl/commands.hpp"
#include "core/config.hpp"

namespace po = boost::program_options;
using namespace lupine::abusectl;

namespace {

void usage(std::ostream& out, const po::options_description& desc) {
  out << "Usage: abusectl [-c FILE] [-d DSN] COMMAND [ARGS...]\n\n"
         "Lupine's abuse-desk tool. `abusectl COMMAND --help` describes each command.\n\nCommands:\n";
  for (const auto& c : commands())
    out << "  " << c.name << std::string(10 - std::string{c.name}.size(), ' ') << c.summary << "\n";
  out << "\n"
      << desc
      << "\nThe database is taken from -d, else $LUPINE_DATABASE, else `database` in the -c file\n"
         "(default /etc/lupine/policyd.conf; its db.password_file too). A password in -d is refused.\n"
         "Exit codes: 0 ok, 1 not found / refused / failed, 2 usage.\n";
}

}  // namespace

int main(int argc, char** argv) {
  ::setenv("PGCONNECT_TIMEOUT", "10", 0);  // libpq's connect timeout when the DSN sets none
  global_options g;
  po::options_description desc{"Global options"};
  desc.add_options()("help,h", "show this help")("config,c", po::value(&g.config_file),
                                                 "configuration file holding `database`")(
      "database,d", po::value(&g.database), "libpq connection string");
  po::options_description hidden;
  hidden.add_options()("command", po::value<std::string>())("args", po::value<std::vector<std::string>>());
  po::positional_options_description pos;
  pos.add("command", 1).add("args", -1);
  po::options_description all;
  all.add(desc).add(hidden);
  po::variables_map vm;
  std::vector<std::string> rest;
  try {
    auto parsed = po::command_line_parser(argc, argv).options(all).positional(pos).allow_unregistered().run();
    po::store(parsed, vm);
    po::notify(vm);
    rest = po::collect_unrecognized(parsed.options, po::include_positional);
  } catch (const po::error& e) {
    std::cerr << "abusectl: " << lupine::po_error_text(e) << "\n";
    return exit_usage;
  }
  if (vm.count("command") == 0) {
    usage(vm.count("help") != 0 ? std::cout : std::cerr, desc);
    return vm.count("help") != 0 ? exit_ok : exit_usage;
  }
  auto name = vm["command"].as<std::string>();
  if (name == "help") {
    usage(std::cout, desc);
    return exit_ok;
  }
  if (!rest.empty() && rest.front() == name) rest.erase(rest.begin());
  // "abusectl db --help": the global parser took --help, but it is the command's.
  if (vm.count("help") != 0) rest.push_back("--help");
  for (const auto& c : commands()) {
    if (name == c.name) return c.run(g, rest);
  }
  std::cerr << "abusectl: unknown command '" << name << "'; try 'abusectl --help'\n";
  return exit_usage;
}
