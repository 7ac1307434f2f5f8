"""django-ninja's `export_openapi_schema`, listed under [ninja] as before (see k2portal/ninja/__init__.py)."""

from ninja.management.commands.export_openapi_schema import Command

__all__ = ("Command",)
