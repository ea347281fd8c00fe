"""``agent-cache-operator``: run the operator (Kopf) with the AgentCache handlers.

Every option also reads an environment variable (``AGENT_CACHE_OPERATOR_<OPTION>``), which is how the Helm chart and
the tests set them. Several replicas: Kopf has no Lease election; with peering the highest priority works and the
others pause, and equal priorities pause everyone. So the default priority is ``auto``: derived from the start time,
the longest-running replica works and a replica that starts later waits (docs/operator.md, "Replicas").

What stops the operator from starting (no Kubernetes credentials, an API server that is down or refuses them, a port
in use) ends it at once with one ``error:`` line and exit code 2, instead of Kopf retrying with a traceback every
minute.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .metrics import OperatorMetrics

ENV_PREFIX = "AGENT_CACHE_OPERATOR_"
AUTO = "auto"


class StartupError(Exception):
    """Something the operator needs to start is missing; the message is the ``error:`` line."""


def priority_value(text: str) -> int | None:
    """``--priority``: an integer, or ``auto`` (None) for a priority derived from the start time."""
    if text.strip().lower() == AUTO:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def auto_priority(started_ns: int | None = None) -> int:
    """The peering priority of a replica started at ``started_ns`` (now by default): the earlier, the higher.

    Minus the start time in microseconds, with three random digits appended so that two replicas started in the same
    microsecond still differ (equal priorities would pause both). A running replica therefore keeps working when
    another starts, and the next oldest takes over when it stops. Always negative (and within int64, as the API
    server stores it), so an operator given an explicit priority of 0 or more outranks every automatic one.
    """
    started = time.time_ns() if started_ns is None else started_ns
    return -((started // 1000) * 1000 + random.randrange(1000))


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, default)


def _checked(
    env: str, what: str, convert: Callable[[str], float], valid: Callable[[float], bool]
) -> Callable[[str], float]:
    """An argparse ``type`` for an option also read from ``AGENT_CACHE_OPERATOR_<env>``. Defaults stay strings,
    so argparse checks a value from the environment (the chart's way) like one on the command line: a bad one is a
    usage error naming both, never a traceback."""

    def check(text: str) -> float:
        try:
            value = convert(text.strip())
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and valid(value)):
            raise argparse.ArgumentTypeError(f"must be {what} (also read from {ENV_PREFIX}{env}), got {text!r}")
        return value

    return check


def _port(env: str) -> Callable[[str], float]:
    # An empty value (the chart's way of leaving one out) is 0: none, as it always was.
    return _checked(env, "a port number from 0 (none) to 65535", _port_number, lambda port: 0 <= port <= 65535)


def _port_number(text: str) -> int:
    return int(text) if text else 0


def _seconds(env: str) -> Callable[[str], float]:
    return _checked(env, "a number of seconds above 0", float, lambda seconds: seconds > 0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agent-cache-operator",
        description="Keep AgentCache resources live in Valkey and deploy their dashboards and alert rules.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[n for n in (_env("NAMESPACES") or "").split(",") if n],
        help="watch this namespace (repeatable; globs like 'team-*' work); env NAMESPACES=a,b",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default without --namespace)"
    )
    p.add_argument(
        "--standalone",
        action="store_true",
        default=_env("STANDALONE", "") in {"1", "true", "yes"},
        help="no peering: assume this is the only replica",
    )
    p.add_argument("--peering", default=_env("PEERING"), help="Kopf peering object name (makes peering mandatory)")
    p.add_argument(
        "--priority",
        type=priority_value,
        default=_env("PRIORITY", AUTO),
        help="peering priority: the highest works, the others pause; 'auto' (default): the oldest replica works",
    )
    p.add_argument(
        "--peering-lifetime",
        type=_checked("PEERING_LIFETIME", "a whole number of seconds from 1", int, lambda seconds: seconds >= 1),
        default=_env("PEERING_LIFETIME") or "60",
        help="seconds a replica that stopped without saying goodbye (killed, node lost) still counts as working: "
        "the standby takes over after at most this long",
    )
    p.add_argument(
        "--liveness-port", type=_port("LIVENESS_PORT"), default=_env("LIVENESS_PORT", "8080"), help="0: none"
    )
    p.add_argument("--metrics-port", type=_port("METRICS_PORT"), default=_env("METRICS_PORT", "9090"), help="0: none")
    p.add_argument("--bind-address", default=_env("BIND_ADDRESS", "0.0.0.0"), help="for liveness and metrics")
    p.add_argument(
        "--resync-interval",
        type=_seconds("RESYNC_SECONDS"),
        default=_env("RESYNC_SECONDS") or "30",
        help="seconds between re-assertions of the config and stats refreshes",
    )
    p.add_argument("--retry-base", type=_seconds("RETRY_BASE_SECONDS"), default=_env("RETRY_BASE_SECONDS") or "1")
    p.add_argument("--retry-max", type=_seconds("RETRY_MAX_SECONDS"), default=_env("RETRY_MAX_SECONDS") or "60")
    p.add_argument(
        "--delete-retries",
        type=_checked("DELETE_RETRIES", "a whole number from 0", int, lambda retries: retries >= 0),
        default=_env("DELETE_RETRIES") or "5",
        help="Valkey cleanup attempts on deletion before giving up",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--debug", action="store_true")
    return p


def _check_credentials() -> None:
    """Load the credentials as the operator's login does (in-cluster service account, else kubeconfig)."""
    import kubernetes.config

    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        return
    except kubernetes.config.ConfigException as exc:
        in_cluster = str(exc).rstrip(".")
    try:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    except Exception as exc:  # a kubeconfig fails in many ways (missing, not YAML, no context, bad certificate)
        configured = os.environ.get("KUBECONFIG", "")
        paths = [path for path in configured.split(os.pathsep) if path] or [os.path.expanduser("~/.kube/config")]
        if not any(os.path.exists(path) for path in paths):
            kubeconfig = (
                f"KUBECONFIG names {configured}, which does not exist"
                if configured
                else "no kubeconfig (KUBECONFIG is not set and ~/.kube/config does not exist)"
            )
        else:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
            kubeconfig = f"the kubeconfig {os.pathsep.join(paths)} is unusable ({reason})"
        raise StartupError(
            f"no Kubernetes credentials: not in a pod with a service account ({in_cluster}), and {kubeconfig}; "
            "set KUBECONFIG or run the operator in the cluster"
        ) from None


def _check_api() -> None:
    """One request (``GET /version``) with those credentials: an API server that is down or refuses them is reported
    now, instead of Kopf retrying it forever. In a pod, the exit makes Kubernetes restart it with a backoff."""
    import kubernetes.client

    config = kubernetes.client.Configuration.get_default_copy()
    config.retries = 0  # one attempt, and no retry warnings before the error line
    host = config.host
    try:
        with kubernetes.client.ApiClient(config) as api:
            kubernetes.client.VersionApi(api).get_code(_request_timeout=10)
    except kubernetes.client.ApiException as exc:
        if exc.status == 401:
            raise StartupError(f"the Kubernetes API at {host} refused the credentials (401 Unauthorized)") from None
        # Any other answer (403 with a locked-down /version, say) means the API server is there.
    except Exception as exc:  # urllib3 and ssl wrap the cause in layers; the innermost says what happened
        cause: BaseException = exc
        while isinstance(inner := getattr(cause, "reason", None), BaseException):
            cause = inner
        errno = re.search(r"\[(?:Errno -?\d+|SSL[^\]]*)\][^'\")]*", str(cause))
        reason = errno.group(0).strip() if errno else (str(cause) or type(cause).__name__)
        raise StartupError(f"cannot reach the Kubernetes API at {host}: {reason}") from None


def _check_port(what: str, address: str, port: int) -> None:
    """Bind and release ``port`` so that one taken by another process is reported now, by name."""
    try:
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address, port))
    except OSError as exc:
        raise StartupError(f"cannot serve {what} on {address}:{port}: {exc.strerror or exc}") from None


