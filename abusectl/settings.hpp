// abusectl's settings: the database (see commands.hpp) and the [abusectl] section of the
// configuration file policyd reads too (policyd skips that section):
//
//   [abusectl]
//   our_hosts = smtp.example.org mx1.example.org .out.example.org   # our Received "by" hosts
//   smtp_url = smtp://127.0.0.1:25       # where notifications are submitted
//   notify_from = abuse@example.org      # their sender (required to notify)
//   notify_template = /etc/lupine/restricted.txt   # optional; built-in text otherwise
//   mail_domain = example.org            # for logins without '@': LOGIN@mail_domain
#pragma once

#include <string>
#include <vector>

#include "abusectl/commands.hpp"

namespace lupine::abusectl {

struct settings {
  std::string database;
  std::vector<std::string> our_hosts;
  std::string smtp_url = "smtp://127.0.0.1:25";
  std::string notify_from;
  std::string notify_template;
  std::string mail_domain;
};

// Reads the -c file (or /etc/lupine/policyd.conf when it exists). Throws
// std::runtime_error with a one-line reason (a bad file, no database).
settings load_settings(const global_options& g);

}  // namespace lupine::abusectl
