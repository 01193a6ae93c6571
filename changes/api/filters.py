"""Query filters for the change list."""
from __future__ import annotations

from datetime import datetime

import django_filters
from django import forms

from changes.api.serializers import parse_aware
from changes.models import Change
from changes.states import State


class AwareDateTimeFormField(forms.CharField):
    def to_python(self, value: str | None) -> datetime | None:
        if value in (None, ""):
            return None
        try:
            return parse_aware(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class AwareDateTimeFilter(django_filters.Filter):
    """Like IsoDateTimeFilter, but naive times and absurd years are a 400 rather than a guess or an overflow."""

    field_class = AwareDateTimeFormField


class ChangeFilter(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=State.choices)
    server = django_filters.CharFilter(field_name="servers__name", lookup_expr="iexact", distinct=True)
    source = django_filters.CharFilter()
    external_ref = django_filters.CharFilter()
    window_after = AwareDateTimeFilter(field_name="window_end", lookup_expr="gte", label="windows ending at or after")
    window_before = AwareDateTimeFilter(field_name="window_start", lookup_expr="lte",
                                        label="windows starting at or before")

    class Meta:
        model = Change
        fields = ["state", "server", "source", "external_ref", "window_after", "window_before"]
