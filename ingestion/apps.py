from django.apps import AppConfig


class IngestionConfig(AppConfig):
    name = "ingestion"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Every process (web, Celery worker and beat, manage.py commands) starts its alerting
        # counters at 0 for the declared exchanges, so a first DLQ message or write failure is
        # an increase Prometheus sees (deploy/prometheus/alerts.yml).
        from ingestion.engine.reasons import POISON_REASONS
        from ingestion.engine.topics import DECLARED_ASSET_CLASSES, DECLARED_EXCHANGES
        from k2core import metrics
        from k2core.datatypes import DATA_TYPES

        metrics.initialise_known_series(exchanges=tuple(sorted(DECLARED_EXCHANGES)),
                                        asset_classes=tuple(sorted(DECLARED_ASSET_CLASSES)),
                                        data_types=DATA_TYPES, dlq_reasons=POISON_REASONS)
