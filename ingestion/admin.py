from django.contrib import admin, messages

from ingestion import consumer_services
from ingestion.models import Consumer, ConsumerRun, SequenceGap, Topic


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    """Topics and their per-partition watermarks (refreshed by `manage.py refresh_watermarks`)."""

    list_display = ("name", "asset_class", "data_type", "exchange", "partitions", "watermarks_refreshed_at")
    list_filter = ("asset_class", "data_type", "exchange")
    search_fields = ("name",)
    readonly_fields = ("watermarks", "watermarks_refreshed_at", "created_at")


# --- consumers, runs and sequence gaps (issue #4) -------------------------------------------


class ConsumerRunInline(admin.TabularInline):
    model = ConsumerRun
    extra = 0
    can_delete = False
    readonly_fields = ("started_at", "ended_at", "messages", "batches", "gaps", "dlq", "error")
    max_num = 0
    ordering = ("-started_at",)


@admin.register(Consumer)
class ConsumerAdmin(admin.ModelAdmin):
    """Consumer loops; start/stop call the services (which enqueue or signal the Celery task)."""

    list_display = ("name", "data_type", "topic", "topic_pattern", "group_id", "status", "heartbeat_at", "updated_at")
    list_filter = ("status", "data_type")
    search_fields = ("name", "group_id")
    readonly_fields = ("status", "task_id", "heartbeat_at", "last_error", "stats", "updated_at")
    inlines = (ConsumerRunInline,)
    actions = ("start_selected", "stop_selected")

    def _apply(self, request, queryset, service, verb: str) -> None:  # noqa: ANN001
        for consumer in queryset:
            try:
                service(consumer=consumer)
                self.message_user(request, f"{consumer.name}: {verb}", messages.SUCCESS)
            except consumer_services.ConsumerTransitionError as exc:
                self.message_user(request, str(exc), messages.ERROR)

    def has_operate_permission(self, request) -> bool:  # noqa: ANN001
        return request.user.has_perm("ingestion.operate_consumer")

    @admin.action(description="Start selected consumers", permissions=["operate"])
    def start_selected(self, request, queryset) -> None:  # noqa: ANN001
        self._apply(request, queryset, consumer_services.start_consumer, "starting")

    @admin.action(description="Stop selected consumers", permissions=["operate"])
    def stop_selected(self, request, queryset) -> None:  # noqa: ANN001
        self._apply(request, queryset, consumer_services.stop_consumer, "stopping")


@admin.register(ConsumerRun)
class ConsumerRunAdmin(admin.ModelAdmin):
    list_display = ("consumer", "started_at", "ended_at", "messages", "batches", "gaps", "dlq", "short_error")
    list_filter = ("consumer",)
    date_hierarchy = "started_at"
    readonly_fields = ("consumer", "started_at", "ended_at", "messages", "batches", "gaps", "dlq", "error")

    @admin.display(description="error")
    def short_error(self, run: ConsumerRun) -> str:
        return run.error[:80]


@admin.register(SequenceGap)
class SequenceGapAdmin(admin.ModelAdmin):
    """Sequence gaps (ADR #014): filter by state, data type, exchange and time; search by symbol."""

    list_display = ("detected_at", "symbol", "exchange", "asset_class", "data_type", "expected_sequence",
                    "received_sequence", "gap_size", "missing_remaining", "state", "topic", "partition", "offset")
    list_filter = ("state", "data_type", "exchange", "asset_class", "detected_at")
    search_fields = ("symbol",)
    date_hierarchy = "detected_at"
    actions = ("acknowledge_selected",)

    def has_acknowledge_permission(self, request) -> bool:  # noqa: ANN001
        return request.user.has_perm("ingestion.acknowledge_gap")

    @admin.action(description="Acknowledge selected gaps (with a note)", permissions=["acknowledge"])
    def acknowledge_selected(self, request, queryset):  # noqa: ANN001, ANN201
        """An intermediate page asks for the note; posting it acknowledges the gaps."""
        from django.template.response import TemplateResponse

        from ingestion.gaps import GapAcknowledgeError, acknowledge_gaps

        if request.POST.get("confirm"):
            try:
                changed = acknowledge_gaps(gaps=queryset, user=request.user, note=request.POST.get("note", ""))
            except GapAcknowledgeError as exc:
                self.message_user(request, f"Nothing acknowledged: {exc}.", messages.ERROR)
            else:
                self.message_user(request, f"{changed} gap(s) acknowledged.", messages.SUCCESS)
            return None
        return TemplateResponse(request, "admin/ingestion/sequencegap/acknowledge.html", {
            **self.admin_site.each_context(request), "title": "Acknowledge sequence gaps", "gaps": queryset,
            "opts": self.model._meta, "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME})
    readonly_fields = ("detected_at", "symbol", "exchange", "asset_class", "data_type", "expected_sequence",
                       "received_sequence", "gap_size", "missing_remaining", "filled_sequences", "topic",
                       "partition", "offset", "filled_at", "acknowledged_at", "acknowledged_by")
