"""django-ninja as an installed app, without importing it at start-up (issue #10 item 6).

`INSTALLED_APPS` lists `k2portal.apps.NinjaConfig`: label `ninja`, path ninja's own directory,
so its bundled Swagger UI (templates and static files: /api/v1/docs works offline) and its
`export_openapi_schema` command are there as before, while `import ninja` (pydantic and
django.test, about a quarter of every `manage.py` command's start-up) waits until the API's
URLs load. This package only gives the app a module of its own; the command is ninja's.
"""
