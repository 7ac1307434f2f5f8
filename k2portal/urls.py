from django.contrib import admin
from django.urls import include, path

from catalog.admin_tables import iceberg_tables_view
from k2portal.dashboard import dashboard_index
from k2portal.health import healthz
from k2portal.metrics_view import metrics

admin.site.site_header = "K2 operations portal"
admin.site.site_title = "K2"
admin.site.index_title = "Market-data lakehouse: consumers, gaps, topics, schemas, saved queries"

urlpatterns = [
    path("admin/catalog/iceberg-tables/", admin.site.admin_view(iceberg_tables_view), name="iceberg-tables"),
    path("admin/", admin.site.admin_view(dashboard_index), name="k2-dashboard"),  # the admin's index, with the dashboard
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("", include("k2portal.api_urls")),
]
