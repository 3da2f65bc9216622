// The account directory and its LISTEN/NOTIFY sync; see directory.hpp.
#include <algorithm>

#include <boost/asio/post.hpp>

#include "core/db_session.hpp"
#include "core/log.hpp"
#include "core/text.hpp"
#include "policyd/directory.hpp"

namespace lupine::policyd {

std::string_view to_string(account_state s) {
  switch (s) {
    case account_state::active: return "active";
    case account_state::restricted: return "restricted";
    case account_state::terminated: return "terminated";
  }
  return "active";
}

std::optional<account_state> parse_account_state(std::string_view s) {
  if (s == "active") return account_state::active;
  if (s == "restricted") return account_state::restricted;
  if (s == "terminated") return account_state::terminated;
  return std::nullopt;
}

std::string normalize_login(std::string_view login) {
  return ascii_lower(login);
}

account_info directory::account(const std::string& login) const {
  if (data_.accounts.empty()) return {};
  auto it = data_.accounts.find(login);
  return it == data_.accounts.end() ? account_info{} : it->second;
}

bool directory::from_webmail(const ip_address& a) const {
  for (const auto& n : data_.webmail) {
    if (n.contains(a)) return true;
  }
  return false;
}

void directory::set_account(const std::string& login, account_info info) {
  if (info.state == account_state::active) {
    data_.accounts.erase(login);
  } else {
    data_.accounts[login] = std::move(info);
  }
}

// ---- SQL ----

namespace {

std::optional<account_info> to_info(const std::string& state, std::string reason) {
  auto s = parse_account_state(state);
  if (!s || *s == account_state::active) return std::nullopt;
  return account_info{*s, std::move(reason)};
}

}  // namespace

std::optional<account_info> load_account(db_session& s, const std::string& login) {
  pqxx::nontransaction tx{s.conn};
  auto r = tx.exec_params("SELECT state, reason FROM account WHERE login = $1", login);
  if (r.empty()) return std::nullopt;
  return to_info(r[0][0].as<std::string>(), r[0][1].as<std::string>());
}

std::vector<cidr> load_webmail(db_session& s) {
  pqxx::nontransaction tx{s.conn};
  std::vector<cidr> out;
  for (const auto& row : tx.exec("SELECT net::text FROM webmail_network ORDER BY net")) {
    if (auto c = parse_cidr(row[0].as<std::string>())) out.push_back(*c);
  }
  return out;
}

limit_overrides load_overrides(db_session& s) {
  pqxx::nontransaction tx{s.conn};
  limit_overrides o;
  for (const auto& row : tx.exec("SELECT scope, subject, measure, window_s, max_value FROM send_limit")) {
    auto m = parse_measure(row[2].as<std::string>());
    if (!m) continue;
    send_limit l;
    l.what = *m;
    l.window = std::chrono::seconds{row[3].as<long long>()};
    if (!row[4].is_null()) l.max = row[4].as<long long>();
    auto& map = row[0].as<std::string>() == "domain" ? o.domains : o.accounts;
    map[row[1].as<std::string>()].push_back(l);
  }
  return o;
}

directory_data load_directory(db_session& s) {
  directory_data d;
  {
    pqxx::nontransaction tx{s.conn};
    for (const auto& row : tx.exec("SELECT login, state, reason FROM account WHERE state <> 'active'")) {
      if (auto info = to_info(row[1].as<std::string>(), row[2].as<std::string>())) {
        d.accounts.emplace(row[0].as<std::string>(), std::move(*info));
      }
    }
  }
  d.webmail = load_webmail(s);
  d.overrides = load_overrides(s);
  return d;
}

// ---- the sync thread ----

namespace {

constexpr const char* notify_channel = "lupine_directory";

class receiver final : public pqxx::notification_receiver {
 public:
  receiver(pqxx::connection_base& c, std::vector<std::string>& out)
      : notification_receiver{c, notify_channel}, out_{out} {}
  void operator()(const std::string& payload, int) override { out_.push_back(payload); }

 private:
  std::vector<std::string>& out_;
};

}  // namespace

directory_sync::directory_sync(boost::asio::any_io_executor loop, directory& dir, std::string dsn,
                               std::string application_name, std::chrono::milliseconds refresh_interval)
    : loop_{std::move(loop)},
      dir_{dir},
      dsn_{std::move(dsn)},
      application_name_{std::move(application_name)},
      refresh_interval_{refresh_interval} {}

directory_sync::~directory_sync() {
  stop();
}

void directory_sync::start() {
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread{[this] { run(); }};
}

void directory_sync::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void directory_sync::run() {
  bool failed_before = false;
  while (!stop_) {
    try {
      listen_once();
    } catch (const std::exception& e) {
      listening_ = false;
      if (!failed_before) {
        log(log_level::warning, "directory_sync_lost", "{} retry=1s", kv("error", e.what()));
      }
      failed_before = true;
    }
    // Wait a second before reconnecting, waking early for stop().
    for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds{100});
  }
}

void directory_sync::listen_once() {
  db_session s{dsn_};
  {
    pqxx::nontransaction tx{s.conn};
    tx.exec_params("SELECT set_config('statement_timeout', '10000', false), set_config('application_name', $1, false)",
                   application_name_ + "-directory");
  }
  std::vector<std::string> payloads;
  receiver rcv{s.conn, payloads};  // LISTEN first, then load: nothing falls in between
  auto post_all = [this](directory_data d) {
    boost::asio::post(loop_, [this, d = std::move(d)]() mutable {
      auto n = d.accounts.size();
      auto w = d.webmail.size();
      dir_.replace(std::move(d));
      log(log_level::debug, "directory_loaded", "accounts={} webmail_networks={}", n, w);
    });
  };
  post_all(load_directory(s));
  if (!listening_.exchange(true)) {
    log(log_level::info, "directory_listening", "{}", kv("channel", notify_channel));
  }
  auto next_full = std::chrono::steady_clock::now() + refresh_interval_;
  while (!stop_) {
    payloads.clear();
    s.conn.await_notification(0, 250000);
    if (std::chrono::steady_clock::now() >= next_full) {
      post_all(load_directory(s));
      next_full = std::chrono::steady_clock::now() + refresh_interval_;
      continue;
    }
    bool webmail = false;
    bool limits = false;
    if (std::find(payloads.begin(), payloads.end(), "accounts") != payloads.end()) {
      post_all(load_directory(s));  // the whole table changed (TRUNCATE)
      continue;
    }
    for (const auto& p : payloads) {
      if (p == "webmail") {
        webmail = true;
      } else if (p == "limits") {
        limits = true;
      } else if (p.rfind("account:", 0) == 0) {
        auto login = p.substr(8);
        auto info = load_account(s, login).value_or(account_info{});
        boost::asio::post(loop_, [this, login, info]() mutable {
          log(log_level::info, "account_state_seen", "{} {}", kv("login", login), kv("state", to_string(info.state)));
          dir_.set_account(login, std::move(info));
        });
      }
    }
    if (webmail) {
      boost::asio::post(loop_, [this, nets = load_webmail(s)]() mutable { dir_.set_webmail(std::move(nets)); });
    }
    if (limits) {
      boost::asio::post(loop_, [this, o = load_overrides(s)]() mutable { dir_.set_overrides(std::move(o)); });
    }
  }
}

}  // namespace lupine::policyd
