// abusectl restrict|terminate|restore ACCOUNT --case N: the state changes of an
// investigation (docs/abusectl.md). The provider's procedure: restrict to webmail-only and
// notify the user, then terminate (confirmed) or restore (not confirmed), which closes the
// case. Moves the procedure does not allow are refused with the reason; terminating a case
// that was never restricted needs --force; a terminated account is never restored here.
//
// The account's state, the case's state and their audit rows change in one transaction
// (lupine_set_account_state writes the account's audit row). The notification mail is sent
// after the commit: a mail server that is down cannot keep an account open. Its outcome
// is audited too (notify), and a failure exits 1 with the restriction in place.
#include <unistd.h>

#include <charconv>
#include <ctime>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <boost/program_options.hpp>

#include "abusectl/commands.hpp"
#include "abusectl/notify.hpp"
#include "abusectl/operator.hpp"
#include "abusectl/output.hpp"
#include "abusectl/settings.hpp"
#include "core/db.hpp"
#include "core/db_session.hpp"
#include "core/text.hpp"

namespace lupine::abusectl {
namespace po = boost::program_options;

namespace {

enum class move { restrict_, terminate, restore };

const char* verb(move m) {
  switch (m) {
    case move::restrict_: return "restrict";
    case move::terminate: return "terminate";
    case move::restore: return "restore";
  }
  return "restrict";
}

struct request {
  move m = move::restrict_;
  std::string login;
  long long case_id = 0;
  std::string reason;
  bool notify = true;
  bool yes = false;
  bool force = false;
  bool json = false;
};

std::string rfc5322_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  return buf;
}

// What the move would do to a case in case_state with the account in account_state, or
// the reason it is refused.
std::string check_move(const request& r, const std::string& case_state, const std::string& case_account,
                       const std::string& account_state) {
  if (!case_account.empty() && case_account != r.login) {
    return fmt::format("case {} is about {}, not {}", r.case_id, case_account, r.login);
  }
  if (case_state == "terminated" || case_state == "restored") {
    return fmt::format("case {} is closed ({})", r.case_id, case_state);
  }
  switch (r.m) {
    case move::restrict_:
      if (account_state == "terminated") return fmt::format("{} is terminated", r.login);
      if (case_state == "restricted") return fmt::format("case {} has already restricted {}", r.case_id, r.login);
      return {};
    case move::terminate:
      if (account_state == "terminated") return fmt::format("{} is already terminated", r.login);
      if (case_state != "restricted" && !r.force) {
        return fmt::format(
            "case {} never restricted {}: the procedure restricts and reviews first (use --force to terminate "
            "anyway)",
            r.case_id, r.login);
      }
      return {};
    case move::restore:
      if (account_state == "terminated") {
        return fmt::format("{} is terminated; a terminated account is not restored", r.login);
      }
      return {};
  }
  return {};
}

struct case_row {
  bool found = false;
  std::string state, account, account_state;
};

// With lock, the case's row and the account's are locked until the transaction ends. The
// account's through lupine_lock_account (sql/005): abusectl's role has no UPDATE right on
// account, which SELECT ... FOR UPDATE would need.
case_row read_case(pqxx::transaction_base& tx, const request& r, bool lock) {
  case_row c;
  auto res =
      lock ? tx.exec_params("SELECT state, coalesce(account, '') FROM abuse_case WHERE id = $1 FOR UPDATE", r.case_id)
           : tx.exec_params("SELECT state, coalesce(account, '') FROM abuse_case WHERE id = $1", r.case_id);
  if (res.empty()) return c;
  c.found = true;
  c.state = res[0][0].as<std::string>();
  c.account = res[0][1].as<std::string>();
  if (lock) {
    c.account_state = tx.exec_params1("SELECT lupine_lock_account($1)", r.login)[0].as<std::string>();
  } else {
    auto a = tx.exec_params("SELECT state FROM account WHERE login = lower($1)", r.login);
    c.account_state = a.empty() ? "active" : a[0][0].as<std::string>();
  }
  return c;
}

bool confirm(const request& r) {
  if (r.yes) return true;
  if (::isatty(STDIN_FILENO) == 0) {
    std::cerr << "abusectl terminate: not a terminal and no --yes: nothing changed\n";
    return false;
  }
  std::cerr << fmt::format("Terminate {} for good (case {})? Type yes to go on: ", r.login, r.case_id);
  std::string answer;
  std::getline(std::cin, answer);
  if (answer != "yes") {
    std::cerr << "abusectl terminate: not confirmed: nothing changed\n";
    return false;
  }
  return true;
}

int run(const global_options& g, const request& r) {
  const char* name = verb(r.m);
  settings cfg;
  std::string tmpl;
  std::string to;
  try {
    cfg = load_settings(g);
    if (r.m == move::restrict_ && r.notify) {
      if (cfg.notify_from.empty()) {
        std::cerr << "abusectl restrict: set abusectl.notify_from in the configuration file to notify the "
                     "user, or give --no-notify: nothing changed\n";
        return exit_usage;
      }
      to = r.login.find('@') != std::string::npos ? r.login
           : cfg.mail_domain.empty()              ? std::string{}
                                                  : r.login + "@" + cfg.mail_domain;
      if (to.empty()) {
        std::cerr << "abusectl restrict: the login has no domain: set abusectl.mail_domain, or give --no-notify: "
                     "nothing changed\n";
        return exit_usage;
      }
      tmpl = default_notification_template();
      if (!cfg.notify_template.empty()) {
        std::ifstream in{cfg.notify_template};
        if (!in) {
          std::cerr << "abusectl restrict: cannot read the template " << cfg.notify_template << ": nothing changed\n";
          return exit_failed;
        }
        std::ostringstream ss;
        ss << in.rdbuf();
        tmpl = ss.str();
      }
    }
  } catch (const std::exception& e) {
    std::cerr << fmt::format("abusectl {}: {}\n", name, one_line(e.what()));
    return exit_failed;
  }
  auto actor = operator_name();
  std::string new_state = r.m == move::restrict_ ? "restricted" : r.m == move::terminate ? "terminated" : "active";
  std::string case_state = r.m == move::restrict_ ? "restricted" : r.m == move::terminate ? "terminated" : "restored";
  try {
    auto s = db_connect(cfg.database, "lupine-abusectl");
    {
      // Look first, ask, then change with the rows locked and the move checked again.
      pqxx::read_transaction tx{s->conn};
      auto c = read_case(tx, r, false);
      if (!c.found) {
        std::cerr << fmt::format("abusectl {}: no case {}\n", name, r.case_id);
        return exit_failed;
      }
      if (auto why = check_move(r, c.state, c.account, c.account_state); !why.empty()) {
        std::cerr << fmt::format("abusectl {}: {}: nothing changed\n", name, why);
        return exit_failed;
      }
    }
    if (r.m == move::terminate && !confirm(r)) return exit_failed;
    std::string old_account_state;
    {
      pqxx::work tx{s->conn};
      auto c = read_case(tx, r, true);
      if (auto why =
              !c.found ? fmt::format("no case {}", r.case_id) : check_move(r, c.state, c.account, c.account_state);
          !why.empty()) {
        std::cerr << fmt::format("abusectl {}: {}: nothing changed\n", name, why);
        return exit_failed;
      }
      old_account_state = c.account_state;
      std::string reason = r.reason.empty() ? fmt::format("case {}", r.case_id) : r.reason;
      tx.exec_params("SELECT lupine_set_account_state($1, $2, $3, $4, $5)", r.login, new_state, actor, reason,
                     r.case_id);
      bool closes = r.m != move::restrict_;
      tx.exec_params(
          "UPDATE abuse_case SET state = $2, account = coalesce(account, lower($3)),"
          " closed_by = CASE WHEN $4 THEN $5 END, closed_at = CASE WHEN $4 THEN now() END WHERE id = $1",
          r.case_id, case_state, r.login, closes, actor);
      tx.exec_params(
          "INSERT INTO audit (actor, action, login, case_id, old_value, new_value, reason)"
          " VALUES ($1, 'case', lower($2), $3, $4, $5, $6)",
          actor, r.login, r.case_id, c.state, case_state, reason);
      tx.commit();
    }
    // One JSON object for scripts: what changed, and whether the user was notified.
    auto json_out = [&](const std::string& notified) {
      std::cout << fmt::format(
          "{{\"account\": {}, \"old_state\": {}, \"new_state\": {}, \"case\": {}, \"case_state\": {}, "
          "\"notified\": {}}}\n",
          json_string(ascii_lower(r.login)), json_string(old_account_state), json_string(new_state), r.case_id,
          json_string(case_state), notified);
    };
    if (r.json && (r.m != move::restrict_ || !r.notify)) {
      json_out("null");
      return exit_ok;
    }
    if (!r.json) {
      std::cout << fmt::format("{}: {} -> {} (case {} {})\n", ascii_lower(r.login), old_account_state, new_state,
                               r.case_id, case_state);
    }
    if (r.m != move::restore && !r.json) {
      std::cout << fmt::format(
          "IMAP/POP3: Dovecot follows the dovecot_account view; flush its cache and end open sessions:\n"
          "  doveadm auth cache flush {0}; doveadm kick {0}\n",
          ascii_lower(r.login));
    }
    if (r.m != move::restrict_ || !r.notify) return exit_ok;

    std::mt19937_64 rng{std::random_device{}()};
    auto domain = cfg.notify_from.substr(cfg.notify_from.find('@') + 1);
    std::map<std::string, std::string> vars{
        {"from", cfg.notify_from},
        {"to", to},
        {"login", ascii_lower(r.login)},
        {"case", std::to_string(r.case_id)},
        {"reason", r.reason.empty() ? fmt::format("case {}", r.case_id) : r.reason},
        {"date", rfc5322_now()},
        {"message_id", fmt::format("<lupine-case-{}-{:016x}@{}>", r.case_id, rng(), domain)}};
    auto message = render_template(tmpl, vars);
    auto err = send_mail(cfg.smtp_url, cfg.notify_from, to, message);
    pqxx::work tx{s->conn};
    tx.exec_params(
        "INSERT INTO audit (actor, action, login, case_id, old_value, new_value, reason)"
        " VALUES ($1, 'notify', lower($2), $3, NULL, $4, $5)",
        actor, r.login, r.case_id, err.empty() ? "sent" : "failed", err.empty() ? "to " + to : err);
    tx.commit();
    if (r.json) json_out(err.empty() ? json_string(to) : "false");
    if (!err.empty()) {
      std::cerr << fmt::format("abusectl restrict: {} is restricted, but the notification to {} failed: {}\n",
                               ascii_lower(r.login), to, one_line(err));
      return exit_failed;
    }
    if (!r.json) std::cout << fmt::format("notified {}\n", to);
    return exit_ok;
  } catch (const std::exception& e) {
    std::cerr << fmt::format("abusectl {}: {}\n", name, one_line(e.what()));
    return exit_failed;
  }
}

int parse_and_run(move m, const global_options& g, const std::vector<std::string>& args) {
  const char* name = verb(m);
  std::string usage = fmt::format("Usage: abusectl {} ACCOUNT --case N [--reason TEXT] [--json]", name);
  if (m == move::restrict_) usage += " [--no-notify]";
  if (m == move::terminate) usage += " [--yes] [--force]";
  const char* what = m == move::restrict_
                         ? "Restrict ACCOUNT to webmail-only (SMTP, IMAP and POP3 refused outside the webmail\n"
                           "networks) for case N, and notify the user by mail."
                     : m == move::terminate ? "Terminate ACCOUNT (confirmed abuse) and close case N. Asks for "
                                              "confirmation unless --yes."
                                            : "Restore ACCOUNT to normal (complaint not confirmed) and close case N.";
  po::options_description desc{usage + "\n\n" + what + "\n\nOptions"};
  desc.add_options()("help,h", "show this help")("case", po::value<std::string>()->value_name("N"),
                                                 "the abuse case (required)")(
      "reason", po::value<std::string>()->value_name("TEXT"), "why (audited; default: case N)")(
      "json", "print the outcome as one JSON object");
  if (m == move::restrict_) desc.add_options()("no-notify", "do not mail the user");
  if (m == move::terminate) {
    desc.add_options()("yes,y", "do not ask for confirmation")("force", "terminate a case that was never restricted");
  }
  po::variables_map vm;
  std::vector<std::string> words;
  if (int rc = parse_args(name, desc, args, vm, words); rc >= 0) return rc;
  request r;
  r.m = m;
  const auto& accounts = words;
  if (accounts.size() != 1 || accounts.front().empty()) {
    std::cerr << fmt::format("abusectl {}: give exactly one ACCOUNT ({})\n", name, usage);
    return exit_usage;
  }
  r.login = ascii_lower(accounts.front());
  if (vm.count("case") == 0) {
    std::cerr << fmt::format("abusectl {}: --case N is required (every state change belongs to a case)\n", name);
    return exit_usage;
  }
  const auto& text = vm["case"].as<std::string>();
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), r.case_id);
  if (ec != std::errc{} || p != text.data() + text.size() || r.case_id <= 0) {
    std::cerr << fmt::format("abusectl {}: bad --case '{}': expected a case number\n", name, text);
    return exit_usage;
  }
  if (vm.count("reason") != 0) r.reason = vm["reason"].as<std::string>();
  r.notify = vm.count("no-notify") == 0;
  r.yes = vm.count("yes") != 0;
  r.force = vm.count("force") != 0;
  r.json = vm.count("json") != 0;
  return run(g, r);
}

}  // namespace

int cmd_restrict(const global_options& g, const std::vector<std::string>& args) {
  return parse_and_run(move::restrict_, g, args);
}
int cmd_terminate(const global_options& g, const std::vector<std::string>& args) {
  return parse_and_run(move::terminate, g, args);
}
int cmd_restore(const global_options& g, const std::vector<std::string>& args) {
  return parse_and_run(move::restore, g, args);
}

}  // namespace lupine::abusectl