def _serve_metrics(metrics: OperatorMetrics, address: str, port: int) -> None:
    try:
        metrics.serve(port, address)
    except OSError as exc:
        raise StartupError(f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}") from None


def main(argv: Sequence[str] | None = None) -> None:
    command = parser()
    args = command.parse_args(argv)
    try:
        import kopf
    except ImportError:  # pragma: no cover - the console script is installed with the extra
        raise SystemExit('agent-cache-operator needs the operator extra: pip install "agent-cache[operator]"') from None

    from .children import default_bundle
    from .handlers import OperatorContext, OperatorOptions, build_registry

    kopf.configure(debug=args.debug, verbose=args.verbose)
    logging.getLogger("agent_cache_operator").setLevel(logging.DEBUG if args.debug else logging.INFO)
    options = OperatorOptions(
        resync_interval_s=args.resync_interval,
        retry_base_s=args.retry_base,
        retry_max_s=args.retry_max,
        delete_retries=args.delete_retries,
        metrics_port=args.metrics_port or None,
        bind_address=args.bind_address,
    )
    context = OperatorContext(options=options, bundle=default_bundle())
    try:
        if args.liveness_port:
            _check_port("liveness (/healthz)", args.bind_address, args.liveness_port)
        if args.metrics_port:
            # Served now rather than at Kopf's startup, so a taken port is an error here and not a retried activity.
            _serve_metrics(context.metrics, args.bind_address, args.metrics_port)
        _check_credentials()
        _check_api()
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    priority = auto_priority() if args.priority is None else args.priority
    settings = kopf.OperatorSettings()
    settings.peering.lifetime = args.peering_lifetime
    if not args.standalone:
        logging.getLogger("agent_cache_operator").info("peering priority %d", priority)
    liveness = f"http://{args.bind_address}:{args.liveness_port}/healthz" if args.liveness_port else None
    namespaces = [] if args.all_namespaces else list(dict.fromkeys(args.namespace or []))
    kopf.run(
        registry=build_registry(context),
        settings=settings,
        standalone=args.standalone or None,
        peering_name=args.peering,
        priority=priority,
        liveness_endpoint=liveness,
        clusterwide=not namespaces,
        namespaces=namespaces,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
