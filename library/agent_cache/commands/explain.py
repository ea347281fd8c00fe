"""``agent-cache explain``: the LLM cache key of a request, and why two requests that should share an answer do not.

Works offline (no Valkey needed): the key is derived by ``agent_cache.explain``, with the function every lookup
hashes with. ``--against`` lists the JSON paths whose values differ between two requests' key material;
``--key`` says whether a request maps to a key seen in Valkey (a monitor, a log), with or without a tenant.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from .._errors import AgentCacheUsageError, SerializationError
from .._keys import KeyLayout, validate_cache_name
from ..explain import ABSENT, FieldDifference, LlmKeyExplanation, diff_requests, explain_llm_request
from ._connection import NAME_ENV
from ._readers import DEFAULT_NAME
from ._terminal import EXIT_CODES_HELP, CommandError, ExitCode, consoles, print_json

_EXAMPLES = f"""\
examples:
  agent-cache explain -f request.json --name support_bot
      the key of the request in request.json (the params given to cache.llm.check), the canonical JSON
      that was hashed, the parameters that entered it and those left out (and why)
  agent-cache explain -f request.json --against other.json
      the fields that differ between two requests, e.g. messages[2].content; exit 0 when they share a key
  agent-cache explain -f request.json --key support_bot:llm:2da6f64e...
      does the request map to this key? (without a tenant, or under each --tenant given)
  agent-cache explain -f request.json --tenant acme --json
      the explanation as JSON, under tenant acme (code that uses cache.tenant("acme"))

{EXIT_CODES_HELP}
  with --against or --key: 0 the same key, 1 a different key
