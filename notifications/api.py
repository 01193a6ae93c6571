"""Thin views: the deliveries of a change, the calendar feed and its secret URL."""
from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from changes.api.permissions import HasAnyRole
from changes.roles import Role, has_role
from changes.selectors import change_list

from . import conf, ical
from .models import Delivery
from .selectors import calendar_changes, calendar_freezes, calendar_key_rotate, calendar_user, delivery_list


class DeliverySerializer(serializers.ModelSerializer):
    target = serializers.SerializerMethodField()
    batches_total = serializers.IntegerField(read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "channel", "kind", "status", "target", "recipients_count", "batches_sent", "batches_total",
                  "batch_in_flight", "attempts", "not_before", "next_attempt_at", "first_attempt_at", "sent_at",
                  "last_error", "response_status", "message_id", "created_at"]
        read_only_fields = fields

    def get_target(self, obj: Delivery) -> str:
        # Callbacks name their URL; e-mail only counts (affected mailbox addresses are not everyone's business).
        return obj.payload.get("url", "") if obj.channel == Delivery.Channel.CALLBACK else ""


@extend_schema(responses=DeliverySerializer(many=True))
@api_view(["GET"])
@permission_classes([HasAnyRole])
def change_deliveries(request: Request, pk: int) -> Response:
    """Callbacks and e-mails of a change with their attempts and status; visible to whoever sees the change."""
    change = get_object_or_404(change_list(request.user), pk=pk)
    return Response(DeliverySerializer(delivery_list(change), many=True).data)


# The ?key= access is the calendarKey security scheme (config/settings.py), an alternative to the token.
@extend_schema(auth=[{"tokenAuth": []}, {"calendarKey": []}],
               responses={(200, "text/calendar"): OpenApiResponse(OpenApiTypes.STR, description="iCalendar feed")})
@api_view(["GET"])
@permission_classes([])
def calendar_feed(request: Request) -> HttpResponse:
    """Maintenance windows (scheduled, running, awaiting re-approval, ended in the last CALENDAR_PAST_DAYS) and
    freeze windows as iCalendar, for subscription (Outlook, …): authenticated by token or by the per-user secret
    ``?key=``."""
    user = request.user if request.user and request.user.is_authenticated else None
    key = request.query_params.get("key", "")
    if key:
        user = calendar_user(key)
    if user is None or not has_role(user, *Role.values):
        raise NotAuthenticated("a token or a valid calendar key is required")
    body = ical.feed(calendar_changes(user), calendar_freezes(), stamp=timezone.now())
    response = HttpResponse(body, content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = 'inline; filename="exmaint.ics"'
    response["Cache-Control"] = "private, max-age=300"
    return response


@extend_schema(request=None, responses={201: inline_serializer("CalendarKey", {"url": serializers.CharField()})})
@api_view(["POST"])
@permission_classes([HasAnyRole])
def calendar_key(request: Request) -> Response:
    """Make (or replace) the caller's secret feed URL; shown once. The previous URL stops working."""
    key = calendar_key_rotate(request.user)
    return Response({"url": f"{conf.public_url()}/api/v1/calendar.ics?key={key}"}, status=201)
