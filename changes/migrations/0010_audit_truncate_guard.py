"""PostgreSQL: TRUNCATE of the audit tables is refused too (issue 13 D1). The row triggers of 0002/0004 refuse
UPDATE and DELETE, but TRUNCATE fires no row trigger: it emptied the trail and verify_audit still passed. Together
with the runtime role that has no TRUNCATE/DELETE/ALTER on these tables (manage.py db_runtime_role), the trail can
only be emptied by the tables' owner disabling the trigger on purpose."""
from django.db import migrations

AUDIT_TABLES = ("changes_auditevent", "changes_audithead")

GUARD_SQL = """
CREATE OR REPLACE FUNCTION changes_audit_refuse_truncate() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = 'audit tables are append-only: TRUNCATE of ' || TG_TABLE_NAME || ' refused',
        ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
""" + "".join(f"""
CREATE TRIGGER {table}_no_truncate
    BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION changes_audit_refuse_truncate();
""" for table in AUDIT_TABLES)

UNGUARD_SQL = "".join(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};\n" for table in AUDIT_TABLES) + \
    "DROP FUNCTION IF EXISTS changes_audit_refuse_truncate();\n"


def guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD_SQL)


def unguard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNGUARD_SQL)


class Migration(migrations.Migration):
    dependencies = [("changes", "0009_server_name_validator")]
    operations = [migrations.RunPython(guard, unguard)]
