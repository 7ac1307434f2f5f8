"""docker-compose.yml is the production-shaped stack; Docker does not run here, so it is parsed."""

from __future__ import annotations

import json
import re

import yaml

from k2portal import metrics
from k2portal.config import BASE_DIR, VARIABLES

COMPOSE = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
LIBRARY_ENV = {"PROMETHEUS_MULTIPROC_DIR", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
               "PYICEBERG_S3__ENDPOINT", "PYICEBERG_S3__PATH_STYLE_ACCESS"}


def test_every_service_the_portal_needs_is_there() -> None:
    needed = {"kafka", "schema-registry", "postgres", "redis", "minio", "minio-init", "prometheus",
              "grafana", "kafka-ui", "web", "worker", "beat"}
    assert needed <= set(SERVICES)
    assert "KRaft" not in SERVICES["kafka"] and "broker,controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert "mb" in SERVICES["minio-init"]["entrypoint"] and "warehouse" in SERVICES["minio-init"]["entrypoint"]


def test_image_tags_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        assert ":" in image and not image.endswith(":latest"), f"{name} image {image} is not pinned"
    assert SERVICES["prometheus"]["image"].endswith("v3.9.1")  # ADR #005
    assert SERVICES["grafana"]["image"].endswith("12.3.1")
    assert SERVICES["kafka-ui"]["image"].startswith("ghcr.io/kafbat/kafka-ui:v1.4.2")


def test_portal_services_pass_only_environment_names_the_settings_read() -> None:
    known = {v.name for v in VARIABLES} | LIBRARY_ENV
    for name in ("web", "worker", "beat"):
        env = SERVICES[name]["environment"]
        unknown = set(env) - known
        assert not unknown, f"{name} passes variables no setting reads: {unknown}"
        for required in ("DATABASE_URL", "REDIS_URL", "K2_KAFKA_BOOTSTRAP", "K2_SCHEMA_REGISTRY_URL",
                         "K2_ICEBERG_CATALOG_URI", "K2_WAREHOUSE", "SECRET_KEY"):
            assert required in env, f"{name} does not set {required}"
        assert env["K2_WAREHOUSE"].startswith("s3://")


def test_prometheus_scrapes_the_portal_and_loads_the_alert_rules() -> None:
    config = yaml.safe_load((BASE_DIR / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "web:8000" in targets
    assert config["rule_files"] == ["alerts.yml"]  # beside prometheus.yml: /etc/prometheus/ in the container
    mounted = SERVICES["prometheus"]["volumes"]
    assert any(v.startswith("./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml") for v in mounted)


def _metric_names(expr: str) -> set[str]:
    return {m.removesuffix("_bucket") for m in re.findall(r"\bk2_[a-z_]+", expr)}


def test_alerts_and_dashboards_use_registered_metric_names() -> None:
    registered = {m._name for m in metrics.all_metrics().values()}
    registered |= {f"{n}_total" for n in registered}
    alerts = yaml.safe_load((BASE_DIR / "deploy/prometheus/alerts.yml").read_text())
    exprs = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    dashboard = json.loads((BASE_DIR / "deploy/grafana/dashboards/k2-pipeline.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    for expr in exprs:
        unknown = _metric_names(expr) - registered
        assert not unknown, f"{expr!r} uses unregistered metrics {unknown}"
