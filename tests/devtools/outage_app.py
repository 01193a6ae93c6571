"""The project's Celery app (config.celery, with its broker-outage guard) plus one task that needs no database."""
from __future__ import annotations

from pathlib import Path

from config.celery import app


@app.task(name="tests.outage.touch")
def touch(path: str) -> None:
    Path(path).write_text("done")
