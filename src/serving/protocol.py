"""What the server enforces below the app: read timeouts on the HTTP connection, and the Host check.

uvicorn has keep-alive and shutdown timeouts only, and an ASGI middleware never sees a request
whose headers have not all arrived, so a client that sends its headers a byte at a time holds a
connection for as long as it likes. `timed_h11` is uvicorn's own h11 protocol with two deadlines:
the request line and headers must be in within `header_timeout` seconds (from the connection's
start, or from the end of the previous response on a kept-alive one), and the body within
`body_timeout` seconds of the headers; a connection past either is closed.
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

LOCAL = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = ("0.0.0.0", "::", "")


def timed_h11(header_timeout: float, body_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with these read deadlines (uvicorn.run(..., http=...))."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": float(header_timeout),
                                                          "body_timeout": float(body_timeout)})


class TimedH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers or body arrive too slowly."""

    header_timeout = 10.0
    body_timeout = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._phase, self._deadline = None, None
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Arm the deadline of the phase the client's side is in: headers (h11 IDLE, nothing of
        the request yet or part of it), body (SEND_BODY); none while the app answers."""
        phase = {h11.IDLE: "headers", h11.SEND_BODY: "body"}.get(self.conn.their_state)
        if phase == self._phase:
            return
        self._cancel()
        self._phase = phase
        if phase is not None:
            seconds = self.header_timeout if phase == "headers" else self.body_timeout
            self._deadline = self.loop.call_later(seconds, self._timed_out, phase, seconds)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self, phase: str, seconds: float) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            client = "%s:%d" % self.client if self.client else "a client"
            log.info("closed the connection of %s: its request %s took over %g s", client, phase, seconds)
            self.transport.close()


def allowed_hosts(host: str, given: list[str] | None) -> list[str]:
    """The Host header names served: `given`, else this machine's local names and the address the
    server binds to (for 0.0.0.0 / ::, the machine's name and addresses)."""
    if given:
        return [str(h).lower() for h in given]
    names = list(LOCAL)
    if host in ANY_ADDRESS:
        hostname = socket.gethostname()
        names += [hostname, socket.getfqdn()]
        try:
            names += [info[4][0] for info in socket.getaddrinfo(hostname, None)]
        except OSError:
            pass
    else:
        names.append(host)
    return sorted({n.lower() for n in names})


class HostCheck:
    """Answers 400 to a request whose Host header is not one of `allowed` ("*": any), and logs
    once per name how to allow it: a DNS-rebinding page in a browser cannot reach the server."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app, self.allowed, self.told = app, set(allowed), set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.allowed:
            return await self.app(scope, receive, send)
        host = _name(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
        if host in self.allowed:
            return await self.app(scope, receive, send)
        if host not in self.told and len(self.told) < 100:
            self.told.add(host)
            log.warning("refused a request for Host %r: to serve it, start the server with allowed_hosts='[%s]'",
                        host, ",".join(sorted(self.allowed | {host})))
        body = json.dumps({"error": f"Host {host!r} is not served here"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _name(host: str) -> str:
    """A Host header's name without its port: `[::1]:8000` is `::1`, `Localhost:80` is `localhost`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
