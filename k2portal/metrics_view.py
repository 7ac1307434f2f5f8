"""/metrics: django_ and k2_ metrics; in multiprocess mode, every worker process's too.

Under `make run` every process writes its files into one directory (PROMETHEUS_MULTIPROC_DIR =
K2_METRICS_DIR). In docker-compose.yml each container writes into its own subdirectory of the
shared K2_METRICS_DIR volume (process ids repeat across containers; deploy/docker-entrypoint.sh
picks and clears it), and the portal merges the files of every container's subdirectory."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector


class MetricsTreeCollector:
    """Merges the multiprocess files of a directory and of its subdirectories."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def collect(self) -> Iterable[Metric]:
        files = sorted(str(p) for p in self.root.glob("**/*.db"))
        return MultiProcessCollector.merge(files, accumulate=True)


def metrics_root(own_dir: Path, metrics_dir: Path) -> Path:
    """The directory to merge: the shared K2_METRICS_DIR when this process's directory is one of
    its per-container subdirectories, else this process's own directory."""
    return metrics_dir if own_dir.resolve().parent == metrics_dir.resolve() else own_dir


def metrics(request: HttpRequest) -> HttpResponse:
    own = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if own:
        registry = CollectorRegistry()
        registry.register(MetricsTreeCollector(metrics_root(Path(own), settings.K2.metrics_dir)))
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
