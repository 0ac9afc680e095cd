"""uvicorn on the socket overseer passes (fd 3), draining without a loss.

uvicorn's own shutdown closes every connection that has no request in
progress: an idle keep-alive connection while its client is sending the
next request on it, and a connection accepted but not yet read; and it
closes a busy one after its response without `Connection: close`. Here
each connection's next response says `Connection: close`, and one still
idle after a grace is closed. Readiness is sent as sd_notify
`READY=1` once the server is accepting.
"""
import os
import socket

import h11
import uvicorn
from uvicorn.protocols.http.flow_control import CLOSE_HEADER
from uvicorn.protocols.http.h11_impl import H11Protocol

# How long a connection may stay idle after SIGTERM before it is closed:
# its client has stopped sending, so no request can be in flight.
IDLE_GRACE = 2.0


class DrainingH11Protocol(H11Protocol):
    draining = False

    def connection_made(self, transport):
        super().connection_made(transport)
        # uvicorn opens --fd sockets as AF_UNIX, so asyncio leaves Nagle's
        # algorithm on for the TCP connections they accept: a keep-alive
        # response written in two parts then waits ~40 ms for the client's
        # delayed ACK.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not a TCP connection

    def shutdown(self):
        self.draining = True
        self.close_after_response()
        self.loop.call_later(IDLE_GRACE, self.close_if_idle)

    def handle_events(self):
        super().handle_events()
        if self.draining:
            self.close_after_response()

    def close_after_response(self):
        # A response not yet started says `Connection: close` and closes
        # after it. (uvicorn's own shutdown closes after the response
        # without saying so, and the client's next request is lost.)
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and cycle.keep_alive:
            cycle.keep_alive = False
            cycle.default_headers = cycle.default_headers + [CLOSE_HEADER]

    def close_if_idle(self):
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self.conn.send(h11.ConnectionClosed())
            self.transport.close()


class NotifyingServer(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        path = os.environ.get("NOTIFY_SOCKET")
        if self.started and path:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect("\0" + path[1:] if path.startswith("@") else path)
                s.send(b"READY=1")


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    config = uvicorn.Config("app:app", fd=3, http=DrainingH11Protocol, lifespan="off", log_level="warning")
    NotifyingServer(config).run()
