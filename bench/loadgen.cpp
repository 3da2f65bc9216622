// loadgen: a Postfix-like load generator for policy servers. N persistent connections,
// one request at a time on each (as smtpd does), the attribute set Postfix 3.7 sends,
// a deterministic mix by seed: clients spread over many /24s, many senders and recipients,
// a share of retries of earlier triplets, and a share of authenticated submissions (one RCPT
// per recipient, 1-4 recipients, then END-OF-MESSAGE with recipient_count and size) from
// --accounts distinct SASL logins. Bounded by request count and by time. Prints requests/s,
// latency percentiles and replies by action. Loopback use only.
//
//   loadgen [--host 127.0.0.1] [--port 10031] [--connections 8] [--requests 20000]
//           [--seconds 30] [--seed 1] [--retry-share 0.3] [--auth-share 0] [--accounts 10000]
//           [--sender-tag T]
// --sender-tag T appends "+T" to every generated sender's local part and changes nothing else
// (the same clients, recipients and retries in the same order): a run with a tag warms a
// server's DNS cache with exactly the clients of a later untagged run of the same seed,
// whose triplets are still new (bench/compare.py).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <boost/asio.hpp>
#include <boost/program_options.hpp>

namespace asio = boost::asio;
using asio::ip::tcp;
using clk = std::chrono::steady_clock;

