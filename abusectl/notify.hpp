// The notification mail a restricted user receives: a template with {placeholders}, made
// into an RFC 5322 message and submitted over SMTP with libcurl.
#pragma once

#include <map>
#include <string>

namespace lupine::abusectl {

// The built-in template: headers, a blank line, the body. Placeholders: {from} {to}
// {login} {case} {reason} {date} {message_id}.
const std::string& default_notification_template();

// tmpl with every {name} of vars replaced; unknown placeholders are left as they are. Line
// ends become CRLF; a line starting with '.' is kept as is (libcurl dot-stuffs).
std::string render_template(const std::string& tmpl, const std::map<std::string, std::string>& vars);

// Submits message from `from` to `to` through smtp_url (smtp://host:port). Returns "" or a
// one-line error. Bounded: 30 s in all.
std::string send_mail(const std::string& smtp_url, const std::string& from, const std::string& to,
                      const std::string& message);

}  // namespace lupine::abusectl
