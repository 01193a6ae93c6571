from __future__ import annotations

from django.db import models


class Note(models.Model):
    """About the size of a change request's text fields, and nothing else."""

    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "bare"

    def __str__(self) -> str:
        return self.title
