"""Groups `operators` and `analysts` with their permissions (issue 12).

- operators: start/stop/reset consumers, acknowledge gaps, and view everything in K2's apps.
- analysts: view saved queries, gaps, topics, consumers and tables; run saved queries; read market
  data through the API in a session.
Permissions are created here first (Django creates them only after all migrations otherwise).
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

APPS = ("ingestion", "catalog", "queries")
OPERATORS = ["ingestion.operate_consumer", "ingestion.acknowledge_gap"]
ANALYSTS = ["queries.run_savedquery", "queries.read_market_data", "queries.view_savedquery",
            "ingestion.view_sequencegap", "ingestion.view_topic", "ingestion.view_consumer",
            "catalog.view_schemasubject", "catalog.view_avroschema", "catalog.view_subjectversion"]


def _perm(Permission, dotted):  # noqa: ANN001, ANN202, N803
    app_label, codename = dotted.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def forwards(apps, schema_editor):  # noqa: ANN001, ANN201
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")  # noqa: N806
    Permission = apps.get_model("auth", "Permission")  # noqa: N806
    operators, _ = Group.objects.get_or_create(name="operators")
    views = Permission.objects.filter(content_type__app_label__in=APPS, codename__startswith="view_")
    operators.permissions.add(*views, *(_perm(Permission, p) for p in OPERATORS))
    analysts, _ = Group.objects.get_or_create(name="analysts")
    analysts.permissions.add(*(_perm(Permission, p) for p in ANALYSTS))


def backwards(apps, schema_editor):  # noqa: ANN001, ANN201
    apps.get_model("auth", "Group").objects.filter(name__in=["operators", "analysts"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("queries", "0002_permissions"),
        ("ingestion", "0002_permissions"),
        ("catalog", "0002_permissions"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
