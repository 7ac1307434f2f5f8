"""The admin app with K2's site (`k2portal.admin_site.K2AdminSite`), installed in place of django.contrib.admin."""

from django.contrib.admin.apps import AdminConfig


class K2AdminConfig(AdminConfig):
    default_site = "k2portal.admin_site.K2AdminSite"
