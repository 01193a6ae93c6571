"""SQL aggregates the read paths use to fetch a user's roles and names with the user, in one query."""
from __future__ import annotations

from typing import Any

from django.db.models import Aggregate, CharField

# Between joined values: a control character no group name or identity alias contains.
SEPARATOR = "\x1f"


class Joined(Aggregate):
    """The values joined by SEPARATOR: STRING_AGG on PostgreSQL, GROUP_CONCAT on SQLite. Duplicates (from a second
    joined relation) may repeat; callers read the result as a set (``split``)."""

    function = "STRING_AGG"
    template = f"%(function)s(%(expressions)s, '{SEPARATOR}')"
    output_field = CharField()

    def as_sqlite(self, compiler, connection, **extra_context):  # noqa: ANN001, ANN201 - Django's signature
        return super().as_sql(compiler, connection, function="GROUP_CONCAT", **extra_context)


def split(joined: Any) -> set[str]:
    """The distinct non-empty values of a ``Joined`` annotation (None when nothing was joined)."""
    return {value for value in (joined or "").split(SEPARATOR) if value}
