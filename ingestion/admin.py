from importlib import import_module

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.functional import SimpleLazyObject
from django.utils.html import format_html

from ingestion import admin_display as show
from ingestion.engine.limits import MAX_COMMIT_INTERVAL_MS
from ingestion.models import Consumer, ConsumerRun, SequenceGap, Topic
from k2core.errors import ApplicationError

# The services import the consumer engine (pyiceberg, pyarrow, confluent-kafka: seconds of
# imports); the admin is loaded by every manage.py command, so they are imported at first use.
consumer_services = SimpleLazyObject(lambda: import_module("ingestion.consumer_services"))


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    """Topics and their per-partition watermarks (refreshed by `manage.py refresh_watermarks`)."""

    list_display = ("name", "asset_class", "data_type", "exchange", "partitions", "watermarks_refreshed_at")
    list_filter = ("asset_class", "data_type", "exchange")
    search_fields = ("name",)
    readonly_fields = ("watermarks", "watermarks_refreshed_at", "created_at")

    def get_readonly_fields(self, request, obj=None):  # noqa: ANN001, ANN201
        # an existing topic lives on the broker: editing its name or partitions here would change nothing there
        if obj is not None:
            return ("name", "asset_class", "data_type", "exchange", "partitions", *self.readonly_fields)
        return self.readonly_fields


# --- consumers, runs and sequence gaps (issue #4) -------------------------------------------


class ConsumerRunInline(admin.TabularInline):
    model = ConsumerRun
    extra = 0
    can_delete = False
    readonly_fields = ("started_at", "ended_at", "messages", "batches", "gaps", "dlq", "error", "end_reason")
    max_num = 0
    ordering = ("-started_at",)


