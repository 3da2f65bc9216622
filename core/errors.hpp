// Expected failures as values: lupine::errc in its own error category, and result<T>.
// No pqxx, curl or ares error type crosses a module boundary; adapters map them here.
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace lupine {

enum class errc {
  ok = 0,
  db_unavailable = 1,  // cannot connect, or the connection broke
  db_error,            // the statement failed (syntax, timeout, lock, ...)
  db_rejected,         // the server refused the data itself (SQLSTATE class 22, 23 or 54)
  db_busy,             // too many database jobs in flight: shed instead of queueing
  timed_out,           // a deadline passed
  shutting_down,       // the pool is stopping
};

const boost::system::error_category& lupine_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), lupine_category()};
}

template <class T>
using result = boost::system::result<T, boost::system::error_code>;

}  // namespace lupine

template <>
struct boost::system::is_error_code_enum<lupine::errc> : std::true_type {};
