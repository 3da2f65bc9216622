// Matching a complaint's spam copies against the event log (abusectl verify, case export).
//
// A copy that passed through our systems carries our submission hop: the oldest Received
// header written by one of abusectl.our_hosts (parse_message). Its queue id leads to the
// END-OF-MESSAGE row of that message in the event log (queue ids are reused over time, so
// only within a day of the hop's time); the rows of the same Postfix transaction (same
// instance) give the recipients. The copy matches when that row exists and nothing it
// claims contradicts the log: the authenticated sender (and the case's account), the client
// address, the time (within 10 minutes), the envelope sender and its recipients.
#pragma once

#include <string>
#include <vector>

namespace pqxx {
class transaction_base;
}

namespace lupine::abusectl {

struct check_line {
  std::string what;    // "queue id", "sender account", ...
  std::string status;  // "ok", "mismatch", "unknown"
  std::string detail;  // "4XABCDEF12", "copy says bob@..., log says eve@..."
};

struct copy_verdict {
  long long message_id = 0;  // case_message.id
  std::string file;
  int part = 0;
  bool matched = false;
  std::string summary;  // one line: why
  std::vector<check_line> checks;
  std::string instance;  // the matching Postfix transaction (for the export's log rows)
  std::string policyd;
};

// Verdicts for every copy of case case_id (in import order).
std::vector<copy_verdict> verify_case(pqxx::transaction_base& tx, long long case_id);

}  // namespace lupine::abusectl
