from __future__ import annotations

from django.urls import path
from rest_framework import generics, serializers

from benchmarks.bare.models import Note
from config.urls import handler400, handler404, handler500  # noqa: F401 - re-exported
from config.urls import urlpatterns as service_urls


class NoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Note
        fields = ["id", "title", "body", "created_at"]


class NoteCreate(generics.CreateAPIView):
    """DRF's own create: the project's authentication and permission defaults, a ModelSerializer, one INSERT."""

    serializer_class = NoteSerializer


urlpatterns = [path("bench/notes/", NoteCreate.as_view()), *service_urls]
