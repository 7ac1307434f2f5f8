from django.contrib import admin

from catalog.models import AvroSchema, Exchange, SchemaSubject, SubjectVersion


class SubjectVersionInline(admin.TabularInline):
    model = SubjectVersion
    extra = 0
    can_delete = False
    readonly_fields = ("version", "schema", "registered_at")


@admin.register(SchemaSubject)
class SchemaSubjectAdmin(admin.ModelAdmin):
    """Schema subjects of the embedded registry, with their versions (read-only: register through the API)."""

    list_display = ("name", "compatibility", "created_at")
    search_fields = ("name",)
    inlines = [SubjectVersionInline]


@admin.register(AvroSchema)
class AvroSchemaAdmin(admin.ModelAdmin):
    list_display = ("id", "fingerprint", "created_at")
    readonly_fields = ("schema", "fingerprint", "created_at")


@admin.register(SubjectVersion)
class SubjectVersionAdmin(admin.ModelAdmin):
    list_display = ("subject", "version", "schema", "registered_at")
    list_filter = ("subject",)
    readonly_fields = ("subject", "version", "schema", "registered_at")


@admin.register(Exchange)
class ExchangeAdmin(admin.ModelAdmin):
    """The exchange registry: time zone (CSV timestamps without an offset, API dates, 1d bars) and session times."""

    list_display = ("code", "name", "timezone", "session_open", "session_close", "weekend_days")
    search_fields = ("code", "name")
