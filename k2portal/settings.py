"""K2 portal settings: one module, every value read from the environment via `k2portal.config`."""

from __future__ import annotations

import secrets
import sys

import dj_database_url

from k2portal.config import BASE_DIR, ConfigError, load

try:
    K2 = load()
except ConfigError as exc:  # a bad value stops start-up with a message, not a traceback
    sys.stderr.write(f"K2 configuration error: {exc}\n")
    raise SystemExit(2) from None


def _secret_key() -> str:
    if K2.secret_key:
        return K2.secret_key
    # Local default: one random key kept under var/ so sessions survive restarts.
    path = BASE_DIR / "var" / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = K2.debug
ALLOWED_HOSTS = K2.allowed_hosts  # the test client's "testserver" is added by Django's test set-up

INSTALLED_APPS = [
    "k2portal.apps.K2AdminConfig",  # django.contrib.admin with K2's site (application errors → messages)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "k2portal.apps.NinjaConfig",  # django-ninja's bundled Swagger UI (/api/v1/docs offline), not imported at start-up
    "ingestion",
    "catalog",
    "queries",
    "k2portal",  # the project package: management commands that join the apps (run_summary)
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "k2portal.middleware.CorrelationIdMiddleware",
    "k2portal.middleware.ApiJsonErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files under gunicorn (collected at image build)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "k2portal.urls"
WSGI_APPLICATION = "k2portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": dj_database_url.parse(K2.database_url, conn_max_age=60)}
DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"

CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": K2.redis_url}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-au"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]  # vendored front-end libraries (static/vendor/*, with their licences)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Celery: broker and result backend are Redis. Tasks carry the caller's correlation id.
CELERY_BROKER_URL = K2.redis_url
CELERY_RESULT_BACKEND = K2.redis_url
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "maintain-iceberg-tables": {
        "task": "catalog.maintain_tables",
        "schedule": K2.maintenance_interval_minutes * 60.0,
    },
    "reconcile-consumers": {  # self-healing: dead consumer tasks marked failed and restarted
        "task": "ingestion.reconcile_consumers",
        "schedule": 5.0,
    },
    "refresh-topic-watermarks": {
        "task": "ingestion.refresh_watermarks",
        "schedule": 60.0,
    },
}
K2_API_KEY_SCOPES = "queries.services.api_key_scopes"  # the schema registry's write check (catalog.registry_api)
K2_STREAM_TAIL = "ingestion.selectors.stream_tail"  # fresh reads for the query API (queries.selectors.get_engine)
K2_CELERY_APP = "k2portal.celery.app"  # imported by Django code before it sends a task (k2portal/__init__.py)
K2_CONSUMER_QUEUE = "consumers"  # the Celery queue of consumer tasks (the `consumers` worker of the Procfile)

PROMETHEUS_EXPORT_MIGRATIONS = False

from k2core.logging import configure as _configure_logging  # noqa: E402

LOGGING_CONFIG = None
_configure_logging(json_output=K2.log_json, level=K2.log_level)
