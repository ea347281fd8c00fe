"""Where a subcommand connects, and the one way every subcommand runs: options → client → body → exit code.

``--url`` (or ``$AGENT_CACHE_URL``) names any Valkey or Redis; without one an empty embedded ``valkey-server``
is started, as ``agent-cache demo`` does, and every command says so. Passwords come from an environment
variable or a file, never from the command line (where ``ps`` shows them to every user). Errors become one
``error: ...`` line and a documented exit code (see ``_terminal.ExitCode``); no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from valkey.exceptions import ValkeyClusterException, ValkeyError

from .._backend import Backend
from .._errors import AgentCacheError, AgentCacheUsageError, BackendError, ConfigurationError
from .._keys import validate_cache_name
from ..cache import AgentCache
from ..types import AgentCacheOptions, ConfigRefreshOptions, DiscoveryOptions, TelemetryOptions
from ._terminal import CommandError, ExitCode, consoles
from ._url import TLS_SCHEMES, ServerUrl, UrlError, parse_server_url, unreachable_hint

if TYPE_CHECKING:
    from rich.console import Console

URL_ENV = "AGENT_CACHE_URL"
NAME_ENV = "AGENT_CACHE_NAME"
_DEFAULT_TIMEOUT_S = 10.0


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--url",
        default=None,  # then $AGENT_CACHE_URL (see _connection): messages name where the URL came from
        help=f"Valkey or Redis to use: valkey://, redis://, rediss:// or valkeys:// (TLS), e.g. "
        f"--url rediss://agent@cache.internal:6380/0 (user 'agent'). Default: ${URL_ENV}; without either, an empty "
        "embedded valkey-server is started for this command and stopped when it ends.",
    )
    secret = group.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from this environment variable, e.g. --password-env VALKEY_PASSWORD "
        "(never put it on the command line, where other users see it in the process list)",
    )
    secret.add_argument(
        "--password-file",
        metavar="PATH",
        type=Path,
        help="read the password from this file (trailing newline ignored), e.g. "
        "--password-file /run/secrets/valkey-password",
    )
    group.add_argument(
        "--cluster",
        action="store_true",
        help="the URL is one node of a Valkey/Redis Cluster (ElastiCache, Memorystore, MemoryDB in cluster mode); "
        "the other nodes are discovered, e.g. --url valkey://node-1:7000 --cluster",
    )
    group.add_argument(
        "--tls-ca-file",
        metavar="PATH",
        help="CA certificate(s) to verify the server with (rediss:// only; default: the system CAs), "
        "e.g. --tls-ca-file ca.crt",
    )
    group.add_argument(
        "--tls-cert-file",
        metavar="PATH",
        help="client certificate for mutual TLS (rediss:// only), e.g. --tls-cert-file client.crt",
    )
    group.add_argument(
        "--tls-key-file",
        metavar="PATH",
        help="private key of --tls-cert-file, if not in the same file, e.g. --tls-key-file client.key",
    )
    group.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=_DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up on a connection attempt or command after this long (default: {_DEFAULT_TIMEOUT_S:g}), "
        "e.g. --timeout 3",
    )


def add_name_option(parser: argparse.ArgumentParser, *, required: bool = False, extra: str = "") -> None:
    if required:
        text = "the cache (its key prefix), e.g. --name support_bot. Required here, to name the cache explicitly."
    else:
        text = (
            f"the cache (its key prefix), e.g. --name support_bot. Default: ${NAME_ENV}, else the only cache in "
            "this Valkey's discovery registry, else betterdb_ac (the library's default name)."
        )
    parser.add_argument("--name", "-n", required=required, metavar="NAME", help=text + extra)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


@dataclass
class Session:
    """An open connection plus where it goes, for the body of one command."""

    client: Any
    backend: Backend
    where: str
    embedded: bool
    out: Console
    err: Console

    def note(self, text: str) -> None:
        """A status line on stderr (never mixed into tables or JSON on stdout)."""
        self.err.print(text, markup=False, highlight=False)

    def empty_server_note(self) -> None:
        if self.embedded:
            self.note(
                "note: this is an empty embedded valkey-server, so there is nothing to inspect; "
                f"pass --url (or set ${URL_ENV}) to look at your own Valkey"
            )


def quiet_cache(session: Session, name: str) -> AgentCache:
    """The library's own cache, for its delete methods, leaving no trace: no discovery entry or heartbeat,
    no instance record, no metrics in the process's default registry."""
    return AgentCache(
        AgentCacheOptions(
            client=session.client,
            name=name,
            discovery=DiscoveryOptions(enabled=False),
            config_refresh=ConfigRefreshOptions(enabled=False),
            telemetry=TelemetryOptions(registry=CollectorRegistry()),
        )
    )


@dataclass(frozen=True)
class _Connection:
    url: ServerUrl | None
    kwargs: dict[str, Any]
    cluster: bool


def _password(args: argparse.Namespace) -> str | None:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise CommandError(f"--password-env {args.password_env}: that variable is not set", ExitCode.USAGE)
        return value
    if args.password_file is not None:
        try:
            return str(args.password_file.read_text()).rstrip("\r\n")
        except OSError as exc:
            raise CommandError(f"--password-file {args.password_file}: {exc.strerror or exc}", ExitCode.USAGE) from None
    return None


