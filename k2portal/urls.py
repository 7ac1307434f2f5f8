from django.contrib import admin
from django.urls import include, path

from k2portal.health import healthz
from k2portal.metrics_view import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("", include("k2portal.api_urls")),
]
