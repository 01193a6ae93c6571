"""Print (or apply) the PostgreSQL grants of the runtime role: the role web, worker and beat connect as.

Two roles (docs/database-roles.md): the migration role owns the tables and runs `migrate`; the runtime role may read
and write the data but may not TRUNCATE, ALTER or DELETE the audit trail, nor UPDATE its events. Run this as the
owner after every `migrate` (docker-compose's migrate job does), so tables added by new migrations are covered."""
from __future__ import annotations

import os
import re

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from changes.models import AuditEvent, AuditHead

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def runtime_role_sql(role: str, *, database: str, schema: str = "public") -> list[str]:
    """The statements, in order; idempotent (safe to run after every migration)."""
    if not _NAME.match(role) or not _NAME.match(schema):
        raise ValueError("role and schema must be lower-case SQL identifiers")
    event, head = AuditEvent._meta.db_table, AuditHead._meta.db_table
    db = '"' + database.replace('"', '""') + '"'
    return [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
        f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; END IF; END $$",
        # Nothing beyond what the grants below give: no new tables, no ownership, no superuser (which bypasses all).
        f"ALTER ROLE {role} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
        f"GRANT CONNECT ON DATABASE {db} TO {role}",
        f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC",
        f"REVOKE ALL ON SCHEMA {schema} FROM {role}",
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        # The audit trail: events are appended, the head anchor moves forward; nothing is removed.
        f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {event} FROM {role}",
        f"REVOKE DELETE, TRUNCATE, REFERENCES, TRIGGER ON {head} FROM {role}",
    ]


class Command(BaseCommand):
    help = "Print, or with --apply run as the tables' owner, the grants of the PostgreSQL runtime role."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--role", default=os.environ.get("EXMAINT_RUNTIME_DB_ROLE", "exmaint_app"))
        parser.add_argument("--apply", action="store_true", help="Run the statements on the configured database.")
        parser.add_argument("--password-env", metavar="VAR",
                            help="With --apply: set the role's password from this environment variable.")

    def handle(self, *args, role: str, apply: bool, password_env: str | None, **options) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("the runtime role is a PostgreSQL feature (this database is "
                               f"{connection.vendor})")
        try:
            statements = runtime_role_sql(role, database=connection.settings_dict["NAME"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not apply:
            self.stdout.write(";\n".join(statements) + ";")
            return
        password = os.environ.get(password_env, "") if password_env else ""
        if password_env and not password:
            raise CommandError(f"{password_env} is empty")
        with transaction.atomic(), connection.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
            if password:
                # Client-side binding: the password is quoted as a literal, never logged.
                cur.execute(f"ALTER ROLE {role} PASSWORD %s", [password])
        self.stdout.write(f"runtime role {role}: grants applied")
