"""Re-encrypt every stored secret with the newest FIELD_ENCRYPTION_KEY (the first of the list)."""
from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction

from changes import audit, crypto


def encrypted_columns() -> list[tuple[type[models.Model], str]]:
    """Every ``*_encrypted`` text field of every installed model (the convention in changes/crypto.py)."""
    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, models.TextField) and field.name.endswith(crypto.ENCRYPTED_SUFFIX)
    ]


class Command(BaseCommand):
    help = ("Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEY. Rotation: put the new key "
            "first (NEW,OLD), run this, then remove OLD.")

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--dry-run", action="store_true", help="Check that every secret decrypts; change nothing.")

    def handle(self, *args, dry_run: bool = False, **options) -> None:
        counts: dict[str, int] = {}
        unreadable: list[str] = []
        # One transaction: either every secret is re-encrypted or none is (old keys stay needed until it succeeds).
        with transaction.atomic():
            for model, field in encrypted_columns():
                label = f"{model._meta.label}.{field}"
                counts[label] = 0
                rows = model.objects.select_for_update().exclude(**{field: ""}).values_list("pk", field)
                for pk, token in rows.iterator():
                    try:
                        rotated = crypto.rotate(token)
                    except ValueError:
                        unreadable.append(f"{label} pk={pk}")
                        continue
                    if not dry_run:
                        model.objects.filter(pk=pk).update(**{field: rotated})
                    counts[label] += 1
            if unreadable:
                raise CommandError(f"{len(unreadable)} secret(s) no configured key opens, nothing changed: "
                                   + ", ".join(unreadable[:20]))
            if not dry_run:
                audit.append(actor="system:rotate_secrets", action="secrets.rotated", object_type="system",
                             object_id="field_encryption_key", changes={k: [None, v] for k, v in counts.items()})
        verb = "readable" if dry_run else "re-encrypted with the newest key"
        for label, count in counts.items():
            self.stdout.write(f"{label}: {count} {verb}")
        self.stdout.write(f"{sum(counts.values())} secret(s) {verb}")
