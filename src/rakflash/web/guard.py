"""Who may use the page: this run's secret, the loopback Host, and no other web site.

A page that can rewrite firmware must not be drivable by other web sites the
person has open. Every request must pass three checks, in this order:

1. **Host** is one of the server's own names: the address it really listens on
   (``127.0.0.1:PORT`` by default, or the address ``--host`` resolves to), and
   ``localhost:PORT`` when that is 127.0.0.1 or ::1.
   Another name means DNS rebinding: a web site that pointed its own name at
   127.0.0.1 to get past the browser's same-origin rule.
2. **Origin**, when the browser sends one, is this server itself; and
   ``Sec-Fetch-Site`` is not ``cross-site``. Browsers send Origin with every
   POST and every script request, so a script on another site is refused
   even if it learnt the secret.
3. The path starts with **this run's secret** (``/SECRET/…``), which only the
   address ``rakflash web`` printed (and opened) carries. Other sites can't
   read it, so they can't guess a URL that works.

A refused request gets ``403`` and a one-line reason. Every answer carries
headers that keep the page out of frames and caches and the secret out of
``Referer`` headers.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
]


class AddressRefused(ValueError):
    """``--host`` names no single address this server can honestly check requests against."""


def listen_address(host: str) -> tuple[int, str]:
    """The address family and numeric address that ``host`` binds to.

    Resolved the way the socket layer will resolve it (``getaddrinfo``), so every
    spelling of "all interfaces" is seen for what it is: ``0``, ``0.0``,
    ``000.000.000.000`` (inet_aton's forms of 0.0.0.0), ``::``, ``::ffff:0.0.0.0``.
    A host that means every address is refused: the Host check below must know
    which address the browser called.
    """
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"--host {host} is not an address of this computer ({exc})") from None
    for _family, _, _, _, sockaddr in found:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])    # (an IP family's: a str)
        mapped = getattr(ip, "ipv4_mapped", None)
        if ip.is_unspecified or (mapped is not None and mapped.is_unspecified):
            raise AddressRefused(f"--host {host} would answer on every address, and the page checks "
                                 f"which address it is called by")
    family, _, _, _, sockaddr = found[0]
    return family, str(sockaddr[0])


def own_hosts(address: str, port: int, name: str | None = None) -> set[str]:
    """The Host header values a browser sends to a server listening on ``address``:``port``
    (lower case): the address itself, ``localhost`` for the loopback address it names, and
    the name ``--host`` gave, if it gave one. Never another address: a server on
    192.168.1.20 is not called as ``127.0.0.1``, so a request saying so is refused."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    names = [f"[{ip}]" if ip.version == 6 else str(ip)]
    if ip in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")):
        names.append("localhost")
    if name and name.lower() != "localhost":
        try:
            ipaddress.ip_address(name.strip("[]"))      # another spelling of the address: not a name
        except ValueError:
            names.append(name)
    hosts = {f"{n}:{port}" for n in names}
    if port == 80:
        hosts |= set(names)
    return {h.lower() for h in hosts}


class Guard:
    """ASGI middleware: refuses any request that fails the Host, Origin or secret check."""

    def __init__(self, app: Callable, *, token: str, hosts: set[str]) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = hosts
        self.origins = {f"http://{h}" for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":          # no websockets here
            return
        reason = self.refusal(scope)
        if reason is not None:
            await _plain(send, 403, reason)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def refusal(self, scope: Scope) -> str | None:
        """Why this request is refused, or None."""
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.lower(), []).append(value)
        host = headers.get(b"host", [])
        if len(host) != 1 or host[0].decode("latin-1").lower() not in self.hosts:
            shown = host[0].decode("latin-1") if host else "(none)"
            return (f"refused: this rakflash page answers only to its own address, not to Host "
                    f"{shown!r} (another name pointing here is how a web site would reach it)")
        origin = headers.get(b"origin", [])
        if origin and (len(origin) != 1 or origin[0].decode("latin-1").lower() not in self.origins):
            return (f"refused: a request from {origin[0].decode('latin-1')!r}; only this rakflash page "
                    f"itself may use it, not other web sites")
        if headers.get(b"sec-fetch-site", [b""])[0] == b"cross-site":
            return "refused: a request from another web site; only this rakflash page itself may use it"
        segment = scope.get("path", "").lstrip("/").split("/", 1)[0].encode()
        if not hmac.compare_digest(segment, self.token):
            return ("refused: this address lacks the secret of this run of 'rakflash web': open the "
                    "address it printed")
        return None


async def _plain(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})
