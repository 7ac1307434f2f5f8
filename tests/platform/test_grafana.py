"""The Grafana dashboard: every panel's PromQL parses (promtool) and every `{{label}}` in a legend
survives the expression's aggregation, so no series shows a blank name (issue 14)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from k2core import metrics
from k2portal.config import BASE_DIR

DASHBOARD = BASE_DIR / "deploy/grafana/dashboards/k2-pipeline.json"
AGGREGATIONS = "sum|max|min|avg|count|stddev|stdvar|group|topk|bottomk|quantile|count_values"
RANGE_FUNCTIONS = "rate|irate|increase|delta|idelta|deriv|changes|resets|[a-z]+_over_time"
BINARY = re.compile(r"\s(?:/|\*|\+|-|%|\^|==|!=|>=|<=|>|<|and|or|unless)\s(?:on\s*\([^)]*\)\s*|ignoring\s*\([^)]*\)\s*)?"
                    r"(?:group_left\s*(?:\([^)]*\))?\s*|group_right\s*(?:\([^)]*\))?\s*)?")


def _targets() -> list[tuple[str, str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], t["expr"], t.get("legendFormat", "")) for panel in dashboard["panels"]
            for t in panel["targets"]]


def _metric_labels(name: str) -> set[str]:
    for metric in metrics.all_metrics().values():
        base = metric._name
        for suffix, extra in (("", set()), ("_total", set()), ("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
            if name == base + suffix:
                return set(metric._labelnames) | extra
    raise AssertionError(f"{name} is not a registered k2_ metric")


def _top_level_split(expr: str) -> list[str]:
    """The operands of the binary operators outside any brackets."""
    depth, start, parts, i = 0, 0, [], 0
    while i < len(expr):
        ch = expr[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            m = BINARY.match(expr, i)
            if m:
                parts.append(expr[start:i])
                start = i = m.end()
                continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def _unwrap(expr: str) -> str:
    while expr.startswith("(") and expr.endswith(")"):
        depth = 0
        for i, ch in enumerate(expr):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(expr) - 1:
                return expr
        expr = expr[1:-1].strip()
    return expr


def output_labels(expr: str) -> set[str] | None:
    """The labels a PromQL expression's series carry; None for a scalar (a number, time())."""
    expr = _unwrap(expr.strip())
    parts = _top_level_split(expr)
    if len(parts) > 1:
        vectors = [labels for labels in map(output_labels, parts) if labels is not None]
        return vectors[0] if vectors else None
    if re.fullmatch(r"[0-9.e+-]+|time\(\)|vector\(.*\)", expr):
        return None
    if m := re.fullmatch(r"histogram_quantile\(\s*[0-9.]+\s*,(.*)\)", expr, re.S):
        inner = output_labels(m.group(1))
        return None if inner is None else inner - {"le"}
    if m := re.fullmatch(rf"(?:{AGGREGATIONS})\s*(by|without)\s*\(([^)]*)\)\s*\((.*)\)", expr, re.S):
        named = {label.strip() for label in m.group(2).split(",") if label.strip()}
        if m.group(1) == "by":
            return named
        inner = output_labels(m.group(3))
        return None if inner is None else inner - named
    if m := re.fullmatch(rf"(?:{AGGREGATIONS})\s*\((.*)\)\s*(by|without)\s*\(([^)]*)\)", expr, re.S):
        return output_labels(f"sum {m.group(2)} ({m.group(3)}) ({m.group(1)})")
    if re.fullmatch(rf"(?:{AGGREGATIONS})\s*\((.*)\)", expr, re.S):
        return set()
    if m := re.fullmatch(rf"(?:{RANGE_FUNCTIONS})\((.*)\[[^\]]+\]\)", expr, re.S):
        return output_labels(m.group(1))
    if m := re.fullmatch(r"(k2_[a-z0-9_]+)(\{[^}]*\})?(\s+offset\s+\w+)?", expr):
        return _metric_labels(m.group(1))
    raise AssertionError(f"the legend check cannot read {expr!r}: extend output_labels")


def _legend_labels(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legend))


def test_every_legend_label_survives_its_aggregation() -> None:
    targets = _targets()
    assert len(targets) >= 9
    for title, expr, legend in targets:
        wanted = _legend_labels(legend)
        assert wanted, f"panel {title!r} has no legend labels: its series would be named by the raw expression"
        kept = output_labels(expr)
        assert kept is not None and wanted <= kept, (
            f"panel {title!r}: legend {legend!r} uses {sorted(wanted - (kept or set()))}, "
            f"which {expr!r} aggregates away (it keeps {sorted(kept or [])})")


@pytest.mark.parametrize(("expr", "legend"), [
    # the shipped dashboard's panels before issue 14
    ("histogram_quantile(0.99, sum by (le, table) (rate(k2_iceberg_write_duration_seconds_bucket[5m])))", "{{data_type}}"),
    ("histogram_quantile(0.99, sum by (le) (rate(k2_kafka_produce_ack_latency_seconds_bucket[5m])))", "{{data_type}}"),
    ("histogram_quantile(0.5, sum by (le, query_type) (rate(k2_query_duration_seconds_bucket[5m])))", "{{data_type}}"),
    ("sum without (data_type, reason, asset_class) (rate(k2_dlq_messages_total[5m]))", "{{reason}}"),
    ("sum(rate(k2_dlq_messages_total[5m])) / sum by (data_type) (rate(k2_kafka_messages_consumed_total[5m]))", "{{data_type}}"),
])
def test_the_check_catches_a_legend_label_aggregated_away(expr: str, legend: str) -> None:
    kept = output_labels(expr)
    assert kept is not None and not _legend_labels(legend) <= kept


def test_the_label_reader_follows_by_without_and_binary_operators() -> None:
    assert output_labels("sum by (a, b) (rate(k2_dlq_messages_total[5m]))") == {"a", "b"}
    assert output_labels("sum without (reason) (k2_dlq_messages_total)") == {"exchange", "asset_class", "data_type"}
    assert output_labels("max(k2_kafka_consumer_lag_messages) by (group)") == {"group"}
    assert output_labels("time() - max by (group) (k2_consumer_last_heartbeat_timestamp_seconds)") == {"group"}
    assert output_labels("rate(k2_query_duration_seconds_bucket[5m])") == {"query_type", "le"}
    assert output_labels("time()") is None


def test_every_panel_expression_parses_with_promtool(tmp_path: Path) -> None:
    """The expressions go into a generated rules file (one recording rule each) that promtool checks."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: `make prometheus` installs Debian's prometheus package"
    rules = [{"record": f"k2:panel_{i}", "expr": expr} for i, (_, expr, _) in enumerate(_targets())]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [{"record": "k2:bad", "expr": "sum by (le (x)"}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, timeout=60).returncode != 0
