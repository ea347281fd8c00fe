"""The benchmark command keeps working: one tiny run, every operation reported for both libraries.

Nothing here looks at times or ratios — a benchmark is a command someone runs on a quiet machine; this
only proves it still runs end to end (competitor install, embedded server, every phase, the report).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.operations import OPERATIONS
from benchmarks.report import HIT_PATHS, OURS, SCALE_OPS, THEIRS, UNCOMPRESSED

pytestmark = [pytest.mark.valkey, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--ops", "8",
    "--rounds", "2",
    "--warmup", "2",
    "--concurrency", "4",
    "--pool", "8",
    "--scale", "100,300",
    "--scale-rounds", "1",
    "--scale-calls", "3",
    "--scale-budget", "0.2",
    "--memory-entries", "20",
    "--key-repeat", "10",
    "--quiet",
]  # fmt: skip


def test_the_benchmark_runs_and_reports_every_operation_for_both_libraries(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    report = tmp_path / "results.md"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", *TINY, "--json", str(out), "--markdown", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.read_text())

    for mode in ("sequential", "concurrent"):
        data = results["throughput"][mode]
        assert data["floor"]["ops_per_s"] > 0
        assert all(data["floor_next_to"][name]["ops_per_s"] > 0 for name in HIT_PATHS)
        for operation in OPERATIONS:
            for library in (OURS, THEIRS):
                figure = data["ops"][operation.name][library]
                assert figure["ops_per_s"] > 0, (mode, operation.name, library)
                assert figure["commands_per_op"] > 0, (mode, operation.name, library)
    for library in (OURS, THEIRS):
        assert set(results["round_trips"][library]) == {operation.name for operation in OPERATIONS}
    for name in HIT_PATHS:
        assert results["round_trips"][OURS][name] == 1  # the architecture's promise, checked on the way

    assert [point["keys"] for point in results["scale"]] == [100, 300]
    for point in results["scale"]:
        for name in SCALE_OPS:
            assert set(point["latencies_ms"][name]) == {OURS, THEIRS}
    labels = [figure["label"] for figure in results["memory"]]
    assert labels == [THEIRS, OURS, f"{OURS}, {UNCOMPRESSED}"]
    assert all(figure["bytes_per_entry"] > 0 for figure in results["memory"])
    assert results["key_derivation"]["ours_us"] > 0
    near = results["near_cache"]
    for mode in ("sequential", "concurrent"):
        for name in ("llm.check hit", "tool.check hit"):
            assert set(near[mode]["ops"][name]) == {"near", "ours", "get", "theirs"}
        assert set(near[mode]["ops"]["llm.check miss"]) == {"near", "ours"}
    assert near["memory"]["entries"] > 0  # the near-cache did fill: its rows measured L1, not Valkey
    assert near["memory_bounded"]["bytes"] <= near["memory_bounded"]["max_bytes"]

    text = report.read_text()
    assert "python -m benchmarks" in text and "Targets (issue 6)" in text and "Near-cache (L1)" in text
    assert completed.stdout == text
