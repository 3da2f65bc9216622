// policyd's command line: -c FILE, -o key=value (repeatable), --check-config,
// --print-config, -v, --help, --version. Start-up: load and validate the configuration,
// connect, migrate (db.migrate), load allow-lists, bind, serve.
#include "policyd/app.hpp"

#include <cstdlib>
#include <filesystem>
#include <future>
#include <iostream>
#include <optional>

#include <fmt/format.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/program_options.hpp>

#include "core/db.hpp"
#include "core/db_session.hpp"
#include "core/log.hpp"
#include "core/secrets.hpp"
#include "policyd/config.hpp"
#include "policyd/privileges.hpp"
#include "policyd/server.hpp"
#include "policyd/store.hpp"

namespace lupine::policyd {
namespace po = boost::program_options;

namespace {

constexpr int ex_usage = 2;
constexpr int ex_config = 78;
constexpr const char* default_config = "/etc/lupine/policyd.conf";

void print_config(const raw_options& effective) {
  for (const auto& spec : policyd_options()) {
    auto it = effective.find(spec.key);
    std::vector<std::string> vals = it == effective.end() ? std::vector<std::string>{} : it->second;
    if (vals.empty()) vals.push_back("");
    for (const auto& v : vals) {
      std::cout << spec.key << " = " << (spec.secret && !v.empty() ? "********" : v) << "\n";
    }
  }
}

}  // namespace

namespace {
int run_app(int argc, char** argv);
}

int app_main(int argc, char** argv) {
  // Bugs and resource failures at start or stop end with a message and exit 1, not an abort.
  try {
    return run_app(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "policyd: " << po_error_text(e) << "\n";
    return 1;
  }
}

namespace {

int run_app(int argc, char** argv) {
  po::options_description desc{
      "Usage: policyd [-c FILE] [-o key=value]... [--check-config | --print-config]\n\n"
      "Lupine policy server for Postfix check_policy_service (greylisting on PostgreSQL).\n"
      "Keys are documented in docs/config.md; `policyd --help-keys` lists them with defaults.\n\n"
      "Options"};
  std::string config_file;
  std::vector<std::string> overrides;
  desc.add_options()("help,h", "show this help and exit")("version", "print the version and exit")(
      "config,c", po::value(&config_file), "configuration file (default /etc/lupine/policyd.conf if it exists)")(
      "override,o", po::value(&overrides)->composing(), "set a key, overriding the file: -o greylist.delay=60s")(
      "check-config", "validate the configuration (and allow-list files) and exit: 0 ok, 78 not")(
      "print-config", "print every key's effective value (secrets masked) and exit")(
      "help-keys", "list every key with its default and meaning, and exit")("verbose,v",
                                                                            "more detail in the log (debug)");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "policyd: " << po_error_text(e) << "\n"
              << "Try 'policyd --help'.\n";
    return ex_usage;
  }
  if (vm.count("help") != 0) {
    std::cout << desc << "\nExit codes: 0 ok, 1 runtime failure, 2 usage, 78 configuration error.\n";
    return 0;
  }
  if (vm.count("version") != 0) {
    std::cout << "policyd (lupine) 0.1.0\n";
    return 0;
  }
  if (vm.count("help-keys") != 0) {
    for (const auto& s : policyd_options()) {
      std::cout << s.key << " = " << s.default_value << (s.multi ? "   (several allowed)" : "") << "\n    " << s.help
                << "\n";
    }
    return 0;
  }
  if (vm.count("verbose") != 0) set_log_level(log_level::debug);

  policyd_config cfg;
  raw_options effective;
  try {
    auto keys = option_keys(policyd_options());
    auto cli = parse_overrides(overrides, keys);
    raw_options file;
    std::string source = "-o";
    if (!config_file.empty()) {
      file = read_config_file(config_file, keys, {"abusectl."});
      source = config_file;
    } else if (std::error_code fec; std::filesystem::exists(default_config, fec)) {
      file = read_config_file(default_config, keys, {"abusectl."});
      source = default_config;
    }
    cfg = apply_options(policyd_options(), source, file, cli, &effective);
    // Secrets never on the command line (every local user can read it with ps), never logged.
    if (auto it = cli.find("database"); it != cli.end() && !it->second.empty() && dsn_has_password(it->second.back())) {
      throw config_error{
          "-o database=... holds a password, which every local user can read (ps): put it in db.password_file"};
    }
    if (!cfg.db_password_file.empty()) {
      cfg.database = dsn_with_password(cfg.database, read_secret_file(cfg.db_password_file));
    }
    if (auto problems = validate(cfg); !problems.empty()) throw config_error{problems};
    std::vector<std::string> list_problems;
    build_allowlist(cfg, {}, list_problems);
    if (!list_problems.empty()) {
      std::string all;
      for (const auto& p : list_problems) all += (all.empty() ? "" : "\n") + p;
      throw config_error{all};
    }
  } catch (const config_error& e) {
    std::cerr << "policyd: configuration error:\n" << e.what() << "\n";
    return ex_config;
  }
  if (vm.count("check-config") != 0) {
    std::cout << "policyd: configuration OK\n";
    return 0;
  }
  if (vm.count("print-config") != 0) {
    print_config(effective);
    return 0;
  }

  // libpq's connect timeout when the DSN sets none: a dead server must not hold a thread.
  ::setenv("PGCONNECT_TIMEOUT", "5", 0);
  // Start-up work that may block runs here, before the loop exists.
  std::vector<std::pair<std::string, std::string>> db_rows;
  directory_data accounts;
  try {
    auto s = db_connect(cfg.database, "lupine-policyd");
    if (cfg.db_migrate) {
      auto rep = migrate(*s, embedded_migrations());
      for (const auto& w : rep.warnings) log(log_level::warning, "schema", "{}", kv("problem", w));
      for (const auto& a : rep.applied) log(log_level::info, "migration_applied", "{}", kv("file", a));
    } else {
      int have = schema_version(*s);
      int want = embedded_migrations().empty() ? 0 : embedded_migrations().back().version;
      if (have < want) {
        std::cerr << fmt::format(
            "policyd: database schema is at version {}, this policyd needs {}: "
            "run `abusectl db migrate` or set db.migrate = yes\n",
            have, want);
        return 1;
      }
    }
    if (cfg.allowlist_database) db_rows = load_allowlist_rows(*s);
    // Before the first request: a terminated account is refused from the start.
    accounts = load_directory(*s);
  } catch (const std::exception& e) {
    std::cerr << "policyd: " << po_error_text(e) << "\n";
    return 1;
  }

  boost::asio::io_context io{1};
  db_pool db{db_options{cfg.database, cfg.db_threads, cfg.db_max_inflight, cfg.db_statement_timeout,
                        std::chrono::milliseconds{1000}, "lupine-policyd", true, true}};
  // Greylisting's own two connections: one read and one flush in flight at a time
  // (greylist_engine), never queued behind the event log's COPY on the shared pool.
  db_pool greylist_db{db_options{cfg.database, 2, cfg.db_max_inflight, cfg.db_statement_timeout,
                                 std::chrono::milliseconds{1000}, "lupine-policyd-greylist", true, true}};
  std::optional<server> srv_holder;
  try {
    srv_holder.emplace(io, cfg, db, greylist_db);
  } catch (const std::runtime_error& e) {
    std::cerr << "policyd: event_log.spill_dir: " << e.what() << "\n";
    return ex_config;
  }
  server& srv = *srv_holder;
  std::vector<std::string> problems;
  auto lists = build_allowlist(cfg, db_rows, problems);
  for (const auto& p : problems) log(log_level::warning, "allowlist_entry_skipped", "{}", kv("problem", p));
  srv.allowlists().set(lists);
  log(log_level::info, "accounts_loaded", "not_active={} webmail_networks={}", accounts.accounts.size(),
      accounts.webmail.size());
  srv.accounts().replace(std::move(accounts));
  try {
    srv.bind();
  } catch (const config_error& e) {
    std::cerr << "policyd: " << po_error_text(e) << "\n";
    return ex_config;
  }
  // Bound: root is not needed any more. What policyd writes later becomes the user's.
  std::vector<std::filesystem::path> own;
  if (cfg.event_log_enable && !cfg.event_log_spill_dir.empty()) own.emplace_back(cfg.event_log_spill_dir);
  for (const auto& ep : cfg.listen) {
    if (ep.type == listen_endpoint::kind::unix_socket) own.emplace_back(ep.path);
  }
  if (auto err = drop_privileges(cfg.run_user, cfg.run_group, own); !err.empty()) {
    std::cerr << "policyd: " << err << "\n";
    return ex_config;
  }
  int rc = 0;
  boost::asio::co_spawn(io, srv.run(), [&](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& err) {
        log(log_level::error, "fatal", "{}", kv("error", err.what()));
      }
      rc = 1;
    }
    io.stop();
  });
  io.run();
  log_batch_this_thread({});  // what the loop logged last (after a fatal error, say)
  // The pool's threads may sit in libpq on a database that stopped answering; do not let
  // them hold the exit (the event-log flush already had its deadline).
  auto joined = std::async(std::launch::async, [&db, &greylist_db] {
    greylist_db.stop();
    db.stop();
  });
  if (joined.wait_for(std::chrono::seconds{5}) != std::future_status::ready) {
    log(log_level::error, "exit_forced", "database threads did not finish within 5s");
    std::_Exit(rc == 0 ? 1 : rc);
  }
  return rc;
}

}  // namespace

}  // namespace lupine::policyd
