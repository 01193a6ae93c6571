"""Role groups with their admin permissions, and (PostgreSQL) a trigger that refuses UPDATE/DELETE of audit rows."""
from django.db import migrations

ROLE_PERMISSIONS = {
    "requester": ["view_change"],
    "approver": ["view_change", "change_change", "view_approval", "view_steprun", "view_server", "view_freezewindow",
                 "add_freezewindow", "change_freezewindow"],
    "operator": ["view_change", "change_change", "view_approval", "view_steprun", "view_server", "add_server",
                 "change_server", "view_freezewindow", "add_freezewindow", "change_freezewindow", "view_auditevent"],
    "auditor": ["view_change", "view_approval", "view_steprun", "view_server", "view_freezewindow",
                "view_auditevent"],
}

GUARD_SQL = """
CREATE OR REPLACE FUNCTION changes_auditevent_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = 'audit events are append-only: ' || TG_OP || ' refused',
        ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER changes_auditevent_append_only
    BEFORE UPDATE OR DELETE ON changes_auditevent
    FOR EACH ROW EXECUTE FUNCTION changes_auditevent_refuse_change();
"""
UNGUARD_SQL = """
DROP TRIGGER IF EXISTS changes_auditevent_append_only ON changes_auditevent;
DROP FUNCTION IF EXISTS changes_auditevent_refuse_change();
"""


def create_roles(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(Permission.objects.filter(content_type__app_label="changes", codename__in=codenames))


def guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD_SQL)


def unguard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNGUARD_SQL)


class Migration(migrations.Migration):
    dependencies = [
        ("changes", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.RunPython(guard, unguard),
    ]
