"""The project package as an app (its management commands, e.g. run_summary) and the admin app
with K2's site (`k2portal.admin_site.K2AdminSite`), installed in place of django.contrib.admin."""

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps  # not its AdminConfig by name: that would be a second default here


class K2PortalConfig(AppConfig):
    default = True  # what "k2portal" in INSTALLED_APPS means (this module holds more than one AppConfig)
    name = "k2portal"


class K2AdminConfig(admin_apps.AdminConfig):
    default = False
    default_site = "k2portal.admin_site.K2AdminSite"
