// Notification mail; see notify.hpp.
#include "abusectl/notify.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include <fmt/format.h>

namespace lupine::abusectl {

const std::string& default_notification_template() {
  static const std::string t =
      "From: {from}\n"
      "To: {to}\n"
      "Subject: Your account {login} is restricted to webmail\n"
      "Date: {date}\n"
      "Message-ID: {message_id}\n"
      "MIME-Version: 1.0\n"
      "Content-Type: text/plain; charset=utf-8\n"
      "Content-Transfer-Encoding: 8bit\n"
      "Auto-Submitted: auto-generated\n"
      "\n"
      "Hello,\n"
      "\n"
      "we received a complaint about mail sent from your account {login}.\n"
      "While we look into it (case {case}), your account is restricted to webmail:\n"
      "sending and reading mail with mail programs (SMTP, IMAP and POP3) is switched\n"
      "off, but you can still send and receive mail through our webmail.\n"
      "\n"
      "Reason: {reason}\n"
      "\n"
      "If you did not send this mail, your password may be known to someone else:\n"
      "please change it through webmail. Reply to this message if you have questions.\n"
      "\n"
      "-- \n"
      "The abuse team <{from}>\n";
  return t;
}

std::string render_template(const std::string& tmpl, const std::map<std::string, std::string>& vars) {
  std::string out;
  out.reserve(tmpl.size() + 256);
  for (std::size_t i = 0; i < tmpl.size(); ++i) {
    char c = tmpl[i];
    if (c == '{') {
      auto close = tmpl.find('}', i);
      if (close != std::string::npos) {
        auto it = vars.find(tmpl.substr(i + 1, close - i - 1));
        if (it != vars.end()) {
          out += it->second;
          i = close;
          continue;
        }
      }
    }
    if (c == '\r') continue;
    if (c == '\n') {
      out += "\r\n";
      continue;
    }
    out += c;
  }
  return out;
}

namespace {

struct upload {
  const std::string* data;
  std::size_t pos = 0;
};

std::size_t read_cb(char* buf, std::size_t size, std::size_t n, void* userp) {
  auto* u = static_cast<upload*>(userp);
  std::size_t room = size * n;
  std::size_t left = u->data->size() - u->pos;
  std::size_t k = std::min(room, left);
  std::memcpy(buf, u->data->data() + u->pos, k);
  u->pos += k;
  return k;
}

}  // namespace

std::string send_mail(const std::string& smtp_url, const std::string& from, const std::string& to,
                      const std::string& message) {
  std::unique_ptr<CURL, void (*)(CURL*)> curl{curl_easy_init(), curl_easy_cleanup};
  if (!curl) return "cannot initialise libcurl";
  curl_slist* rcpts = curl_slist_append(nullptr, fmt::format("<{}>", to).c_str());
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> guard{rcpts, curl_slist_free_all};
  upload u{&message};
  char err[CURL_ERROR_SIZE] = {};
  auto from_arg = fmt::format("<{}>", from);
  curl_easy_setopt(curl.get(), CURLOPT_URL, smtp_url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_MAIL_FROM, from_arg.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_MAIL_RCPT, rcpts);
  curl_easy_setopt(curl.get(), CURLOPT_READFUNCTION, read_cb);
  curl_easy_setopt(curl.get(), CURLOPT_READDATA, &u);
  curl_easy_setopt(curl.get(), CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, err);
  auto rc = curl_easy_perform(curl.get());
  if (rc != CURLE_OK) {
    return fmt::format("{} ({})", err[0] != '\0' ? err : curl_easy_strerror(rc), smtp_url);
  }
  return {};
}

}  // namespace lupine::abusectl
