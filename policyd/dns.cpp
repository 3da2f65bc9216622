// c-ares on Asio; see dns.hpp. The only file that includes <ares.h>.
#include "policyd/dns.hpp"

#include <ares.h>
#include <arpa/nameser.h>

#include <algorithm>
#include <map>

#include <fmt/format.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/config.hpp"
#include "core/log.hpp"
#include "policyd/net.hpp"

namespace lupine::policyd {
namespace asio = boost::asio;
using steady = std::chrono::steady_clock;

std::string_view to_string(dns_type t) {
  switch (t) {
    case dns_type::a: return "A";
    case dns_type::aaaa: return "AAAA";
    case dns_type::txt: return "TXT";
    case dns_type::ptr: return "PTR";
  }
  return "?";
}

std::string_view to_string(dns_status s) {
  switch (s) {
    case dns_status::ok: return "ok";
    case dns_status::nxdomain: return "nxdomain";
    case dns_status::nodata: return "nodata";
    case dns_status::servfail: return "servfail";
    case dns_status::timed_out: return "timeout";
    case dns_status::error: return "error";
  }
  return "?";
}

std::string reverse_name(std::string_view address) {
  auto a = parse_ip(address);
  if (!a) return {};
  if (a->is_v4()) {
    auto b = a->to_v4().to_bytes();
    return fmt::format("{}.{}.{}.{}", b[3], b[2], b[1], b[0]);
  }
  auto b = a->to_v6().to_bytes();
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(63);
  for (int i = 15; i >= 0; --i) {
    auto byte = b[static_cast<std::size_t>(i)];
    out.push_back(hex[byte & 0xf]);
    out.push_back('.');
    out.push_back(hex[byte >> 4]);
    if (i != 0) out.push_back('.');
  }
  return out;
}

struct dns_resolver::pending {
  std::string key;
  std::uint64_t id = 0;
  bool done = false;
  dns_answer answer;
  std::vector<asio::steady_timer*> waiters;  // woken (cancelled) when done
};

namespace {

int qtype(dns_type t) {
  switch (t) {
    case dns_type::a: return ns_t_a;
    case dns_type::aaaa: return ns_t_aaaa;
    case dns_type::txt: return ns_t_txt;
    case dns_type::ptr: return ns_t_ptr;
  }
  return ns_t_a;
}

std::uint16_t get16(const unsigned char* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
std::uint32_t get32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

// Walks a DNS message for what c-ares 1.18's parsers do not return: the smallest TTL of
// the answer records, and for negative answers the SOA's negative TTL (RFC 2308:
// min(SOA TTL, SOA MINIMUM)). Names are skipped with ares_expand_name.
struct ttl_info {
  std::optional<std::uint32_t> answer_ttl;
  std::optional<std::uint32_t> negative_ttl;
};

ttl_info scan_ttls(const unsigned char* abuf, int alen) {
  ttl_info info;
  if (alen < 12) return info;
  auto skip_name = [&](const unsigned char*& p) {
    char* name = nullptr;
    long len = 0;
    if (ares_expand_name(p, abuf, alen, &name, &len) != ARES_SUCCESS) return false;
    ares_free_string(name);
    p += len;
    return p <= abuf + alen;
  };
  unsigned qd = get16(abuf + 4), an = get16(abuf + 6), ns = get16(abuf + 8);
  const unsigned char* p = abuf + 12;
  const unsigned char* end = abuf + alen;
  for (unsigned i = 0; i < qd; ++i) {
    if (!skip_name(p) || p + 4 > end) return info;
    p += 4;
  }
  for (unsigned i = 0; i < an + ns; ++i) {
    if (!skip_name(p) || p + 10 > end) return info;
    auto type = get16(p);
    auto ttl = get32(p + 4);
    if ((ttl & 0x80000000U) != 0) ttl = 0;  // RFC 2181 section 8
    auto rdlen = get16(p + 8);
    p += 10;
    if (p + rdlen > end) return info;
    if (i < an) {
      info.answer_ttl = info.answer_ttl ? std::min(*info.answer_ttl, ttl) : ttl;
    } else if (type == ns_t_soa) {
      const unsigned char* r = p;
      if (skip_name(r) && skip_name(r) && r + 20 <= p + rdlen) {
        info.negative_ttl = std::min(ttl, get32(r + 16));
      }
    }
    p += rdlen;
  }
  return info;
}

// The addresses of an A or AAAA answer as text, through c-ares's hostent parser.
template <class Address, class Parser>
int parse_addresses(const unsigned char* abuf, int alen, Parser parse, std::vector<std::string>& out) {
  hostent* h = nullptr;
  int rc = parse(abuf, alen, &h, nullptr, nullptr);
  if (rc == ARES_SUCCESS && h != nullptr) {
    for (char** p = h->h_addr_list; *p != nullptr; ++p) {
      typename Address::bytes_type b{};
      std::copy_n(reinterpret_cast<unsigned char*>(*p), b.size(), b.begin());  // NOLINT: hostent layout
      out.push_back(Address{b}.to_string());
    }
  }
  if (h != nullptr) ares_free_hostent(h);
  return rc;
}

dns_answer parse_answer(dns_type type, int status, const unsigned char* abuf, int alen) {
  dns_answer a;
  switch (status) {
    case ARES_SUCCESS: break;
    case ARES_ENOTFOUND: a.status = dns_status::nxdomain; break;
    case ARES_ENODATA: a.status = dns_status::nodata; break;
    case ARES_ESERVFAIL:
    case ARES_EREFUSED:
    case ARES_ECONNREFUSED: a.status = dns_status::servfail; break;
    case ARES_ETIMEOUT: a.status = dns_status::timed_out; break;
    default: a.status = dns_status::error; break;
  }
  if (status != ARES_SUCCESS) {
    if ((a.status == dns_status::nxdomain || a.status == dns_status::nodata) && abuf != nullptr) {
      auto t = scan_ttls(abuf, alen);
      a.ttl = std::chrono::seconds{t.negative_ttl.value_or(0)};
    }
    return a;
  }
  auto t = scan_ttls(abuf, alen);
  a.ttl = std::chrono::seconds{t.answer_ttl.value_or(0)};
  int rc = ARES_SUCCESS;
  switch (type) {
    case dns_type::a: rc = parse_addresses<asio::ip::address_v4>(abuf, alen, ares_parse_a_reply, a.records); break;
    case dns_type::aaaa:
      rc = parse_addresses<asio::ip::address_v6>(abuf, alen, ares_parse_aaaa_reply, a.records);
      break;
    case dns_type::txt: {
      ares_txt_ext* txt = nullptr;
      rc = ares_parse_txt_reply_ext(abuf, alen, &txt);
      if (rc == ARES_SUCCESS) {
        // Character strings of one record are joined; a new record starts at record_start.
        for (auto* rec = txt; rec != nullptr; rec = rec->next) {
          std::string s{reinterpret_cast<const char*>(rec->txt), rec->length};  // NOLINT: c-ares bytes
          if (rec->record_start != 0 || a.records.empty()) {
            a.records.push_back(std::move(s));
          } else {
            a.records.back() += s;
          }
        }
      }
      if (txt != nullptr) ares_free_data(txt);
      break;
    }
    case dns_type::ptr: {
      hostent* h = nullptr;
      rc = ares_parse_ptr_reply(abuf, alen, nullptr, 0, AF_INET, &h);
      if (rc == ARES_SUCCESS && h != nullptr) {
        if (h->h_name != nullptr) a.records.emplace_back(h->h_name);
        for (char** p = h->h_aliases; p != nullptr && *p != nullptr; ++p) {
          if (std::find(a.records.begin(), a.records.end(), *p) == a.records.end()) a.records.emplace_back(*p);
        }
      }
      if (h != nullptr) ares_free_hostent(h);
      break;
    }
  }
  if (rc == ARES_ENODATA || (rc == ARES_SUCCESS && a.records.empty())) {
    a.status = dns_status::nodata;
  } else if (rc != ARES_SUCCESS) {
    a.status = dns_status::error;
  } else {
    a.status = dns_status::ok;
  }
  return a;
}

}  // namespace

struct dns_resolver::impl {
  impl(asio::any_io_executor ex_, dns_options opts_, dns_stats& st)
      : ex{ex_}, opts{std::move(opts_)}, stats{st}, timer{ex_} {}

