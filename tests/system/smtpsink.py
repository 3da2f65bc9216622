"""A small SMTP server for the tests: it accepts every message on loopback and keeps it
(envelope and data) in memory, so a test can check the mail abusectl sent. Speaks enough
of RFC 5321 for libcurl and Postfix: EHLO/HELO, MAIL, RCPT, DATA (dot-unstuffed), RSET,
NOOP, QUIT. Every read is bounded by a timeout; the server thread is a daemon."""

import socket
import socketserver
import threading


class Message:
    def __init__(self, mail_from, rcpt_to, data):
        self.mail_from = mail_from
        self.rcpt_to = rcpt_to
        self.data = data  # bytes, CRLF line ends, dot-unstuffed

    def text(self):
        return self.data.decode("utf-8", "replace").replace("\r\n", "\n")

    def headers(self):
        head = self.text().split("\n\n", 1)[0]
        out = {}
        for line in head.replace("\n ", " ").replace("\n\t", " ").split("\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                out[k.strip().lower()] = v.strip()
        return out

    def body(self):
        parts = self.text().split("\n\n", 1)
        return parts[1] if len(parts) > 1 else ""


class _Handler(socketserver.StreamRequestHandler):
    timeout = 10

    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())

    def handle(self):
        sink = self.server.sink
        self.reply("220 sink.test ESMTP test sink")
        mail_from, rcpts = None, []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            cmd = line.decode("latin-1").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250-sink.test\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n")
            elif verb == "MAIL":
                mail_from, rcpts = cmd.split(":", 1)[1].strip().split(" ")[0].strip("<>"), []
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpts.append(cmd.split(":", 1)[1].strip().split(" ")[0].strip("<>"))
                self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                if sink.fail_data:
                    self.reply("554 5.3.0 sink told to refuse")
                    continue
                self.reply("354 go ahead")
                data = bytearray()
                while True:
                    l = self.rfile.readline(1 << 20)
                    if not l or l in (b".\r\n", b".\n"):
                        break
                    if l.startswith(b".."):
                        l = l[1:]
                    data += l
                sink.add(Message(mail_from, list(rcpts), bytes(data)))
                self.reply("250 2.0.0 queued")
            elif verb == "RSET":
                mail_from, rcpts = None, []
                self.reply("250 ok")
            elif verb == "NOOP":
                self.reply("250 ok")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 5.5.2 not implemented")


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SmtpSink:
    """with SmtpSink() as sink: ... sink.port, sink.messages, sink.wait_for(n)"""

    def __init__(self):
        self.messages = []
        self.fail_data = False
        self._cond = threading.Condition()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.sink = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def add(self, m):
        with self._cond:
            self.messages.append(m)
            self._cond.notify_all()

    def wait_for(self, n, timeout=10):
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= n, timeout)
            return len(self.messages) >= n

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
