"""Run the examples of one Markdown page in order, as a reader would (conventions: ``doc_blocks``).

    python -m tests.docs.run_page PAGE --url valkey://127.0.0.1:PORT [--cluster HOST:PORT] --workdir DIR

A separate process per page, so an example's clients, threads, metrics and event loops never leak into the
test session. Prints ``ok <page>:<line> <kind>`` per block; at the first failure prints the traceback (whose
file and line numbers are the Markdown page's) or the command's output, and exits 1.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import inspect
import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent_cache.commands.config import parse_resource
from tests.docs.doc_blocks import Block, blocks, expected_exit, rewrite_connections


class ExampleFailedError(Exception):
    pass


class Page:
    def __init__(self, url: str, cluster: tuple[str, int] | None, workdir: Path) -> None:
        parts = urlsplit(url)
        self.standalone = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.cluster = cluster
        self.workdir = workdir
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.runner = asyncio.Runner()
        self.env = {
            **os.environ,
            "AGENT_CACHE_URL": url,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def rewrite(self, code: str) -> str:
        return rewrite_connections(code, self.standalone, self.cluster)

    def run(self, block: Block) -> None:
        kind = block.kind
        if kind == "python":
            self.python(block)
        elif kind == "shell":
            self.shell(block)
        elif kind == "yaml":
            parse_resource(block.code, block.where)
        elif kind == "file":
            (self.workdir / block.argument).write_text(block.code)

    def python(self, block: Block) -> None:
        # Padding keeps the page's line numbers in tracebacks.
        source = "\n" * (block.line - 1) + self.rewrite(block.code)
        code = compile(source, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if code.co_flags & inspect.CO_COROUTINE:
            self.runner.run(eval(code, self.namespace))  # top-level await, as in `python -m asyncio`
        else:
            exec(code, self.namespace)

    def shell(self, block: Block) -> None:
        for line, command in block.commands():
            run = self.rewrite(command)
            if "| jq" in run and shutil.which("jq") is None:
                run = run.split("| jq", 1)[0]  # no jq here: check that the JSON at least parses
                check_json = True
            else:
                check_json = False
            done = subprocess.run(
                ["bash", "-c", run],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            expected = expected_exit(command)
            if done.returncode != expected:
                raise ExampleFailedError(
                    f"{block.page}:{line}: `{command}` exited {done.returncode}, expected {expected}\n"
                    f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
                )
            if check_json:
                json.loads(done.stdout)

    def close(self) -> None:
        self.runner.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("page", type=Path)
    parser.add_argument("--url", required=True)
    parser.add_argument("--cluster")
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    cluster = None
    if args.cluster:
        host, port = args.cluster.rsplit(":", 1)
        cluster = (host, int(port))
    page = Page(args.url, cluster, args.workdir.resolve())
    examples = blocks(args.page.resolve())
    os.chdir(args.workdir)
    try:
        for block in examples:
            if block.kind in ("text", "skip"):
                continue
            try:
                page.run(block)
            except ExampleFailedError as exc:
                print(f"FAILED {block.where} ({block.kind})\n{exc}", flush=True)
                return 1
            except BaseException:
                print(f"FAILED {block.where} ({block.kind})", flush=True)
                traceback.print_exc(file=sys.stdout)
                return 1
            print(f"ok {block.where} {block.kind}", flush=True)
    finally:
        page.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