  asio::any_io_executor ex;
  dns_options opts;
  dns_stats& stats;
  ares_channel channel = nullptr;
  asio::steady_timer timer;
  struct watch {
    std::unique_ptr<asio::posix::stream_descriptor> sd;
    bool read = false, write = false;
    bool reading = false, writing = false;
    unsigned gen = 0;  // tells a queued handler whether its descriptor is still this one
  };
  unsigned next_gen = 0;
  std::map<ares_socket_t, watch> sockets;
  std::unordered_map<std::string, std::shared_ptr<pending>> inflight;
  std::uint64_t next_query_id = 0;
  // The cache: LRU list of keys, map to (expiry, answer, list position).
  struct entry {
    steady::time_point expires;
    dns_answer answer;
    std::list<std::string>::iterator pos;
  };
  std::list<std::string> lru;
  std::unordered_map<std::string, entry> cache;
  bool closing = false;

  void arm(ares_socket_t fd) {
    auto it = sockets.find(fd);
    if (it == sockets.end()) return;
    auto& w = it->second;
    auto gen = w.gen;
    if (w.read && !w.reading) {
      w.reading = true;
      w.sd->async_wait(asio::posix::stream_descriptor::wait_read, [this, fd, gen](boost::system::error_code ec) {
        auto i = sockets.find(fd);
        if (i == sockets.end() || i->second.gen != gen) return;
        i->second.reading = false;
        if (ec || closing) return;
        ares_process_fd(channel, fd, ARES_SOCKET_BAD);
        arm(fd);
        reschedule();
      });
    }
    if (w.write && !w.writing) {
      w.writing = true;
      w.sd->async_wait(asio::posix::stream_descriptor::wait_write, [this, fd, gen](boost::system::error_code ec) {
        auto i = sockets.find(fd);
        if (i == sockets.end() || i->second.gen != gen) return;
        i->second.writing = false;
        if (ec || closing) return;
        ares_process_fd(channel, ARES_SOCKET_BAD, fd);
        arm(fd);
        reschedule();
      });
    }
  }

