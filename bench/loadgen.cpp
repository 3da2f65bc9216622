// loadgen: a Postfix-like load generator for policy servers. N persistent connections,
// one request at a time on each (as smtpd does), the attribute set Postfix 3.7 sends,
// a deterministic mix by seed: clients spread over many /24s, many senders and recipients,
// and a share of retries of earlier triplets. Bounded by request count and by time.
// Prints requests/s, latency percentiles and replies by action. Loopback use only.
//
//   loadgen [--host 127.0.0.1] [--port 10031] [--connections 8] [--requests 20000]
//           [--seconds 30] [--seed 1] [--retry-share 0.3]
#include <algorithm>
#include <chrono>
#include <cstdio>
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

std::string make_request(std::mt19937_64& rng, double retry_share, std::vector<std::string>& earlier, long seq) {
  std::uniform_real_distribution<double> u{0, 1};
  std::string triplet;
  if (!earlier.empty() && u(rng) < retry_share) {
    triplet = earlier[rng() % earlier.size()];
  } else {
    auto net = rng() % 5000;
    triplet = fmt::format("client_address=10.{}.{}.{}\nsender=user{}@sender{}.example\nrecipient=rcpt{}@example.org\n",
                          net / 256, net % 256, 1 + rng() % 250, rng() % 1000, rng() % 300, rng() % 2000);
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

asio::awaitable<void> worker(tcp::endpoint ep, long count, clk::time_point until, unsigned seed, double retry_share,
                             stats& st) {
  auto ex = co_await asio::this_coro::executor;
  tcp::socket sock{ex};
  co_await sock.async_connect(ep, asio::use_awaitable);
  sock.set_option(tcp::no_delay(true));
  std::mt19937_64 rng{seed};
  std::vector<std::string> earlier;
  std::string buf;
  for (long i = 0; i < count && clk::now() < until; ++i) {
    auto req = make_request(rng, retry_share, earlier, i + static_cast<long>(seed) * 1000000);
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
  po::options_description d{"loadgen options"};
  d.add_options()("help", "help")("host", po::value(&host))("port", po::value(&port))("connections", po::value(&conns))(
      "requests", po::value(&requests))("seconds", po::value(&seconds))("seed", po::value(&seed))(
      "retry-share", po::value(&retry_share));
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, d), vm);
  po::notify(vm);
  if (vm.count("help") != 0) {
    std::puts(
        "loadgen [--host H] [--port P] [--connections N] [--requests N] [--seconds S] [--seed N] [--retry-share F]");
    return 0;
  }
  asio::io_context io{1};
  tcp::endpoint ep{asio::ip::make_address(host), port};
  std::vector<stats> per(conns);
  auto until = clk::now() + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(seconds));
  auto start = clk::now();
  long failed = 0;
  for (unsigned c = 0; c < conns; ++c) {
    asio::co_spawn(io, worker(ep, requests / conns, until, seed * 7919 + c, retry_share, per[c]),
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
