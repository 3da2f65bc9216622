// policyd's command line and start-up sequence, callable from main() and tests.
#pragma once

namespace lupine::policyd {

// Exit codes: 0 ok, 1 runtime failure (database down at start), 2 usage, 78 configuration.
int app_main(int argc, char** argv);

}  // namespace lupine::policyd
