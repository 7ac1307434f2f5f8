from django.apps import AppConfig


class QueriesConfig(AppConfig):
    name = "queries"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save

        from catalog.models import Exchange
        from queries.caches import exchanges_changed, keys_changed
        from queries.models import ApiKey

        # The API caches key rows briefly (queries.caches): any change to a key
        # or a user (revoked, deactivated, scopes or limit edited, deleted) drops them at once.
        for model in (ApiKey, get_user_model()):
            post_save.connect(keys_changed, sender=model, dispatch_uid=f"k2-api-keys-{model._meta.label}")
            post_delete.connect(keys_changed, sender=model, dispatch_uid=f"k2-api-keys-del-{model._meta.label}")
        # Likewise the exchange registry each request reads (queries.caches.EXCHANGES_CACHE_SECONDS).
        post_save.connect(exchanges_changed, sender=Exchange, dispatch_uid="k2-exchanges")
        post_delete.connect(exchanges_changed, sender=Exchange, dispatch_uid="k2-exchanges-del")