namespace {

struct stats {
  std::vector<double> latencies_us;
  std::map<std::string, long> actions;
  long errors = 0;
};

std::string make_request(std::mt19937_64& rng, double retry_share, std::vector<std::string>& earlier, long seq,
                         const std::string& tag) {
  std::uniform_real_distribution<double> u{0, 1};
  std::string triplet;
  if (!earlier.empty() && u(rng) < retry_share) {
    triplet = earlier[rng() % earlier.size()];
  } else {
    auto net = rng() % 5000;
    // Arguments are evaluated in an unspecified order: draw them in a fixed one.
    auto host = 1 + rng() % 250;
    auto user = rng() % 1000;
    auto domain = rng() % 300;
    auto rcpt = rng() % 2000;
    triplet =
        fmt::format("client_address=10.{}.{}.{}\nsender=user{}{}@sender{}.example\nrecipient=rcpt{}@example.org\n",
                    net / 256, net % 256, host, user, tag.empty() ? std::string{} : "+" + tag, domain, rcpt);
    if (earlier.size() < 100000) earlier.push_back(triplet);
  }
  return fmt::format(
      "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n{}client_name=unknown\n"
      "reverse_client_name=unknown\nhelo_name=mail.example.net\nqueue_id=\nrecipient_count=0\n"
      "instance={:x}.{:x}.0\nsize=0\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\n"
      "ccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=\nencryption_cipher=\n"
      "encryption_keysize=0\netrn_domain=\nstress=\nclient_port=40000\npolicy_context=\n"
      "server_address=127.0.0.1\nserver_port=25\n\n",
      triplet, seq, seq * 7);
}

// One authenticated submission: an RCPT request per recipient, then END-OF-MESSAGE.
void make_submission(std::mt19937_64& rng, unsigned accounts, long seq, std::deque<std::string>& out) {
  auto account = rng() % accounts;
  auto n = 1 + rng() % 4;
  auto size = 2000 + rng() % 60000;
  auto common = [&](const char* state, const std::string& rcpt, unsigned long count, unsigned long sz) {
    return fmt::format(
        "request=smtpd_access_policy\nprotocol_state={}\nprotocol_name=ESMTPSA\nclient_address=172.16.{}.{}\n"
        "client_name=client.example.net\nreverse_client_name=client.example.net\nhelo_name=[192.168.1.2]\n"
        "sender=user{}@example.org\nrecipient={}\nrecipient_count={}\nqueue_id={}\ninstance={:x}.{:x}.1\n"
        "size={}\nsasl_method=PLAIN\nsasl_username=user{}@example.org\nsasl_sender=\nccert_subject=\n"
        "ccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=TLSv1.3\n"
        "encryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\netrn_domain=\nstress=\n"
        "client_port=40000\npolicy_context=\nserver_address=127.0.0.1\nserver_port=587\n\n",
        state, (account / 250) % 256, 1 + account % 250, account, rcpt, count,
        count == 0 ? std::string{} : fmt::format("4X{:08X}", seq), seq, seq * 7, sz, account);
  };
  std::string last;
  for (unsigned long i = 0; i < n; ++i) {
    last = fmt::format("friend{}@domain{}.example", rng() % 50, rng() % 20);
    out.push_back(common("RCPT", last, 0, size));
  }
  out.push_back(common("END-OF-MESSAGE", n == 1 ? last : std::string{}, n, size));
}

asio::awaitable<void> worker(tcp::endpoint ep, long count, clk::time_point until, unsigned seed, double retry_share,
                             double auth_share, unsigned accounts, std::string tag, stats& st) {
  auto ex = co_await asio::this_coro::executor;
  tcp::socket sock{ex};
  co_await sock.async_connect(ep, asio::use_awaitable);
  sock.set_option(tcp::no_delay(true));
  std::mt19937_64 rng{seed};
  std::vector<std::string> earlier;
  std::deque<std::string> pending;
  std::uniform_real_distribution<double> u{0, 1};
  std::string buf;
  for (long i = 0; i < count && clk::now() < until; ++i) {
    long seq = i + static_cast<long>(seed) * 1000000;
    if (pending.empty() && auth_share > 0 && u(rng) < auth_share) make_submission(rng, accounts, seq, pending);
    std::string req;
    if (!pending.empty()) {
      req = std::move(pending.front());
      pending.pop_front();
    } else {
      req = make_request(rng, retry_share, earlier, seq, tag);
    }
    auto t0 = clk::now();
    co_await asio::async_write(sock, asio::buffer(req), asio::use_awaitable);
    auto n = co_await asio::async_read_until(sock, asio::dynamic_buffer(buf), "\n\n", asio::use_awaitable);
    st.latencies_us.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
    std::string line = buf.substr(0, n);
    buf.erase(0, n);
    if (line.rfind("action=", 0) != 0) {
      ++st.errors;
      continue;
    }
    auto word = line.substr(7, line.find_first_of(" \n", 7) - 7);
    ++st.actions[word];
  }
}

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  std::string host = "127.0.0.1";
  unsigned short port = 10031;
  unsigned conns = 8;
  long requests = 20000;
  double seconds = 30;
  unsigned seed = 1;
  double retry_share = 0.3;
  double auth_share = 0;
  unsigned accounts = 10000;
  std::string sender_tag;
  po::options_description d{"loadgen options"};
  d.add_options()("help", "help")("host", po::value(&host))("port", po::value(&port))("connections", po::value(&conns))(
      "requests", po::value(&requests))("seconds", po::value(&seconds))("seed", po::value(&seed))(
      "retry-share", po::value(&retry_share))("auth-share", po::value(&auth_share))("accounts", po::value(&accounts))(
      "sender-tag", po::value(&sender_tag));
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, d), vm);
  po::notify(vm);
  if (vm.count("help") != 0) {
    std::puts(
        "loadgen [--host H] [--port P] [--connections N] [--requests N] [--seconds S] [--seed N] [--retry-share F]\n"
        "        [--auth-share F] [--accounts N] [--sender-tag T]\n"
        "  --auth-share F   share of messages that are authenticated submissions (RCPT per recipient, then\n"
        "                   END-OF-MESSAGE), from --accounts distinct SASL logins\n"
        "  --sender-tag T   senders become userN+T@...: the same clients as without it, other triplets");
    return 0;
  }
  asio::io_context io{1};
  tcp::endpoint ep{asio::ip::make_address(host), port};
  std::vector<stats> per(conns);
  auto until = clk::now() + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(seconds));
  auto start = clk::now();
  long failed = 0;
  for (unsigned c = 0; c < conns; ++c) {
    asio::co_spawn(io,
                   worker(ep, requests / conns, until, seed * 7919 + c, retry_share, auth_share, std::max(1U, accounts),
                          sender_tag, per[c]),
                   [&failed](std::exception_ptr e) {
                     if (e) ++failed;
                   });
  }
  io.run();
  double elapsed = std::chrono::duration<double>(clk::now() - start).count();
  stats all;
  for (auto& s : per) {
    all.latencies_us.insert(all.latencies_us.end(), s.latencies_us.begin(), s.latencies_us.end());
    for (auto& [k, v] : s.actions) all.actions[k] += v;
    all.errors += s.errors;
  }
  std::sort(all.latencies_us.begin(), all.latencies_us.end());
  auto pct = [&](double p) {
    if (all.latencies_us.empty()) return 0.0;
    return all.latencies_us[std::min(all.latencies_us.size() - 1,
                                     static_cast<size_t>(p * static_cast<double>(all.latencies_us.size())))];
  };
  fmt::print("connections={} requests={} seconds={:.2f} decisions/s={:.0f}\n", conns, all.latencies_us.size(), elapsed,
             static_cast<double>(all.latencies_us.size()) / elapsed);
  fmt::print("latency_ms p50={:.3f} p90={:.3f} p99={:.3f} max={:.3f}\n", pct(0.5) / 1000, pct(0.9) / 1000,
             pct(0.99) / 1000, all.latencies_us.empty() ? 0.0 : all.latencies_us.back() / 1000);
  for (auto& [k, v] : all.actions) fmt::print("action {} {}\n", k, v);
  fmt::print("errors={} failed_connections={}\n", all.errors, failed);
  return failed == 0 && all.errors == 0 ? 0 : 1;
}
