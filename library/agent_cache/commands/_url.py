"""The one reader of ``--url`` for every subcommand and the demo: a typo is one clear error before any connection.

valkey-py's own parser silently falls back to ``localhost:6379`` for ``valkey://``, drops a database path it
cannot read (``redis://h:6379/abc``) and lets ``urllib``'s ``ValueError`` escape for a bad port; a newcomer then
sees a traceback, or a connection to a server they never named. Here every part is checked, and messages show the
URL as given (``localhost:6379`` is not echoed back as ``localhost://6379``) with any password masked.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "TLS_SCHEMES",
    "URL_SCHEMES",
    "ServerUrl",
    "UrlError",
    "parse_server_url",
    "port_argument",
    "redact",
    "unreachable_hint",
]

TLS_SCHEMES = ("rediss", "valkeys")
URL_SCHEMES = ("valkey", "redis", *TLS_SCHEMES, "unix")
_DATABASE = re.compile(r"/([0-9]+)/?")
_EXAMPLE = "e.g. valkey://localhost:6379"
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class UrlError(ValueError):
    """The URL cannot name a server; the message says which part is wrong."""


@dataclass(frozen=True)
class ServerUrl:
    """A checked ``--url``: ``text`` is what valkey-py is given, ``shown`` is for messages (no password)."""

    text: str
    scheme: str
    host: str
    port: int | None
    database: int | None
    socket_path: str
    """For ``unix://`` URLs, the socket's path; empty otherwise."""
    has_password: bool

    @property
    def tls(self) -> bool:
        return self.scheme in TLS_SCHEMES

    @property
    def shown(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        database = f"/{self.database}" if self.database is not None else ""
        return f"{self.scheme}://{host}{port}{database}"


def redact(text: str) -> str:
    """``text`` with the password of every ``user:password@`` masked, however malformed the rest is (a typo may
    put one where no URL parser expects it). A user:password never holds an unencoded ``/``."""
    pieces = text.split("/")
    for index, piece in enumerate(pieces):
        at = piece.rfind("@")
        colon = piece.find(":", 0, at) if at > 0 else -1
        if colon != -1:
            pieces[index] = f"{piece[: colon + 1]}***{piece[at:]}"
    return "/".join(pieces)


def parse_server_url(text: str, option: str = "--url") -> ServerUrl:
    """Check every part of a Valkey/Redis URL; raises :class:`UrlError` naming ``option`` and the wrong part."""
    given = text.strip()
    where = f"{option} {redact(given)!r}"
    if not given:
        raise UrlError(f"{option} is empty: give a server URL, {_EXAMPLE}")
    if any(char.isspace() or not char.isprintable() for char in given):
        raise UrlError(f"{where} contains a space or a control character (percent-encode it, e.g. %20)")
    if "://" not in given and not given.lower().startswith("unix:"):
        raise UrlError(f"{where} has no scheme: write valkey://{redact(given)} (or redis://, rediss:// for TLS)")
    try:
        parts = urlsplit(given)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed [
        raise UrlError(
            f"{where} is not a valid URL ({exc}): an IPv6 address goes in brackets, e.g. valkey://[::1]:6379"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise UrlError(f"{where}: the scheme must be one of {', '.join(s + '://' for s in URL_SCHEMES)}")
    has_password = parts.password is not None
    if scheme == "unix":
        path = unquote(parts.path)
        if not path:
            raise UrlError(f"{where} names no socket: e.g. unix:///run/valkey/valkey.sock")
        return ServerUrl(given, scheme, "", None, None, path, has_password)
    host = unquote(parts.hostname or "")
    if not host:
        raise UrlError(f"{where} names no host: {_EXAMPLE}")
    database = _database(parts.path, where)
    query_db = parse_qs(parts.query).get("db")
    if query_db:  # valkey-py lets ?db= win over the path
        if not (query_db[0].isascii() and query_db[0].isdigit()):
            raise UrlError(f"{where}: ?db= takes a database number, got {redact(query_db[0])!r}")
        database = int(query_db[0])
    return ServerUrl(given, scheme, host, _port(parts.netloc, where), database, "", has_password)


def _port(netloc: str, where: str) -> int | None:
    hostport = netloc.rpartition("@")[2]
    port_text = hostport.rpartition("]")[2] if hostport.startswith("[") else hostport
    if ":" not in port_text:
        return None
    raw = port_text.rpartition(":")[2]
    if raw == "":
        raise UrlError(f"{where} has a ':' but no port after it: {_EXAMPLE}")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 65535:
        raise UrlError(f"{where}: the port must be a number from 1 to 65535, got {raw!r}")
    return int(raw)


def port_argument(text: str) -> int:
    """The ``type`` of a ``--port`` option: 0 to 65535 in ASCII digits, as in ``--url`` (``int()`` would also take
    ``6_379``, ``+6379`` or other scripts' digits); 0 picks a free port."""
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}")
    return int(text)


def _database(path: str, where: str) -> int | None:
    if path in ("", "/"):
        return None
    match = _DATABASE.fullmatch(path)
    if match is None:
        raise UrlError(
            f"{where}: after the host comes only a database number, e.g. redis://host:6379/0, got {redact(path)!r}"
        )
    return int(match.group(1))


def unreachable_hint(url: ServerUrl, detail: str) -> str:
    """A hint for a connection that failed in a way a TLS mismatch causes, or to a local port nothing listens on;
    "" when none applies."""
    lowered = detail.lower()
    nothing_listens = any(cause in lowered for cause in ("refused", "connect call failed"))
    if nothing_listens and url.host in _LOOPBACK:
        return f" (nothing listens there: 'agent-cache server --port {url.port or 6379}' starts a local Valkey)"
    if nothing_listens or any(cause in lowered for cause in ("auth", "name or service", "no such file")):
        return ""  # no such host, a wrong password: the cause is clear, and it is not TLS
    if url.tls:
        return (
            f" (the URL asks for TLS with {url.scheme}://: if this port serves plain connections, "
            "use valkey:// or redis://)"
        )
    if any(cause in lowered for cause in ("closed", "reset", "timeout", "timed out", "eof")):
        return " (if this port expects TLS, use rediss:// or valkeys://)"
    return ""
