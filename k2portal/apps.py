"""The project package as an app (its management commands, e.g. run_summary), the admin app
with K2's site (`k2portal.admin_site.K2AdminSite`), installed in place of django.contrib.admin,
and django-ninja's app without importing ninja at start-up (`NinjaConfig`)."""

from importlib.util import find_spec
from pathlib import Path

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps  # not its AdminConfig by name: that would be a second default here


class K2PortalConfig(AppConfig):
    default = True  # what "k2portal" in INSTALLED_APPS means (this module holds more than one AppConfig)
    name = "k2portal"


class K2AdminConfig(admin_apps.AdminConfig):
    default = False
    default_site = "k2portal.admin_site.K2AdminSite"


class NinjaConfig(AppConfig):
    """django-ninja's templates, static files and command, as `"ninja"` in INSTALLED_APPS gave them,
    without `import ninja` at start-up (k2portal/ninja/__init__.py). `find_spec` locates the
    package without running it."""

    default = False
    name = "k2portal.ninja"  # the last part names the app's section in `manage.py help`: [ninja]
    label = "ninja"
    verbose_name = "Ninja"
    path = str(Path(find_spec("ninja").origin).parent)  # type: ignore[union-attr, arg-type]
