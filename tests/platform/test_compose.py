"""docker-compose.yml is the production-shaped stack; Docker does not run here, so it is parsed."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import yaml

from k2core import metrics
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


# --- issue 14: a stack that would start ---------------------------------------------------------

def _words(command: list[str] | str) -> str:
    return command if isinstance(command, str) else " ".join(command)


def test_web_runs_gunicorn_with_whitenoise_not_the_development_server() -> None:
    web = _words(SERVICES["web"]["command"])
    assert "runserver" not in web and "--insecure" not in web
    assert "exec gunicorn -c python:k2portal.gunicorn_conf k2portal.wsgi" in web
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert "runserver" not in dockerfile
    assert 'CMD ["gunicorn", "-c", "python:k2portal.gunicorn_conf", "k2portal.wsgi"]' in dockerfile
    assert "manage.py collectstatic --noinput" in dockerfile
    pins = dict(line.split("==", 1) for line in (BASE_DIR / "requirements/base.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins.get("gunicorn") and pins.get("whitenoise")
    from django.conf import settings

    middleware = list(settings.MIDDLEWARE)
    assert middleware.index("whitenoise.middleware.WhiteNoiseMiddleware") == \
        middleware.index("django.middleware.security.SecurityMiddleware") + 1


def test_portal_services_and_kafka_ui_wait_for_a_healthy_schema_registry() -> None:
    check = SERVICES["schema-registry"]["healthcheck"]["test"]
    assert "http://localhost:8081/subjects" in _words(check)
    for name in ("web", "worker", "beat", "kafka-ui"):
        assert SERVICES[name]["depends_on"]["schema-registry"] == {"condition": "service_healthy"}, name


def test_each_portal_container_gets_its_own_cleared_metrics_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The image's entry point (run here for real) gives each container hostname its own
    multiprocess directory under K2_METRICS_DIR and empties it; compose no longer sets one
    PROMETHEUS_MULTIPROC_DIR shared by every container."""
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]' in dockerfile
    for name in ("web", "worker", "beat"):
        env = SERVICES[name]["environment"]
        assert "PROMETHEUS_MULTIPROC_DIR" not in env and env["K2_METRICS_DIR"] == "/app/var/prometheus"
        assert "metrics:/app/var/prometheus" in SERVICES[name]["volumes"]
    host = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / host).mkdir()
    (tmp_path / host / "counter_7.db").write_bytes(b"stale")
    (tmp_path / "otherhost").mkdir()
    (tmp_path / "otherhost" / "counter_7.db").write_bytes(b"another container's")
    result = subprocess.run([str(BASE_DIR / "deploy/docker-entrypoint.sh"), "sh", "-c",
                             'echo "$PROMETHEUS_MULTIPROC_DIR"; ls -A "$PROMETHEUS_MULTIPROC_DIR"'],
                            env={"PATH": "/usr/bin:/bin", "K2_METRICS_DIR": str(tmp_path)},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path / host)]  # its own directory, now empty
    assert (tmp_path / "otherhost" / "counter_7.db").exists()  # other containers' files untouched


def test_minio_init_reads_the_credentials_from_its_own_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The bucket script, as compose hands it to the container ($$ → $), run with an `mc` that
    records its arguments: the credentials come from the container's environment."""
    init = SERVICES["minio-init"]
    assert set(init["environment"]) == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    assert init["environment"]["MINIO_ROOT_USER"] == SERVICES["minio"]["environment"]["MINIO_ROOT_USER"]
    assert init["environment"]["MINIO_ROOT_PASSWORD"] == SERVICES["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    entrypoint = init["entrypoint"].replace("$$", "$")
    assert "k2admin" not in entrypoint and "k2password" not in entrypoint
    mc = tmp_path / "mc"
    mc.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {tmp_path}/calls\necho >> {tmp_path}/calls\n')
    mc.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "MINIO_ROOT_USER": "user one", "MINIO_ROOT_PASSWORD": "s3cr3t"}
    subprocess.run(shlex.split(entrypoint), env=env, check=True, timeout=30)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["alias|set|k2|http://minio:9000|user one|s3cr3t|", "mb|--ignore-existing|k2/warehouse|"]


def test_dockerignore_keeps_the_venv_var_and_git_out_of_the_image() -> None:
    ignored = {line.strip() for line in (BASE_DIR / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "var/", ".git"} <= ignored


def test_readme_documents_every_variable_compose_sets() -> None:
    readme = (BASE_DIR / "README.md").read_text()
    names = set()
    for name in ("web", "worker", "beat", "minio", "minio-init", "grafana"):
        names |= set(SERVICES[name].get("environment") or {})
    names -= {"GF_SECURITY_ADMIN_PASSWORD"}  # Grafana's own, set from GRAFANA_PASSWORD
    names |= set(re.findall(r"\$\{([A-Z_]+)[:?}-]", (BASE_DIR / "docker-compose.yml").read_text()))
    names |= {"PROMETHEUS_MULTIPROC_DIR", "WEB_CONCURRENCY"}
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, f"README does not document {missing}"
