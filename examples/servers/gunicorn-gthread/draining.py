"""gunicorn's gthread worker, draining its keep-alive connections on SIGTERM.

On SIGTERM gunicorn's own gthread worker leaves its event loop at once: the
keep-alive connections it holds idle are closed as it exits, while their
clients may be sending the next request on them (a reset). And a response
that was promised keep-alive just before the signal has its connection
closed right after it, though its client will reuse it. This worker stops
accepting instead and keeps serving the connections it has, those included:
gunicorn already answers each next request with `Connection: close` once
the worker is stopping. It closes those still idle after a grace period,
and exits when none is left (or after --graceful-timeout).

Use it with `--worker-class draining.DrainingThreadWorker` (and --chdir to
this directory, or this file anywhere on the Python path).
"""

import selectors
import time
from concurrent import futures
from functools import partial

from gunicorn.workers.gthread import ThreadWorker

# How long a connection may stay idle once the worker is stopping.
GRACE = 2.0


class DrainingThreadWorker(ThreadWorker):
    def run(self):
        for sock in self.sockets:
            sock.setblocking(False)
            server = sock.getsockname()
            self.poller.register(sock, selectors.EVENT_READ, partial(self.accept, server))
        while self.alive:
            self.notify()
            self.turn(1.0)
            if not self.is_parent_alive():
                break
            self.murder_keepalived()
        self.drain()

    def turn(self, wait):
        """One turn of gthread's loop: events, then finished requests."""
        if self.nr_conns < self.worker_connections:
            for key, _ in self.poller.select(wait):
                key.data(key.fileobj)
            result = futures.wait(self.futures, timeout=0, return_when=futures.FIRST_COMPLETED)
        else:
            result = futures.wait(self.futures, timeout=wait, return_when=futures.FIRST_COMPLETED)
        for fut in result.done:
            self.futures.remove(fut)

    def drain(self):
        """Stops accepting, serves the open connections, then exits."""
        for sock in self.sockets:
            try:
                self.poller.unregister(sock)
            except (KeyError, ValueError, OSError):
                pass
            sock.close()
        start = time.monotonic()
        deadline = start + self.cfg.graceful_timeout
        # Until no request is in progress and no connection is open (each
        # open one is registered with the poller, waiting for a request).
        while (self.futures or self.poller.get_map()) and time.monotonic() < deadline:
            self.notify()
            self.turn(0.1)
            if time.monotonic() - start > GRACE:
                self.close_idle()
        self.tpool.shutdown(False)
        self.poller.close()
        futures.wait(self.futures, timeout=max(0.0, deadline - time.monotonic()))

    def finish_request(self, fs):
        """As gthread's, but a connection whose response said keep-alive is
        kept even when the worker is stopping: its client will send on it."""
        if fs.cancelled():
            self.nr_conns -= 1
            fs.conn.close()
            return
        try:
            (keepalive, conn) = fs.result()
            if keepalive:
                conn.sock.setblocking(False)
                conn.set_timeout()
                with self._lock:
                    self._keep.append(conn)
                    self.poller.register(
                        conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn)
                    )
            else:
                self.nr_conns -= 1
                conn.close()
        except Exception:
            self.nr_conns -= 1
            fs.conn.close()

    def close_idle(self):
        """Closes the keep-alive connections waiting for a request."""
        with self._lock:
            idle = list(self._keep)
            self._keep.clear()
        for conn in idle:
            self.nr_conns -= 1
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            conn.close()
