#!/usr/bin/env python3
"""Write every generated observability and packaging file from the library's metrics definition.

One source (``agent_cache.telemetry.METRICS``, the operator's CRD and metrics, ``DEFAULT_THRESHOLDS``) drives:

- ``dashboards/*.json``            Grafana dashboards (grafana-foundation-sdk, Grafana 11 schema)
- ``dashboards/rules/*.yaml``      Prometheus recording and alert rules, and their promtool tests
- ``charts/agent-cache-operator/`` the chart's CRD, PrometheusRule, dashboards, values and schema
- ``manifests/``                   the plain install (rendered from the chart with ``helm template``) and examples
- ``operator/agent_cache_operator/bundle/``  the per-cache dashboards and rule template the operator deploys

    python scripts/generate.py           write them
    python scripts/generate.py --check   exit 1, naming the command to run, when a committed file differs

Like kube-prometheus's ``make generate && git diff --exit-code``: CI runs ``--check``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `scripts.bundle_gen` when run as a script

from scripts.bundle_gen import outputs  # noqa: E402

COMMAND = "python scripts/generate.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on any difference")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree to write or check (default: this repo)")
    args = parser.parse_args(argv)
    root: Path = args.root

    files = outputs.build_all()
    stale = outputs.stale_files(root, files)
    if args.check:
        problems = []
        for relative, content in sorted(files.items()):
            path = root / relative
            current = path.read_text(encoding="utf-8") if path.exists() else None
            if current != content:
                problems.append(relative)
                diff = difflib.unified_diff(
                    (current or "").splitlines(keepends=True),
                    content.splitlines(keepends=True),
                    f"a/{relative}",
                    f"b/{relative}",
                    n=1,
                )
                sys.stderr.writelines(list(diff)[:40])
        problems += [f"{p} (no longer generated)" for p in stale]
        if problems:
            print("generated files are out of date:", *problems, sep="\n  ", file=sys.stderr)
            print(f"regenerate with: {COMMAND}", file=sys.stderr)
            return 1
        print(f"{len(files)} generated files are up to date")
        return 0

    written = 0
    for relative, content in sorted(files.items()):
        path = root / relative
        if path.exists() and path.read_text(encoding="utf-8") == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written += 1
    for relative in stale:
        (root / relative).unlink()
    print(f"{written} of {len(files)} generated files written, {len(stale)} stale removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
