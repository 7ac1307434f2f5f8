from django.contrib import admin

from ingestion.models import Topic


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    """Topics and their per-partition watermarks (refreshed by `manage.py refresh_watermarks`)."""

    list_display = ("name", "asset_class", "data_type", "exchange", "partitions", "watermarks_refreshed_at")
    list_filter = ("asset_class", "data_type", "exchange")
    search_fields = ("name",)
    readonly_fields = ("watermarks", "watermarks_refreshed_at", "created_at")