"""

_DIGEST = re.compile(r"[0-9a-f]{64}")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="why an LLM request missed: its key, what entered it, how it differs from another request",
        description="The LLM cache key of a request (a JSON file with the params given to cache.llm.check), the "
        "canonical JSON that was hashed, which parameters entered it and which were left out (transport-only "
        "options, None values, transport headers). With --against, the fields that differ from another request; "
        "with --key, whether the request maps to that key. Needs no Valkey.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f",
        "--file",
        required=True,
        type=Path,
        metavar="PATH",
        help='JSON file with the request\'s params ({"model": ..., "messages": ...}), - for stdin, '
        "e.g. -f request.json",
    )
    other = parser.add_mutually_exclusive_group()
    other.add_argument(
        "--against", type=Path, metavar="PATH", help="a second request to compare with, e.g. --against other.json"
    )
    other.add_argument(
        "--key", metavar="KEY", help="a key (or its 64-digit hash) to check the request against, e.g. --key name:llm:…"
    )
    parser.add_argument(
        "--tenant",
        action="append",
        metavar="TENANT",
        help="the tenant the request ran under (cache.tenant(...)); with --key it may be given more than once to "
        "try each, e.g. --tenant acme",
    )
    parser.add_argument(
        "--name",
        "-n",
        metavar="NAME",
        help=f"the cache (its key prefix), e.g. --name support_bot. Default: ${NAME_ENV}, else the cache named in "
        f"--key, else {DEFAULT_NAME}",
    )
    parser.add_argument("--json", action="store_true", help="print JSON on stdout, e.g. --json | jq .key")
    parser.set_defaults(run=run)


def _read_request(path: Path, option: str) -> Any:
    where = "stdin" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise CommandError(f"{option} {where}: {detail}", ExitCode.USAGE) from None
    try:
        request = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{option} {where}: not JSON: {exc}", ExitCode.USAGE) from None
    if not isinstance(request, dict):
        raise CommandError(
            f"{option} {where}: expected a JSON object of request params, got {type(request).__name__}", ExitCode.USAGE
        )
    return request


def _name(args: argparse.Namespace) -> str:
    given = args.name or os.environ.get(NAME_ENV)
    if given:
        return validate_cache_name(given)
    key: str | None = args.key
    if key and not _DIGEST.fullmatch(key):
        digest = key[-64:]
        for end in range(len(key) - 64, 0, -1):  # the cache whose layout gives exactly this key
            candidate = key[:end].rstrip(":")
            try:
                if KeyLayout(candidate).llm(digest) == key:
                    return candidate
            except AgentCacheUsageError:
                continue
    return DEFAULT_NAME


def _explain(request: Any, keys: KeyLayout, tenant: str | None, option: str) -> LlmKeyExplanation:
    try:
        return explain_llm_request(request, keys, tenant)
    except (AgentCacheUsageError, SerializationError) as exc:
        raise CommandError(f"{option}: {exc}", ExitCode.USAGE) from None


def _show(value: Any) -> str:
    return "(absent)" if value is ABSENT else json.dumps(value, ensure_ascii=False)


def run(args: argparse.Namespace) -> int:
    out, err = consoles()
    try:
        return _run(args, out)
    except CommandError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return int(exc.exit_code)
    except AgentCacheUsageError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return int(ExitCode.USAGE)


def _run(args: argparse.Namespace, out: Any) -> int:
    tenants: list[str] = args.tenant or []
    if len(tenants) > 1 and not args.key:
        raise CommandError("--tenant more than once goes with --key (to try each tenant)", ExitCode.USAGE)
    if any(not tenant for tenant in tenants):
        raise CommandError("--tenant must not be empty", ExitCode.USAGE)
    keys = KeyLayout(_name(args))
    request = _read_request(args.file, "-f")
    tenant = tenants[0] if tenants else None
    explained = _explain(request, keys, tenant, f"-f {args.file}")
    printed: list[str] = []

    def say(line: str = "") -> None:
        printed.append(line)

    if args.against is not None:
        other = _read_request(args.against, "--against")
        other_explained = _explain(other, keys, tenant, f"--against {args.against}")
        differences = diff_requests(request, other)
        same = explained.key == other_explained.key
        if args.json:
            print_json(
                {
                    "same_key": same,
                    "left": explained.to_dict(),
                    "right": other_explained.to_dict(),
                    "differences": [d.to_dict() for d in differences],
                }
            )
        else:
            _render_diff(say, explained, other_explained, differences, args)
    elif args.key:
        matches = _key_matches(request, keys, tenants, args.key)
        same = bool(matches)
        if args.json:
            print_json(
                {
                    **explained.to_dict(),
                    "against_key": args.key,
                    "maps_to_key": same,
                    "tenants_tried": [None, *tenants],
                    "matching_tenant": matches[0] if matches else None,
                }
            )
        else:
            _render_key(say, keys, explained, matches, tenants, args.key)
    else:
        same = True
        if args.json:
            print_json(explained.to_dict())
        else:
            _render(say, explained)
    if printed:
        out.print("\n".join(printed), markup=False, highlight=False, soft_wrap=True)
    return int(ExitCode.OK if same else ExitCode.FAILED)


def _render(say: Any, explained: LlmKeyExplanation) -> None:
    say(f"key:       {explained.key}")
    say(f"tenant:    {explained.tenant if explained.tenant else '(none)'}")
    say(f"included:  {', '.join(explained.included)}")
    ignored = ", ".join(f"{item.path} ({item.reason})" for item in explained.ignored)
    say(f"ignored:   {ignored or '(none)'}")
    say("canonical JSON (hashed; two requests share an answer only if this and the tenant are equal):")
    say(explained.canonical_json)


def _render_diff(
    say: Any,
    left: LlmKeyExplanation,
    right: LlmKeyExplanation,
    differences: list[FieldDifference],
    args: argparse.Namespace,
) -> None:
    say(f"{args.file}: {left.key}")
    say(f"{args.against}: {right.key}")
    if left.key == right.key:
        say("the same key: these requests share an answer (a miss came from elsewhere: another --name or tenant, "
            "an expired or evicted entry, or the answer was never stored)")  # fmt: skip
        return
    say(f"different keys: {len(differences)} field(s) of the key differ")
    for difference in differences:
        say(f"  {difference.path}: {_show(difference.left)} -> {_show(difference.right)}")


def _key_matches(request: Any, keys: KeyLayout, tenants: list[str], key: str) -> list[str | None]:
    matches: list[str | None] = []
    for tenant in [None, *tenants]:
        explained = _explain(request, keys, tenant, "-f")
        if key in (explained.key, explained.digest):
            matches.append(tenant)
    return matches


def _render_key(
    say: Any, keys: KeyLayout, explained: LlmKeyExplanation, matches: list[str | None], tenants: list[str], key: str
) -> None:
    if matches:
        tenant = matches[0]
        say(f"the request maps to {key} " + (f"under tenant {tenant!r}" if tenant else "without a tenant"))
        return
    tried = "without a tenant" + "".join(f", under tenant {tenant!r}" for tenant in tenants)
    say(f"the request does not map to {key} ({tried})")
    owner = f" (tenant {explained.tenant!r})" if explained.tenant else ""
    say(f"its key{owner}: {explained.key}")
    if not _DIGEST.fullmatch(key) and not key.startswith(keys.llm_prefix):
        say(f"that key is not an LLM key of cache {keys.name!r}: check --name")
    else:
        say("a tenant is hashed into the key and cannot be read back from it: try --tenant NAME for each candidate")