def _connection(args: argparse.Namespace, err: Console) -> _Connection:
    url: str | None = args.url
    given_as = "--url"
    if url is None and (from_env := os.environ.get(URL_ENV)):
        url, given_as = from_env, f"${URL_ENV}"
    kwargs: dict[str, Any] = {"socket_connect_timeout": args.timeout, "socket_timeout": args.timeout}
    password = _password(args)
    tls = {
        key: value
        for key, value in (
            ("ssl_ca_certs", args.tls_ca_file),
            ("ssl_certfile", args.tls_cert_file),
            ("ssl_keyfile", args.tls_key_file),
        )
        if value
    }
    if url is None:
        if args.cluster:
            raise CommandError("--cluster needs --url: the embedded server is a single node", ExitCode.USAGE)
        if password is not None or tls:
            raise CommandError("--password-env/--password-file and --tls-* need --url", ExitCode.USAGE)
        return _Connection(None, kwargs, cluster=False)
    try:
        parsed = parse_server_url(url, given_as)
    except UrlError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    if parsed.has_password and password is not None:
        raise CommandError("the URL already has a password: give it in one place only", ExitCode.USAGE)
    if tls and not parsed.tls:
        raise CommandError(f"--tls-* options need a {' or '.join(s + '://' for s in TLS_SCHEMES)} URL", ExitCode.USAGE)
    if args.cluster and parsed.scheme == "unix":
        raise CommandError("--cluster needs a TCP URL (valkey://host:port), not a unix socket", ExitCode.USAGE)
    if args.cluster and parsed.database:
        raise CommandError(f"--url {parsed.shown!r}: a cluster has only database 0", ExitCode.USAGE)
    tls_files = {
        "--tls-ca-file": args.tls_ca_file,
        "--tls-cert-file": args.tls_cert_file,
        "--tls-key-file": args.tls_key_file,
    }
    for option, path in tls_files.items():  # else valkey-py's "Error 2 connecting to host:port" hides which file
        if path and not os.path.isfile(path):
            raise CommandError(f"{option} {path}: no such file", ExitCode.USAGE)
    # Only once the options are valid (a bad one is a single error line); the environment is not in the process list.
    if parsed.has_password and given_as == "--url":
        err.print(
            "warning: a password in --url is visible to other users in the process list; "
            "use --password-env or --password-file",
            markup=False,
        )
    if password is not None:
        kwargs["password"] = password
    return _Connection(parsed, {**kwargs, **tls}, cluster=args.cluster)


@contextlib.contextmanager
def _embedded_server() -> Iterator[ServerUrl]:
    from ..embedded import EmbeddedServerError, EmbeddedValkey

    try:
        server = EmbeddedValkey().start()
    except EmbeddedServerError as exc:
        raise CommandError(f"could not start an embedded valkey-server: {exc}", ExitCode.USAGE) from exc
    try:
        yield parse_server_url(server.url)
    finally:
        server.stop()


def _client(url: ServerUrl, connection: _Connection) -> Any:
    try:
        if connection.cluster:
            from valkey.asyncio.cluster import ValkeyCluster

            return ValkeyCluster.from_url(url.text, **connection.kwargs)
        from valkey.asyncio import Valkey

        return Valkey.from_url(url.text, **connection.kwargs)
    except (ValueError, TypeError, ValkeyError, ValkeyClusterException) as exc:  # what only valkey-py checks
        raise CommandError(f"--url {url.shown!r}: {' '.join(str(exc).split())}", ExitCode.USAGE) from exc


async def _open_and_run(
    url: ServerUrl, where: str, embedded: bool, connection: _Connection, body: Callable[[Session], Awaitable[int]]
) -> int:
    out, err = consoles()
    client = _client(url, connection)
    try:
        backend = Backend(client)
        try:
            await backend.command("PING")
        except (AgentCacheError, OSError) as exc:
            cause = exc.__cause__ or exc
            detail = " ".join(str(cause).split()) or type(cause).__name__
            hint = unreachable_hint(url, detail)
            raise CommandError(f"cannot reach Valkey at {where}: {detail}{hint}", ExitCode.USAGE) from exc
        return await body(Session(client, backend, where, embedded, out, err))
    finally:
        with contextlib.suppress(Exception):  # a client that never connected may fail to close
            await client.aclose()


def run_command(args: argparse.Namespace, body: Callable[[Session], Awaitable[int]]) -> int:
    """Connect as the options say, run ``body`` and turn every failure into a message and an exit code."""
    _, err = consoles()
    try:
        if getattr(args, "name", None):
            validate_cache_name(args.name)  # a typo in --name fails before any connection is made
        connection = _connection(args, err)
        with contextlib.ExitStack() as stack:
            if connection.url is None:
                url = stack.enter_context(_embedded_server())
                where = f"an embedded valkey-server ({url.host}:{url.port})"
                err.print(f"note: no --url (or ${URL_ENV}): using {where}, empty, stopped when this command ends")
            else:
                url, where = connection.url, connection.url.shown
            return asyncio.run(_open_and_run(url, where, connection.url is None, connection, body))
    except CommandError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return int(exc.exit_code)
    except (AgentCacheUsageError, ConfigurationError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return int(ExitCode.USAGE)
    except BackendError as exc:
        err.print(f"error: Valkey failed: {exc}", markup=False, highlight=False, soft_wrap=True)
        return int(ExitCode.FAILED)
    except AgentCacheError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return int(ExitCode.FAILED)
