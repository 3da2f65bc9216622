// The account directory: what policyd knows about accounts without asking the database on
// each request. It holds the accounts that are not active (restricted, terminated), the
// webmail networks and the sending-limit overrides; an account it does not hold is active.
//
// `directory` lives on the event loop and is read there without locks. `directory_sync`
// keeps it current from a thread of its own: a dedicated connection LISTENs on
// lupine_directory (sql/003 sends a notification on every change), reloads what changed
// and posts it to the loop. A lost connection is retried every second, and after every
// (re)connect everything is reloaded, so no change is missed; a full reload also runs every
// `accounts.refresh_interval` as a safety net. A state change therefore reaches every
// instance within about a second while the database is up.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "policyd/limits.hpp"
#include "policyd/net.hpp"

namespace lupine {
struct db_session;
}

namespace lupine::policyd {

enum class account_state { active, restricted, terminated };
std::string_view to_string(account_state s);
std::optional<account_state> parse_account_state(std::string_view s);

struct account_info {
  account_state state = account_state::active;
  std::string reason;
};

// Lower-cased SASL login, as the account table keys it.
std::string normalize_login(std::string_view login);

struct directory_data {
  std::unordered_map<std::string, account_info> accounts;  // not active only
  std::vector<cidr> webmail;
  limit_overrides overrides;
};

class directory {
 public:
  account_info account(const std::string& login) const;
  bool from_webmail(const ip_address& a) const;
  const std::vector<cidr>& webmail() const { return data_.webmail; }
  const limit_overrides& overrides() const { return data_.overrides; }
  std::size_t accounts_held() const { return data_.accounts.size(); }

  void replace(directory_data d) { data_ = std::move(d); }
  void set_account(const std::string& login, account_info info);
  void set_webmail(std::vector<cidr> nets) { data_.webmail = std::move(nets); }
  void set_overrides(limit_overrides o) { data_.overrides = std::move(o); }

 private:
  directory_data data_;
};

// SQL (policyd/directory_sync.cpp). Blocking; throw pqxx errors.
directory_data load_directory(db_session& s);
std::optional<account_info> load_account(db_session& s, const std::string& login);  // nullopt: active
std::vector<cidr> load_webmail(db_session& s);
limit_overrides load_overrides(db_session& s);

class directory_sync {
 public:
  directory_sync(boost::asio::any_io_executor loop, directory& dir, std::string dsn, std::string application_name,
                 std::chrono::milliseconds refresh_interval);
  ~directory_sync();
  directory_sync(const directory_sync&) = delete;
  directory_sync& operator=(const directory_sync&) = delete;

  void start();
  void stop();  // joins; returns within about a second
  bool listening() const { return listening_.load(); }

 private:
  void run();
  void listen_once();

  boost::asio::any_io_executor loop_;
  directory& dir_;
  std::string dsn_;
  std::string application_name_;
  std::chrono::milliseconds refresh_interval_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> listening_{false};
  std::thread thread_;
};

}  // namespace lupine::policyd