@admin.register(Consumer)
class ConsumerAdmin(admin.ModelAdmin):
    """Consumer loops; start/stop call the services (which enqueue or signal the Celery task)."""

    list_display = ("name", "status_badge", "heartbeat", "rows_per_s", "total_lag", "messages_read", "data_type",
                    "subscription", "group_id")
    list_filter = ("status", "data_type")
    search_fields = ("name", "group_id")
    readonly_fields = ("status", "desired_status", "task_id", "worker", "heartbeat", "last_error", "stats_display",
                       "partitions_display", "restart_times", "next_restart_at", "offsets_link", "updated_at")
    change_form_template = "admin/ingestion/consumer/change_form.html"
    CONFIG_FIELDS = ("name", "data_type", "topic", "topic_pattern", "group_id", "batch_size", "max_batch_ms",
                     "min_commit_interval_ms")
    HEARTBEAT_STALE_S = 30

    # --- display (issue 13: lists that fit a laptop, humane stats, lag per partition) ----------
    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Consumer) -> str:
        return format_html('<span class="k2-status k2-status-{}">{}</span>', obj.status, obj.status)

    @admin.display(description="heartbeat", ordering="heartbeat_at")
    def heartbeat(self, obj: Consumer) -> str:
        from django.utils import timezone

        stale = (obj.status == Consumer.Status.RUNNING and obj.heartbeat_at is not None
                 and (timezone.now() - obj.heartbeat_at).total_seconds() > self.HEARTBEAT_STALE_S)
        return format_html('<span class="{}">{}</span>', "k2-stale" if stale else "", show.ago(obj.heartbeat_at))

    @admin.display(description="msgs/s")
    def rows_per_s(self, obj: Consumer) -> str:
        return show.number((obj.stats or {}).get("rate"), 1) if obj.status == Consumer.Status.RUNNING else show.DASH

    @admin.display(description="lag")
    def total_lag(self, obj: Consumer) -> str:
        return show.number((obj.stats or {}).get("lag"))

    @admin.display(description="messages")
    def messages_read(self, obj: Consumer) -> str:
        return show.number((obj.stats or {}).get("messages"))

    @admin.display(description="topic")
    def subscription(self, obj: Consumer) -> str:
        return obj.topic_pattern or (obj.topic.name if obj.topic else show.DASH)

    @admin.display(description="statistics (last report)")
    def stats_display(self, obj: Consumer) -> str:
        return show.stats_table(obj.stats)

    @admin.display(description="lag per partition")
    def partitions_display(self, obj: Consumer) -> str:
        return show.partitions_table(obj.stats)

    def get_fieldsets(self, request, obj=None):  # noqa: ANN001, ANN201
        config = ("Configuration", {"fields": self.CONFIG_FIELDS})
        if obj is None:
            return (config,)
        return (("State", {"fields": ("status", "desired_status", "heartbeat", "task_id", "worker", "last_error",
                                      "stats_display", "partitions_display", "restart_times", "next_restart_at",
                                      "offsets_link", "updated_at")}), config)

    def get_readonly_fields(self, request, obj=None):  # noqa: ANN001, ANN201
        # a running consumer reads its config once at start: edits would do nothing until a restart
        if obj is not None and obj.status != Consumer.Status.STOPPED and obj.status != Consumer.Status.FAILED:
            return (*self.CONFIG_FIELDS, *self.readonly_fields)
        return self.readonly_fields

    def formfield_for_dbfield(self, db_field, request, **kwargs):  # noqa: ANN001, ANN201
        if db_field.name == "min_commit_interval_ms":  # the model's bound, also on the input (the browser says so first)
            kwargs["max_value"] = MAX_COMMIT_INTERVAL_MS
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):  # noqa: ANN001, ANN201
        if db_field.name == "topic":  # dead-letter topics are written by consumers, not consumed into tables
            kwargs["queryset"] = Topic.objects.exclude(name__endswith=".dlq")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # --- Start/Stop buttons on the consumer page (the same services as the actions) ----------
    def get_urls(self) -> list:
        return [path("<int:pk>/start/", self.admin_site.admin_view(self.start_view), name="ingestion_consumer_start"),
                path("<int:pk>/stop/", self.admin_site.admin_view(self.stop_view), name="ingestion_consumer_stop"),
                path("<int:object_id>/reset-offsets/", self.admin_site.admin_view(self.reset_offsets_view),
                     name="ingestion_consumer_reset_offsets"),
                *super().get_urls()]

    def _button(self, request: HttpRequest, pk: int, service, verb: str) -> HttpResponse:  # noqa: ANN001
        back = reverse("admin:ingestion_consumer_change", args=[pk])
        if request.method != "POST" or not self.has_operate_permission(request):
            self.message_user(request, f"{verb.capitalize()} needs a POST from the consumer page by a user who "
                                       "may change consumers.", messages.ERROR)
            return HttpResponseRedirect(back)
        self._apply(request, Consumer.objects.filter(pk=pk), service, verb)
        return HttpResponseRedirect(back)

    def start_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self._button(request, pk, consumer_services.start_consumer, "starting")

    def stop_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self._button(request, pk, consumer_services.stop_consumer, "stopping")
    inlines = (ConsumerRunInline,)
    actions = ("start_selected", "stop_selected", "reset_selected")

    def _apply(self, request, queryset, service, verb: str) -> None:  # noqa: ANN001
        for consumer in queryset:
            before = consumer.status
            try:
                row = service(consumer=consumer)
                self.message_user(request, f"{consumer.name}: {verb}", messages.SUCCESS)
                self.log_change(request, consumer, f"{verb.capitalize()} (was {before}, now {row.status}) from the admin")
            except ApplicationError as exc:  # one refusal does not stop the others
                self.message_user(request, exc.message, messages.ERROR)

    def has_operate_permission(self, request) -> bool:  # noqa: ANN001
        return request.user.has_perm("ingestion.operate_consumer")

    @admin.action(description="Reset selected consumers to stopped (recover a stuck one)", permissions=["operate"])
    def reset_selected(self, request, queryset) -> None:  # noqa: ANN001
        self._apply(request, queryset, consumer_services.reset_consumer, "reset to stopped")

    @admin.display(description="offsets")
    def offsets_link(self, consumer: Consumer) -> str:
        from django.urls import reverse
        from django.utils.html import format_html

        if consumer.pk is None:
            return "-"
        return format_html('<a href="{}">Reset offsets…</a> (only while stopped)',
                           reverse("admin:ingestion_consumer_reset_offsets", args=[consumer.pk]))

    def reset_offsets_view(self, request, object_id: int):  # noqa: ANN201
        from ingestion.admin_offsets import reset_offsets_view

        return reset_offsets_view(self, request, object_id)

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
    readonly_fields = ("consumer", "started_at", "ended_at", "messages", "batches", "gaps", "dlq", "error",
                       "task_id", "worker", "end_reason")

    @admin.display(description="error")
    def short_error(self, run: ConsumerRun) -> str:
        return run.error[:80]


