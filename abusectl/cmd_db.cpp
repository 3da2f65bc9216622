// abusectl db migrate|status: applies sql/ migrations (embedded in the binary) or shows
// the schema version. Safe to run while policyd instances run (advisory lock).
#include <iostream>

#include <fmt/format.h>
#include <boost/program_options.hpp>

#include "abusectl/commands.hpp"
#include "core/db.hpp"

namespace lupine::abusectl {
namespace po = boost::program_options;

int cmd_db(const global_options& g, const std::vector<std::string>& args) {
  po::options_description desc{
      "Usage: abusectl db migrate|status [--json]\n\n"
      "  migrate  apply every migration newer than the database's schema version\n"
      "  status   print the schema version and pending migrations\n\nOptions"};
  desc.add_options()("help,h", "show this help")("json", "machine-readable output");
  po::variables_map vm;
  std::vector<std::string> words;
  if (int rc = parse_args("db", desc, args, vm, words); rc >= 0) return rc;
  std::string action = words.size() == 1 ? words.front() : std::string{};
  if (action != "migrate" && action != "status") {
    std::cerr << "abusectl db: expected migrate or status\n" << desc;
    return exit_usage;
  }
  bool json = vm.count("json") != 0;
  try {
    auto s = db_connect(resolve_database(g), "lupine-abusectl");
    const auto& all_m = embedded_migrations();
    int newest = all_m.empty() ? 0 : all_m.back().version;
    if (action == "status") {
      int v = schema_version(*s);
      int pending = 0;
      for (const auto& m : all_m) pending += m.version > v ? 1 : 0;
      if (json) {
        std::cout << fmt::format("{{\"schema_version\":{},\"latest\":{},\"pending\":{}}}\n", v, newest, pending);
      } else {
        std::cout << fmt::format("schema version {} (this abusectl knows {}); {} pending\n", v, newest, pending);
      }
      return exit_ok;
    }
    auto rep = migrate(*s, all_m);
    for (const auto& w : rep.warnings) std::cerr << "abusectl db: warning: " << w << "\n";
    if (json) {
      std::string list;
      for (const auto& a : rep.applied) list += (list.empty() ? "\"" : ",\"") + a + "\"";
      std::cout << fmt::format("{{\"from\":{},\"to\":{},\"applied\":[{}]}}\n", rep.from_version, rep.to_version, list);
    } else if (rep.applied.empty()) {
      std::cout << fmt::format("schema is current (version {})\n", rep.to_version);
    } else {
      for (const auto& a : rep.applied) std::cout << "applied " << a << "\n";
      std::cout << fmt::format("schema version {} -> {}\n", rep.from_version, rep.to_version);
    }
    return exit_ok;
  } catch (const std::exception& e) {
    std::cerr << "abusectl db: " << e.what() << "\n";
    return exit_failed;
  }
}

}  // namespace lupine::abusectl
