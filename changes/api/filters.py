"""Query filters for the change list."""
from __future__ import annotations

import django_filters

from changes.models import Change
from changes.states import State


class ChangeFilter(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=State.choices)
    server = django_filters.CharFilter(field_name="servers__name", lookup_expr="iexact", distinct=True)
    source = django_filters.CharFilter()
    external_ref = django_filters.CharFilter()
    window_after = django_filters.IsoDateTimeFilter(field_name="window_end", lookup_expr="gte",
                                                    label="windows ending at or after")
    window_before = django_filters.IsoDateTimeFilter(field_name="window_start", lookup_expr="lte",
                                                     label="windows starting at or before")

    class Meta:
        model = Change
        fields = ["state", "server", "source", "external_ref", "window_after", "window_before"]
