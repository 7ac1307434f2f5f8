"""manage.py generate_sample: realistic synthetic ASX trades, quotes and reference data (March 2014)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ingestion.engine.sample import STOCKS, write_sample
from k2core.paths import BASE_DIR

SAMPLE_DIR = BASE_DIR / "data" / "sample" / "asx-2014-03"
# The committed sample was made with exactly these arguments (tests regenerate and compare).
COMMITTED_SAMPLE_ARGS = {"seed": 42, "trades": 2000, "days": 5, "quotes_per_trade": 2.0, "gaps": 3, "duplicates": 2, "out_of_order": 2}


class Command(BaseCommand):
    help = (f"Write trades.csv, quotes.csv, reference_data.csv and manifest.json for the ASX symbols "
            f"{', '.join(s.symbol for s in STOCKS)} over trading days of March 2014, 10:00-16:00 Sydney time. "
            "Deterministic for a --seed. Optionally injects sequence gaps, duplicates and out-of-order trades and lists "
            "them in manifest.json (the known truth for gap-detection tests).")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--out", type=Path, default=None, metavar="DIR", help=f"output directory (default: {SAMPLE_DIR.relative_to(BASE_DIR)})")
        parser.add_argument("--seed", type=int, default=42, help="random seed; the same seed gives byte-identical files (default: 42)")
        parser.add_argument("--trades", type=int, default=2000, help="number of trades before anomalies (default: 2000)")
        parser.add_argument("--days", type=int, default=5, help="trading days from --start (default: 5)")
        parser.add_argument("--start", type=date.fromisoformat, default=date(2014, 3, 3), help="first day, YYYY-MM-DD (default: 2014-03-03)")
        parser.add_argument("--quotes-per-trade", type=float, default=2.0, help="mean quote updates per trade; 0 writes no quotes (default: 2)")
        parser.add_argument("--gaps", type=int, default=0, help="sequence gaps to inject into trades (1-3 numbers each)")
        parser.add_argument("--duplicates", type=int, default=0, help="duplicated trades to inject")
        parser.add_argument("--out-of-order", type=int, default=0, help="pairs of a symbol's consecutive trades to swap")
        parser.add_argument("--committed", action="store_true", help="regenerate the committed sample with its recorded arguments")

    def handle(self, *args: Any, out: Path | None, committed: bool, **options: Any) -> None:
        kwargs = dict(COMMITTED_SAMPLE_ARGS) if committed else {
            k: options[k] for k in ("seed", "trades", "days", "start", "quotes_per_trade", "gaps", "duplicates", "out_of_order")}
        if kwargs["trades"] < 1 or kwargs["days"] < 1:
            raise CommandError("--trades and --days must be positive")
        out_dir = out or SAMPLE_DIR
        try:
            manifest = write_sample(out_dir=out_dir, **kwargs)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        rows = ", ".join(f"{k} {v}" for k, v in manifest["rows"].items())
        self.stdout.write(f"wrote {out_dir}: {rows}; {len(manifest['anomalies'])} injected anomalies in manifest.json")
