"""Side-by-side benchmarks of agent-cache and betterdb-agent-cache on one real Valkey (``python -m benchmarks``).

Commands, not tests: they print ratios measured in one run. ``benchmarks/README.md`` explains what is measured.
"""
