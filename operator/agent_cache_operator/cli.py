"""``agent-cache-operator``: run the operator (Kopf) with the AgentCache handlers.

Every option also reads an environment variable (``AGENT_CACHE_OPERATOR_<OPTION>``), which is how the Helm chart and
the tests set them. One active replica: Kopf has no Lease election; run one replica (``strategy: Recreate``) and,
for overlapping rollouts, Kopf peering with ``--priority`` (the higher priority pauses the others; see
docs/operator.md).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

ENV_PREFIX = "AGENT_CACHE_OPERATOR_"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, default)


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
    p.add_argument("--priority", type=int, default=int(_env("PRIORITY", "0") or 0), help="peering priority")
    p.add_argument("--liveness-port", type=int, default=int(_env("LIVENESS_PORT", "8080") or 0), help="0: none")
    p.add_argument("--metrics-port", type=int, default=int(_env("METRICS_PORT", "9090") or 0), help="0: none")
    p.add_argument("--bind-address", default=_env("BIND_ADDRESS", "0.0.0.0"), help="for liveness and metrics")
    p.add_argument(
        "--resync-interval",
        type=float,
        default=float(_env("RESYNC_SECONDS", "30") or 30),
        help="seconds between re-assertions of the config and stats refreshes",
    )
    p.add_argument("--retry-base", type=float, default=float(_env("RETRY_BASE_SECONDS", "1") or 1))
    p.add_argument("--retry-max", type=float, default=float(_env("RETRY_MAX_SECONDS", "60") or 60))
    p.add_argument(
        "--delete-retries",
        type=int,
        default=int(_env("DELETE_RETRIES", "5") or 5),
        help="Valkey cleanup attempts on deletion before giving up",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--debug", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
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
    liveness = f"http://{args.bind_address}:{args.liveness_port}/healthz" if args.liveness_port else None
    namespaces = [] if args.all_namespaces else list(dict.fromkeys(args.namespace or []))
    kopf.run(
        registry=build_registry(context),
        standalone=args.standalone or None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=liveness,
        clusterwide=not namespaces,
        namespaces=namespaces,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
