"""manage.py run_summary: what `make run` prints once the sample is in — rows landed in Iceberg,
gaps found, and a ready-to-paste API call."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from catalog.selectors import get_catalog
from ingestion.management.commands.generate_sample import SAMPLE_DIR
from ingestion.models import SequenceGap
from queries import services as query_services
from queries.selectors import namespace


def _table_rows(data_type: str) -> int:
    table = get_catalog().load_table(f"{namespace()}.{data_type}")
    snapshot = table.current_snapshot()
    return int(snapshot.summary.get("total-records", 0)) if snapshot else 0


class Command(BaseCommand):
    help = "Wait (up to --timeout s) for the sample to land in Iceberg, then print rows, gaps and an API example."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--timeout", type=float, default=90.0)
        parser.add_argument("--check-loaded", action="store_true",
                            help="only report whether the trades table already holds rows (exit 0 yes, 3 no)")

    def handle(self, *args: Any, base_url: str, timeout: float, check_loaded: bool = False, **options: Any) -> None:
        if check_loaded:
            rows = _table_rows("trades")
            self.stdout.write(f"trades table holds {rows:,} rows")
            raise SystemExit(0 if rows else 3)
        manifest = json.loads((SAMPLE_DIR / "manifest.json").read_text())
        expected: dict[str, int] = manifest["rows"]
        deadline = time.monotonic() + timeout
        counts = {data_type: 0 for data_type in expected}
        while True:
            counts = {data_type: _table_rows(data_type) for data_type in expected}
            if all(counts[d] >= n for d, n in expected.items()) or time.monotonic() > deadline:
                break
            time.sleep(1)
        landed = " · ".join(f"{d} {counts[d]:,}/{expected[d]:,}" for d in expected)
        done = all(counts[d] >= n for d, n in expected.items())
        self.stdout.write(f"Iceberg rows (landed/produced): {landed}"
                          + ("" if done else f"  — still arriving after {timeout:.0f}s; see the consumers in the admin"))
        gaps = SequenceGap.objects.all()
        open_gaps = gaps.filter(state=SequenceGap.State.OPEN).count()
        filled = gaps.filter(state=SequenceGap.State.FILLED).count()
        injected = sum(1 for a in manifest.get("anomalies", []) if a.get("kind") == "gap")
        self.stdout.write(f"Sequence gaps: {gaps.count()} detected ({open_gaps} open, {filled} filled by late events; "
                          f"the sample injects {injected} gaps) — {base_url}/admin/ingestion/sequencegap/")
        owner = get_user_model().objects.filter(username="admin").first()
        _, raw = query_services.api_key_create(name=f"make-run-{int(time.time())}", owner=owner,
                                               scopes=["market_data:read", "queries:run"])
        day = manifest.get("start", "2014-03-03")
        query = urlencode({"symbol": "BHP", "date": day, "interval": "5m"})
        self.stdout.write("Try the API (this key was issued now; manage keys in the admin):")
        self.stdout.write(f"  curl -s -H 'X-API-Key: {raw}' '{base_url}/api/v1/ohlcv?{query}'")
