from django.apps import AppConfig


class IngestionConfig(AppConfig):
    name = "ingestion"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Every process (web, Celery worker and beat, manage.py commands) starts its alerting
        # counters at 0 for the declared exchanges, so a first DLQ message or write failure is
        # an increase Prometheus sees (deploy/prometheus/alerts.yml).
        from ingestion.engine.reasons import POISON_REASONS
        from ingestion.engine.topics import declared_topics
        from k2core import metrics
        from k2core.datatypes import DATA_TYPES

        specs = [s for s in declared_topics() if not s.dlq]
        metrics.initialise_known_series(exchanges=tuple(sorted({s.exchange for s in specs})),
                                        asset_classes=tuple(sorted({s.asset_class for s in specs})),
                                        data_types=DATA_TYPES, dlq_reasons=POISON_REASONS)
