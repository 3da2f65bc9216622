// dunno_server: the smallest useful policy server, the ceiling for bench/compare.py. One
// thread, one Asio io_context (as policyd), a coroutine per connection; it reads until an
// empty line ends a request and answers `action=DUNNO` without looking at the attributes.
// What it costs is the floor of any policy server on this machine: the kernel's loopback,
// one read and one write per request, and the generator itself.
//
//   dunno_server [--host 127.0.0.1] [--port 10099]
#include <cstdio>
#include <string>

#include <boost/asio.hpp>
#include <boost/program_options.hpp>

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

asio::awaitable<void> session(tcp::socket sock) {
  static constexpr std::string_view reply = "action=DUNNO\n\n";
  std::string buf;
  std::string out;
  char chunk[8192];
  try {
    sock.set_option(tcp::no_delay(true));
    while (true) {
      std::size_t n = co_await sock.async_read_some(asio::buffer(chunk), asio::use_awaitable);
      // Only the new bytes (and the one before them) can complete a "\n\n".
      std::size_t from = buf.empty() ? 0 : buf.size() - 1;
      buf.append(chunk, n);
      std::size_t start = 0;
      out.clear();
      for (auto end = buf.find("\n\n", from); end != std::string::npos; end = buf.find("\n\n", start)) {
        out += reply;
        start = end + 2;
      }
      if (start > 0) buf.erase(0, start);
      if (!out.empty()) co_await asio::async_write(sock, asio::buffer(out), asio::use_awaitable);
    }
  } catch (const boost::system::system_error&) {
    // peer closed
  }
}

asio::awaitable<void> listener(tcp::acceptor acc) {
  while (true) {
    tcp::socket s = co_await acc.async_accept(asio::use_awaitable);
    asio::co_spawn(acc.get_executor(), session(std::move(s)), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  std::string host = "127.0.0.1";
  unsigned short port = 10099;
  po::options_description d{"dunno_server options"};
  d.add_options()("help", "help")("host", po::value(&host))("port", po::value(&port));
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, d), vm);
  po::notify(vm);
  if (vm.count("help") != 0) {
    std::puts("dunno_server [--host 127.0.0.1] [--port 10099]: answers action=DUNNO to every request");
    return 0;
  }
  asio::io_context io{1};
  tcp::acceptor acc{io, tcp::endpoint{asio::ip::make_address(host), port}};
  asio::signal_set stop{io, SIGINT, SIGTERM};
  stop.async_wait([&](auto, int) { io.stop(); });
  asio::co_spawn(io, listener(std::move(acc)), asio::detached);
  io.run();
  return 0;
}
