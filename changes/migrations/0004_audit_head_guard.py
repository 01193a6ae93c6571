"""PostgreSQL: the audit head anchor can only move forward and never be deleted."""
from django.db import migrations

GUARD_SQL = """
CREATE OR REPLACE FUNCTION changes_audithead_forward_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.seq <= OLD.seq THEN
        RAISE EXCEPTION USING MESSAGE = 'the audit head is append-only: ' || TG_OP || ' refused',
            ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER changes_audithead_forward_only
    BEFORE UPDATE OR DELETE ON changes_audithead
    FOR EACH ROW EXECUTE FUNCTION changes_audithead_forward_only();
"""
UNGUARD_SQL = """
DROP TRIGGER IF EXISTS changes_audithead_forward_only ON changes_audithead;
DROP FUNCTION IF EXISTS changes_audithead_forward_only();
"""


def guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD_SQL)


def unguard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNGUARD_SQL)


class Migration(migrations.Migration):
    dependencies = [("changes", "0003_runner_state_and_audit_head")]
    operations = [migrations.RunPython(guard, unguard)]