  void on_sock_state(ares_socket_t fd, bool readable, bool writable) {
    if (!readable && !writable) {
      auto it = sockets.find(fd);
      if (it != sockets.end()) {
        boost::system::error_code ignored;
        it->second.sd->cancel(ignored);
        it->second.sd->release();  // c-ares owns and closes the fd
        // Handlers still queued find no entry and return.
        sockets.erase(it);
      }
      return;
    }
    auto& w = sockets[fd];
    if (!w.sd) {
      w.sd = std::make_unique<asio::posix::stream_descriptor>(ex, fd);
      w.gen = ++next_gen;
    }
    w.read = readable;
    w.write = writable;
    arm(fd);
  }

  // Follows ares_timeout(): c-ares retries and times out queries from ares_process_fd.
  void reschedule() {
    if (closing) return;
    timeval tv{};
    timeval* t = ares_timeout(channel, nullptr, &tv);
    if (t == nullptr) {
      timer.cancel();
      return;
    }
    auto wait = std::chrono::seconds{t->tv_sec} + std::chrono::microseconds{t->tv_usec};
    timer.expires_after(std::chrono::duration_cast<steady::duration>(wait));
    timer.async_wait([this](boost::system::error_code ec) {
      if (ec || closing) return;
      ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      reschedule();
    });
  }

  void store(const std::string& key, const dns_answer& a) {
    std::chrono::seconds ttl;
    if (a.status == dns_status::ok) {
      ttl = std::clamp(a.ttl, opts.ttl_min, std::max(opts.ttl_min, opts.ttl_max));
    } else if (a.status == dns_status::nxdomain || a.status == dns_status::nodata) {
      ttl = std::clamp(a.ttl, opts.ttl_min, std::max(opts.ttl_min, opts.negative_ttl_max));
    } else {
      return;  // failures are retried next time
    }
    if (opts.cache_size == 0) return;
    if (auto it = cache.find(key); it != cache.end()) {
      lru.erase(it->second.pos);
      cache.erase(it);
    }
    while (cache.size() >= opts.cache_size && !lru.empty()) {
      cache.erase(lru.back());
      lru.pop_back();
    }
    lru.push_front(key);
    cache.emplace(key, entry{steady::now() + ttl, a, lru.begin()});
  }

  void finish(const std::shared_ptr<pending>& p, dns_answer a) {
    a.query_id = p->id;
    p->answer = std::move(a);
    p->done = true;
    inflight.erase(p->key);
    for (auto* t : p->waiters) t->cancel();
    p->waiters.clear();
  }
};

namespace {

struct query_ctx {
  dns_resolver::impl* self;
  std::shared_ptr<dns_resolver::pending> p;
  dns_type type;
};

void on_answer(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
  std::unique_ptr<query_ctx> ctx{static_cast<query_ctx*>(arg)};
  auto answer = parse_answer(ctx->type, status, abuf, alen);
  if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) answer.status = dns_status::error;
  ctx->self->store(ctx->p->key, answer);
  ctx->self->finish(ctx->p, std::move(answer));
}

void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
  static_cast<dns_resolver::impl*>(data)->on_sock_state(fd, readable != 0, writable != 0);
}

}  // namespace

