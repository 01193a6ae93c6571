"""Included by config/urls.py under api/v1/, before the changes router."""
from __future__ import annotations

from django.urls import path

from . import api

urlpatterns = [
    path("changes/<int:pk>/deliveries/", api.change_deliveries, name="change-deliveries"),
    path("calendar.ics", api.calendar_feed, name="calendar-feed"),
    path("calendar/key/", api.calendar_key, name="calendar-key"),
]
