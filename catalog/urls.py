"""Routes of the Confluent-compatible schema registry (mounted at /schema-registry/)."""

from django.urls import path, re_path

from catalog import registry_api as v

urlpatterns = [
    path("", v.root),
    path("subjects", v.subjects),
    path("subjects/<str:subject>/versions", v.subject_versions),
    path("subjects/<str:subject>/versions/<str:version>", v.subject_version),
    path("subjects/<str:subject>/versions/<str:version>/schema", v.subject_version_schema),
    path("subjects/<str:subject>", v.subject_lookup),
    path("schemas/ids/<int:schema_id>", v.schema_by_id),
    path("schemas/ids/<int:schema_id>/schema", v.schema_by_id_raw),
    path("schemas/ids/<int:schema_id>/subjects", v.schema_subjects),
    path("schemas/types", v.schema_types),
    path("compatibility/subjects/<str:subject>/versions/<str:version>", v.compatibility),
    path("compatibility/subjects/<str:subject>/versions", v.compatibility),
    path("config", v.config),
    path("config/<str:subject>", v.config),
    re_path(r"^.*$", v.not_found),  # Confluent's JSON 404, not the portal's HTML page
]