dns_resolver::dns_resolver(asio::any_io_executor ex, dns_options opts)
    : impl_{std::make_unique<impl>(ex, std::move(opts), stats_)} {
  static const int lib = ares_library_init(ARES_LIB_INIT_ALL);
  if (lib != ARES_SUCCESS) throw config_error{fmt::format("dns: c-ares: {}", ares_strerror(lib))};
  ares_options o{};
  o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  o.timeout = static_cast<int>(impl_->opts.timeout.count());
  o.tries = static_cast<int>(impl_->opts.tries);
  o.sock_state_cb = lupine::policyd::on_sock_state;
  o.sock_state_cb_data = impl_.get();
  int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
  int rc = ares_init_options(&impl_->channel, &o, mask);
  if (rc != ARES_SUCCESS) throw config_error{fmt::format("dns: cannot start c-ares: {}", ares_strerror(rc))};
  if (!impl_->opts.servers.empty()) {
    std::string csv;
    for (const auto& s : impl_->opts.servers) csv += (csv.empty() ? "" : ",") + s;
    rc = ares_set_servers_ports_csv(impl_->channel, csv.c_str());
    if (rc != ARES_SUCCESS) {
      ares_destroy(impl_->channel);
      impl_->channel = nullptr;
      throw config_error{fmt::format("dns.servers = {}: {}", csv, ares_strerror(rc))};
    }
  }
}

dns_resolver::~dns_resolver() {
  if (impl_->channel != nullptr) {
    impl_->closing = true;
    ares_destroy(impl_->channel);  // calls the pending callbacks with ARES_EDESTRUCTION
    impl_->channel = nullptr;
  }
}

void dns_resolver::cancel_all() {
  if (impl_->channel != nullptr) ares_cancel(impl_->channel);
}

std::shared_ptr<dns_resolver::pending> dns_resolver::start(const std::string& name, dns_type type) {
  auto& im = *impl_;
  std::string key = fmt::format("{} {}", to_string(type), name);
  if (auto it = im.cache.find(key); it != im.cache.end()) {
    if (it->second.expires > steady::now()) {
      ++stats_.cache_hits;
      im.lru.splice(im.lru.begin(), im.lru, it->second.pos);
      auto p = std::make_shared<pending>();
      p->key = key;
      p->done = true;
      p->answer = it->second.answer;
      p->answer.from_cache = true;
      return p;
    }
    im.lru.erase(it->second.pos);
    im.cache.erase(it);
  }
  if (auto it = im.inflight.find(key); it != im.inflight.end()) {
    ++stats_.shared;
    return it->second;
  }
  auto p = std::make_shared<pending>();
  p->key = key;
  p->id = ++im.next_query_id;
  im.inflight.emplace(key, p);
  ++stats_.queries_sent;
  auto* ctx = new query_ctx{&im, p, type};  // NOLINT: owned by on_answer
  ares_query(im.channel, name.c_str(), ns_c_in, qtype(type), on_answer, ctx);
  im.reschedule();
  return p;
}

asio::awaitable<dns_answer> dns_resolver::wait(std::shared_ptr<pending> p, steady::time_point deadline) {
  if (!p->done) {
    asio::steady_timer t{impl_->ex, deadline};
    // Registered while this frame lives, whatever ends it.
    struct registration {
      pending& p;
      asio::steady_timer* t;
      ~registration() { p.waiters.erase(std::remove(p.waiters.begin(), p.waiters.end(), t), p.waiters.end()); }
    } reg{*p, &t};
    p->waiters.push_back(&t);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  if (!p->done) {
    dns_answer a;
    a.status = dns_status::timed_out;
    a.query_id = p->id;
    co_return a;
  }
  co_return p->answer;
}

asio::awaitable<dns_answer> dns_resolver::lookup(std::string name, dns_type type, steady::time_point deadline) {
  auto p = start(name, type);
  co_return co_await wait(std::move(p), deadline);
}

}  // namespace lupine::policyd
