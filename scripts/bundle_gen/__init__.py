"""The pieces of ``scripts/generate.py``: PromQL from the metrics definition, dashboards, rules, chart, manifests."""
