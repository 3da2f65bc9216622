// abusectl's settings; see settings.hpp.
#include "abusectl/settings.hpp"

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <boost/program_options.hpp>

#include "core/config.hpp"

namespace lupine::abusectl {

settings load_settings(const global_options& g) {
  settings s;
  std::string file = g.config_file.empty() ? "/etc/lupine/policyd.conf" : g.config_file;
  if (!g.config_file.empty() || std::filesystem::exists(file)) {
    std::ifstream in{file};
    if (!in) throw std::runtime_error{"cannot open " + file};
    namespace po = boost::program_options;
    po::options_description d;
    d.add_options()("abusectl.our_hosts", po::value<std::vector<std::string>>()->composing())(
        "abusectl.smtp_url", po::value<std::string>())("abusectl.notify_from", po::value<std::string>())(
        "abusectl.notify_template", po::value<std::string>())("abusectl.mail_domain", po::value<std::string>());
    po::variables_map vm;
    try {
      // The file is policyd's too: its keys are not ours to judge.
      po::store(po::parse_config_file(in, d, true), vm);
    } catch (const po::error& e) {
      throw std::runtime_error{file + ": " + po_error_text(e)};
    }
    if (vm.count("abusectl.our_hosts") != 0) {
      s.our_hosts = split_list(vm["abusectl.our_hosts"].as<std::vector<std::string>>());
    }
    if (vm.count("abusectl.smtp_url") != 0) s.smtp_url = vm["abusectl.smtp_url"].as<std::string>();
    if (vm.count("abusectl.notify_from") != 0) s.notify_from = vm["abusectl.notify_from"].as<std::string>();
    if (vm.count("abusectl.notify_template") != 0) {
      s.notify_template = vm["abusectl.notify_template"].as<std::string>();
    }
    if (vm.count("abusectl.mail_domain") != 0) s.mail_domain = vm["abusectl.mail_domain"].as<std::string>();
  }
  s.database = resolve_database(g);
  return s;
}

}  // namespace lupine::abusectl
