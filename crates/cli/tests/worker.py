#!/usr/bin/env python3
"""A worker that knows nothing of overseer: an HTTP/1.1 keep-alive server in
plain Python 3 that takes its socket by systemd socket activation and speaks
sd_notify, for the `overseer run` tests.

- The socket: fd 3, when LISTEN_PID is this process and LISTEN_FDS >= 1.
- Readiness: READY=1 on NOTIFY_SOCKET when WORKER_READY=notify.
- WORKER_DELAY=SECONDS: wait that long before accepting (a slow start).
- WORKER_MARKER_DIR=DIR: create DIR/PID.ready once it accepts (for probes).
- WORKER_STALL_FILE=FILE: while FILE holds this worker's number, it accepts
  nothing (a server whose accept loop is stuck), but still hears SIGTERM;
  it logs "stalled" once it has stopped accepting.
- WORKER_HOLD_FILE=FILE: while draining, idle connections are kept open
  until FILE exists (a drain that lasts until the test says).
- Each response's body: "worker=N pid=PID version=V".
- SIGTERM: stop accepting, answer each open connection's next request with
  "Connection: close", close connections idle for a grace period, exit 0.
- `--version`: print the version and exit 0 (the sanity check).
- `--env-names-to FILE`: write the names of its environment variables to
  FILE, one a line, and exit 0 (a sanity check that shows what it was given).
"""

import os
import signal
import socket
import sys
import threading
import time

VERSION = "1"
GRACE = 1.0

if "--version" in sys.argv[1:]:
    print("worker.py", VERSION)
    sys.exit(0)

if "--env-names-to" in sys.argv[1:-1]:
    with open(sys.argv[sys.argv.index("--env-names-to") + 1], "w") as out:
        out.write("\n".join(os.environ))
    sys.exit(0)

PID = os.getpid()
WORKER = os.environ.get("OVERSEER_WORKER", "0")


def log(message):
    sys.stderr.write("worker.py %s (pid %d): %s\n" % (WORKER, PID, message))
    sys.stderr.flush()


def listener():
    if os.environ.get("LISTEN_PID") != str(PID):
        log("LISTEN_PID is %r, not this process" % os.environ.get("LISTEN_PID"))
        sys.exit(3)
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        log("no socket in LISTEN_FDS")
        sys.exit(3)
    sock = socket.socket(fileno=3)
    # Wakes up regularly to notice SIGTERM; also makes accept safe when the
    # old and new worker share the socket (EAGAIN instead of blocking).
    sock.settimeout(0.2)
    return sock


def notify(message):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.sendall(message.encode())


draining = threading.Event()


def on_term(_signum, _frame):
    draining.set()


def respond(conn, close):
    body = "worker=%s pid=%d version=%s\n" % (WORKER, PID, VERSION)
    head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n" % (
        len(body),
        "close" if close else "keep-alive",
    )
    conn.sendall((head + body).encode())


def serve(conn):
    conn.settimeout(0.1)
    buf = b""
    idle_since = time.monotonic()
    try:
        while True:
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                wants_close = any(
                    l.lower().startswith("connection:") and "close" in l.lower()
                    for l in lines[1:]
                )
                close = wants_close or draining.is_set()
                respond(conn, close)
                if close:
                    return
                idle_since = time.monotonic()
            try:
                data = conn.recv(65536)
            except socket.timeout:
                if draining.is_set() and not buf and time.monotonic() - idle_since > GRACE and released():
                    return
                continue
            if not data:
                return
            buf += data
    except OSError:
        return
    finally:
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.close()


def released():
    hold = os.environ.get("WORKER_HOLD_FILE")
    return not hold or os.path.exists(hold)


def stalled(path):
    try:
        with open(path) as f:
            return f.read().strip() == WORKER
    except OSError:
        return False


def main():
    signal.signal(signal.SIGTERM, on_term)
    sock = listener()
    delay = float(os.environ.get("WORKER_DELAY", "0"))
    if delay > 0:
        time.sleep(delay)
    marker_dir = os.environ.get("WORKER_MARKER_DIR")
    if marker_dir:
        open(os.path.join(marker_dir, "%d.ready" % PID), "w").close()
    if os.environ.get("WORKER_READY") == "notify":
        notify("READY=1\nSTATUS=serving version %s" % VERSION)
    log("serving version %s" % VERSION)
    threads = []
    stall = os.environ.get("WORKER_STALL_FILE")
    said_stalled = False
    while not draining.is_set():
        if stall and stalled(stall):
            if not said_stalled:
                log("stalled")
                said_stalled = True
            time.sleep(0.05)
            continue
        said_stalled = False
        try:
            conn, _ = sock.accept()
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        except BlockingIOError:
            continue
        t = threading.Thread(target=serve, args=(conn,), daemon=True)
        t.start()
        threads = [x for x in threads if x.is_alive()] + [t]
    log("draining %d connections" % sum(1 for t in threads if t.is_alive()))
    deadline = time.monotonic() + 20
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    log("drained")
    sys.exit(0)


main()
