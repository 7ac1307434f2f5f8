"""URL wiring of the JSON API (/api/v1) and the Confluent-compatible schema registry."""

from django.urls import include, path

from k2portal.api import api

urlpatterns = [
    path("api/v1/", api.urls),
    path("schema-registry/", include("catalog.urls")),
]