@admin.register(SequenceGap)
class SequenceGapAdmin(admin.ModelAdmin):
    """Sequence gaps (ADR #014): filter by state, data type, exchange and time; search by symbol."""

    list_display = ("symbol", "state", "detected", "data_type", "exchange", "expected_sequence",
                    "received_sequence", "gap_size", "missing_remaining", "partition", "offset")
    list_filter = ("state", "data_type", "exchange", "asset_class", "detected_at")
    search_fields = ("symbol",)
    date_hierarchy = "detected_at"
    actions = ("acknowledge_selected", "export_csv")

    # Gaps are the consumer's record (compliance): read-only here except the acknowledge action.
    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False

    def has_acknowledge_permission(self, request) -> bool:  # noqa: ANN001
        return request.user.has_perm("ingestion.acknowledge_gap")

    @admin.display(description="detected", ordering="detected_at")
    def detected(self, gap: SequenceGap) -> str:
        return show.ago(gap.detected_at)

    @admin.action(description="Export selected gaps as CSV (select all to export the filtered list)")
    def export_csv(self, request, queryset):  # noqa: ANN001, ANN201
        from django.http import HttpResponse

        from ingestion.selectors import gaps_csv

        response = HttpResponse(gaps_csv(queryset.order_by("-detected_at", "-id")), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="sequence_gaps.csv"'
        return response

    def get_urls(self):  # noqa: ANN201
        from django.urls import path

        return [path("export.csv", self.admin_site.admin_view(self.export_filtered_view),
                     name="ingestion_sequencegap_export"), *super().get_urls()]

    def export_filtered_view(self, request):  # noqa: ANN001, ANN201
        """The list as filtered (same query string as the list page: filters, search, date drill-down) as CSV."""
        from django.core.exceptions import PermissionDenied

        if not self.has_view_permission(request):
            raise PermissionDenied
        return self.export_csv(request, self.get_changelist_instance(request).get_queryset(request))

    def changelist_view(self, request, extra_context=None):  # noqa: ANN001, ANN201
        from django.urls import reverse

        query = request.GET.urlencode()
        url = reverse("admin:ingestion_sequencegap_export") + (f"?{query}" if query else "")
        return super().changelist_view(request, {**(extra_context or {}), "k2_export_url": url})

    @admin.action(description="Acknowledge selected gaps (with a note)", permissions=["acknowledge"])
    def acknowledge_selected(self, request, queryset):  # noqa: ANN001, ANN201
        """An intermediate page asks for the note; posting it acknowledges the gaps."""
        from django.template.response import TemplateResponse

        from ingestion.gaps import acknowledge_gaps

        if request.POST.get("confirm"):  # a refusal (no note) is shown by the admin site (k2portal.admin_site)
            pending = list(queryset.exclude(state=SequenceGap.State.ACKNOWLEDGED))
            changed = acknowledge_gaps(gaps=queryset, user=request.user, note=request.POST.get("note", ""))
            note = request.POST.get("note", "").strip()
            for gap in pending:
                self.log_change(request, gap, f"Acknowledged (was {gap.state}): {note}")
            self.message_user(request, f"{changed} gap(s) acknowledged.", messages.SUCCESS)
            return None
        return TemplateResponse(request, "admin/ingestion/sequencegap/acknowledge.html", {
            **self.admin_site.each_context(request), "title": "Acknowledge sequence gaps", "gaps": queryset,
            "opts": self.model._meta, "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME})
    readonly_fields = ("detected_at", "symbol", "exchange", "asset_class", "data_type", "expected_sequence",
                       "received_sequence", "gap_size", "missing_remaining", "filled_sequences", "topic",
                       "partition", "offset", "filled_at", "acknowledged_at", "acknowledged_by")
