"""``agent-cache config show | apply | diff``: the live config protocol from a terminal, for caches the operator
does not manage (no Kubernetes, a laptop, a VM).

Same YAML, same writer as the operator: a file holds an ``AgentCache`` resource, its config keys
(``defaultTTL``, ``tiers``, ``toolPolicies``, ``costOverrides``) are read by ``CacheConfig.from_spec`` and written
by ``agent_cache.config.apply_config``, so running instances apply it within about a second. The cache is
``--name``, else ``spec.prefix``, else ``metadata.name``. ``spec.valkey`` and ``spec.monitoring`` are the
operator's business: this command connects to ``--url``.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import getpass
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import AgentCacheUsageError, ConfigurationError
from .._keys import validate_cache_name
from ..config import AppliedConfig, CacheConfig, InstanceRecord, apply_config, unknown_config_fields
from ._connection import Session, add_connection_options, add_name_option, run_command
from ._readers import instances, read_live_config, resolve_name
from ._terminal import EXIT_CODES_HELP, CommandError, ExitCode, print_json

API_GROUP = "agentcache.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "AgentCache"
# The AgentCache CRD's spec fields (tests/cli/test_cli_config.py keeps this equal to the operator's schema).
SPEC_FIELDS = frozenset(
    {
        "prefix",
        "valkey",
        "defaultTTL",
        "tiers",
        "toolPolicies",
        "modelPolicies",
        "costOverrides",
        "nearCache",
        "monitoring",
        "deletionPolicy",
    }
)
_WAIT_POLL_S = 0.25

_EXAMPLE_FILE = """\
an agentcache.yaml (the operator's resource; only the config keys matter here):
  apiVersion: agentcache.dev/v1alpha1
  kind: AgentCache
  metadata: {name: support-bot}
  spec:
    prefix: support_bot
    valkey: {url: valkey://valkey:6379}   # the operator's; ignored by this command
    tiers: {llm: {ttl: 86400}, tool: {ttl: 600}}
    toolPolicies: {get_weather: {ttl: 600}, send_email: {cacheable: false}}
    costOverrides: {gpt-4o: {inputPer1k: 0.0025, outputPer1k: 0.01}}
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config",
        help="show, apply or diff a cache's live config (TTLs, tool policies, prices)",
        description="The live config every instance of a cache applies within about a second: TTLs per tier, "
        "tool policies and cost overrides — written with the operator's writer from the operator's YAML.",
        epilog=f"{_EXAMPLE_FILE}\nRun 'agent-cache config show --help' (apply, diff) for each command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="config commands", metavar="COMMAND", required=True)

    show = commands.add_parser(
        "show",
        help="print the live config as an AgentCache resource, and which instances run it",
        description="Print the live config of a cache as an AgentCache resource you can edit and apply, with "
        "its version, who wrote it and which instances run it.",
        epilog=f"""\
examples:
  agent-cache config show --url valkey://10.0.0.5:6379 --name support_bot > agentcache.yaml
      save it, edit it, then: agent-cache config apply -f agentcache.yaml
  agent-cache config show --name support_bot --json | jq .version

{EXIT_CODES_HELP} (3: the cache has no live config; its instances use their code defaults)
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_name_option(show)
    show.add_argument(
        "--json",
        action="store_true",
        help="print JSON (version, source, updated_at, spec, instances), e.g. --json | jq .spec",
    )
    add_connection_options(show)
    show.set_defaults(run=run_show)

    apply = commands.add_parser(
        "apply",
        help="write the config of an AgentCache YAML file; running instances apply it within a second",
        description="Write the config keys of an AgentCache resource to the cache's live config (the operator's "
        "writer: config hash, tool-policy mirror, change announcement). Idempotent: re-applying the same config "
        "changes nothing.",
        epilog=f"""\
{_EXAMPLE_FILE}
examples:
  agent-cache config apply -f agentcache.yaml --url valkey://10.0.0.5:6379
      the cache is spec.prefix (else metadata.name)
  agent-cache config apply -f agentcache.yaml --name support_bot_staging --wait 30
      the same config for another cache; wait until every live instance runs it
  agent-cache config apply -f agentcache.yaml --dry-run
      print the change, write nothing

{EXIT_CODES_HELP} (1 also: the operator manages this cache and --force was not given, or --wait timed out)
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _file_options(apply)
    apply.add_argument("--dry-run", action="store_true", help="show the change and write nothing, e.g. --dry-run")
    apply.add_argument(
        "--force",
        action="store_true",
        help="write even when the Kubernetes operator manages this cache's config (it will put its own back at its "
        "next resync: change the AgentCache resource instead), or when the file has fields that are no AgentCache "
        "field (they are ignored), e.g. --force",
    )
    apply.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="then wait up to this long until every live instance reports the new version (default: 0, "
        "don't wait), e.g. --wait 30",
    )
    add_connection_options(apply)
    apply.set_defaults(run=run_apply)

    diff = commands.add_parser(
        "diff",
        help="compare an AgentCache YAML file with the live config",
        description="Compare the config keys of an AgentCache resource with the cache's live config, as a "
        "unified diff of their canonical YAML (live first).",
        epilog="""\
examples:
  agent-cache config diff -f agentcache.yaml --url valkey://10.0.0.5:6379
  agent-cache config diff -f agentcache.yaml || agent-cache config apply -f agentcache.yaml

exit codes (as kubectl diff):
  0  no differences
  1  the file differs from the live config
  2  bad usage, an invalid file, or Valkey unreachable
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _file_options(diff)
    add_connection_options(diff)
    diff.set_defaults(run=run_diff)


def _file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--file",
        type=Path,
        required=True,
        metavar="PATH",
        help="YAML file with an AgentCache resource (kind: AgentCache), e.g. -f agentcache.yaml",
    )
    add_name_option(
        parser,
        extra=" Here: overrides spec.prefix / metadata.name; with several AgentCache resources in the file, "
        "picks the one with that cache name.",
    )


# ── the file ───────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Resource:
    name: str
    """The cache it configures."""
    config: CacheConfig
    warnings: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    """Fields of ``spec`` that are no AgentCache field (``spec.toolPolicy``): refused unless ``--force``."""


def _cache_name_of(document: dict[str, Any]) -> str | None:
    spec = document.get("spec")
    prefix = spec.get("prefix") if isinstance(spec, dict) else None
    if prefix is not None:
        return str(prefix)
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return None if name is None else str(name)


def parse_resource(text: str, origin: str, name: str | None = None) -> Resource:
    """Read the AgentCache resource of a YAML text — pure; every error names ``origin`` and the field."""
    import yaml

    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{origin} is not valid YAML: {' '.join(str(exc).split())}") from None
    resources = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if not resources:
        raise ConfigurationError(f"{origin} has no AgentCache resource (a YAML document with kind: {KIND})")
    if len(resources) > 1:
        named = [r for r in resources if _cache_name_of(r) == name]
        if name is None or len(named) != 1:
            found = ", ".join(str(_cache_name_of(r)) for r in resources)
            raise ConfigurationError(
                f"{origin} has {len(resources)} AgentCache resources ({found}): pick one with --name"
            )
        resources = named
    document = resources[0]
    warnings = []
    api_version = document.get("apiVersion")
    if not (isinstance(api_version, str) and api_version.startswith(f"{API_GROUP}/")):
        warnings.append(f"{origin}: apiVersion {api_version!r} is not {API_VERSION}; reading it anyway")
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise ConfigurationError(f"{origin}: spec is required and must be a mapping")
    unknown = [f"spec.{field}" for field in sorted(set(map(str, spec)) - SPEC_FIELDS)]
    chosen = name or _cache_name_of(document)
    if chosen is None:
        raise ConfigurationError(f"{origin}: no cache name: set spec.prefix or metadata.name, or pass --name")
    try:
        validate_cache_name(chosen)
    except AgentCacheUsageError as exc:
        source = "--name" if name else ("spec.prefix" if "prefix" in spec else "metadata.name")
        raise ConfigurationError(f"{origin}: {source}: {exc}; set spec.prefix or pass --name") from None
    try:
        config = CacheConfig.from_spec(spec)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{origin}: {exc}") from None
    return Resource(chosen, config, tuple(warnings), (*unknown, *unknown_config_fields(spec)))


def _load(session: Session, path: Path, name: str | None, force: bool | None = None) -> Resource:
    """The file's resource. A field that is no AgentCache field (a typo drops what it meant to set) is a usage
    error — with ``force`` (apply's ``--force``; None: the command has none) a warning."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}", ExitCode.USAGE) from None
    resource = parse_resource(text, str(path), name)
    if resource.unknown and not force:
        what = "is not an AgentCache field" if len(resource.unknown) == 1 else "are not AgentCache fields"
        hint = "; nothing was written: fix the file, or pass --force to apply the rest" if force is False else ""
        raise ConfigurationError(f"{path}: {', '.join(resource.unknown)} {what} (a typo?){hint}")
    for warning in resource.warnings:
        session.note(f"warning: {warning}")
    for field in resource.unknown:
        session.note(f"warning: {path}: {field} is not an AgentCache field; ignored (--force)")
    return resource


def resource_document(name: str, config: CacheConfig) -> dict[str, Any]:
    """An AgentCache resource holding ``config`` for cache ``name`` (metadata.name made DNS-safe)."""
    k8s_name = name.lower().replace("_", "-").strip(".-") or "agent-cache"
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": k8s_name},
        "spec": {"prefix": name, **config.to_spec()},
    }


def spec_yaml(config: CacheConfig | None) -> str:
    import yaml

    return "" if config is None else yaml.safe_dump(config.to_spec(), sort_keys=True, default_flow_style=False)


def cli_source() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def _instances_document(records: list[InstanceRecord]) -> list[dict[str, Any]]:
    return [{"id": r.instance_id, "host": r.host, "pid": r.pid, "version": r.version, "seen": r.seen} for r in records]


# ── show ───────────────────────────────────────────────────────────────────────


def run_show(args: argparse.Namespace) -> int:
    import yaml

    async def body(session: Session) -> int:
        name = await resolve_name(session, args.name)
        applied, malformed = await read_live_config(session, name)
        if malformed:
            raise CommandError(
                f"the live config of cache {name!r} is malformed (instances keep their last good one): {malformed}"
            )
        if applied is None:
            session.empty_server_note()
            session.note(f"cache {name!r} has no live config: its instances run on the defaults in their code")
            return ExitCode.NOTHING
        records = await instances(session, name)
        on_version = sum(1 for r in records if r.version == applied.version)
        if args.json:
            print_json(
                {
                    "name": name,
                    "version": applied.version,
                    "source": applied.source,
                    "updated_at": applied.updated_at,
                    "spec": applied.config.to_spec(),
                    "instances": _instances_document(records),
                }
            )
            return ExitCode.OK
        header = [
            f"# Live config of cache {name}: version {applied.version}",
            f"# written by {applied.source or 'unknown'} at {applied.updated_at or 'unknown time'}",
            f"# {len(records)} live instance(s), {on_version} running this version",
            "# Apply an edited copy with: agent-cache config apply -f FILE (the operator also needs spec.valkey)",
        ]
        document = yaml.safe_dump(resource_document(name, applied.config), sort_keys=False, default_flow_style=False)
        session.out.print("\n".join(header) + "\n" + document, markup=False, highlight=False, end="", soft_wrap=True)
        return ExitCode.OK

    return run_command(args, body)


# ── apply ──────────────────────────────────────────────────────────────────────


def run_apply(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        resource = _load(session, args.file, args.name, force=args.force)
        name, config = resource.name, resource.config
        current, malformed = await read_live_config(session, name)
        if malformed:
            session.note(f"note: the live config of {name!r} is malformed ({malformed}); it will be replaced")
        if current is not None and current.source.startswith("operator:") and not args.force:
            owner = current.source.removeprefix("operator:")
            raise CommandError(
                f"cache {name!r} is managed by the Kubernetes operator (AgentCache {owner}): it would put its own "
                "config back at its next resync. Change that resource instead, or pass --force"
            )
        if current is not None and current.version == config.version:
            session.out.print(f"unchanged: cache {name} already runs config version {config.version}", markup=False)
        elif args.dry_run:
            _print_diff(session, current, config, str(args.file), name)
            session.out.print(f"dry run: would apply config version {config.version} to cache {name}", markup=False)
            return ExitCode.OK
        else:
            version = await apply_config(session.client, name, config, cli_source())
            was = f" (was {current.version})" if current else ""
            session.out.print(f"applied config version {version} to cache {name}{was}", markup=False)
        if args.wait > 0:
            return await _wait_for_instances(session, name, config.version, args.wait)
        return ExitCode.OK

    return run_command(args, body)


async def _wait_for_instances(session: Session, name: str, version: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        records = await instances(session, name)
        behind = [r for r in records if r.version != version]
        if not behind:
            session.out.print(f"all {len(records)} live instance(s) of {name} run version {version}", markup=False)
            return ExitCode.OK
        if time.monotonic() >= deadline:
            late = ", ".join(f"{r.instance_id} ({r.version or 'code defaults'})" for r in behind)
            raise CommandError(
                f"after {timeout_s:g} s, {len(behind)} of {len(records)} live instance(s) still run another "
                f"version: {late}"
            )
        await asyncio.sleep(_WAIT_POLL_S)


# ── diff ───────────────────────────────────────────────────────────────────────


def _print_diff(session: Session, current: AppliedConfig | None, config: CacheConfig, origin: str, name: str) -> bool:
    """Print a unified diff live → file; True when they differ."""
    live_label = f"live config of {name} ({f'version {current.version}' if current else 'none'})"
    lines = list(
        difflib.unified_diff(
            spec_yaml(current.config if current else None).splitlines(keepends=True),
            spec_yaml(config).splitlines(keepends=True),
            fromfile=live_label,
            tofile=f"{origin} (version {config.version})",
        )
    )
    styles = {"+": "green", "-": "red", "@": "cyan"}
    for line in lines:
        text = line.rstrip("\n")
        style = "bold" if text.startswith(("+++", "---")) else styles.get(text[:1], "")
        session.out.print(text, style=style, markup=False, highlight=False, soft_wrap=True)
    return bool(lines)


def run_diff(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        resource = _load(session, args.file, args.name)
        current, malformed = await read_live_config(session, resource.name)
        if malformed:
            session.note(f"note: the live config of {resource.name!r} is malformed ({malformed}); shown as none")
        if not _print_diff(session, current, resource.config, str(args.file), resource.name):
            session.out.print(
                f"no differences: {args.file} matches the live config of {resource.name} "
                f"(version {resource.config.version})",
                markup=False,
            )
            return ExitCode.OK
        return ExitCode.FAILED

    return run_command(args, body)
