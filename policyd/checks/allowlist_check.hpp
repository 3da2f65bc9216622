// Allow-list check: a client, sender or recipient on an allow-list skips the checks after
// it (greylisting). Reads the current allowlist snapshot; never blocks.
#pragma once

#include <memory>

#include "policyd/allowlist.hpp"
#include "policyd/pipeline.hpp"

namespace lupine::policyd {

// The loop owns it; reload() swaps in a new snapshot (SIGHUP). Requests in flight keep
// the snapshot they started with.
class allowlist_holder {
 public:
  std::shared_ptr<const allowlist> get() const { return current_; }
  void set(std::shared_ptr<const allowlist> a) { current_ = std::move(a); }

 private:
  std::shared_ptr<const allowlist> current_ = std::make_shared<allowlist>();
};

class allowlist_check final : public check {
 public:
  explicit allowlist_check(const allowlist_holder& h) : holder_{h} {}
  std::string_view name() const override { return "allowlist"; }
  boost::asio::awaitable<check_result> evaluate(const request_context& ctx) override;

 private:
  const allowlist_holder& holder_;
};

}  // namespace lupine::policyd
