// policyd: the Postfix policy server. main() only wires objects; see docs/policyd.md.
#include <csignal>
#include <iostream>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "core/log.hpp"
#include "policyd/app.hpp"

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  return lupine::policyd::app_main(argc, argv);
}
