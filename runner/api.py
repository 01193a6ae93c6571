"""``POST /api/v1/changes/{id}/dry-run/``: a thin view over ``runner.dry_run.change_dry_run``.

The service decides who may dry-run (403) and raises PlanUnavailable (422); the exception handler maps them. A
server that cannot be reached answers 503 (502 when it answered but remoting failed), never 500.
"""
from __future__ import annotations

import logging
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from changes.api.permissions import HasAnyRole
from changes.api.schema import ERROR_REF
from changes.api.serializers import IssueSerializer
from changes.selectors import change_list

from .dry_run import change_dry_run
from .exchange.session import ExchangeSessionError

log = logging.getLogger(__name__)


class PlanStepSerializer(serializers.Serializer):
    """A step of the plan that would run (runner.plans.describe)."""

    key = serializers.CharField()
    phase = serializers.ChoiceField(["precheck", "enter", "work", "exit", "verify"])
    title = serializers.CharField()
    mutating = serializers.BooleanField()
    idempotent = serializers.BooleanField()
    skippable = serializers.BooleanField()
    gate = serializers.BooleanField()


class PlanSerializer(serializers.Serializer):
    name = serializers.CharField()
    variant = serializers.CharField(allow_blank=True)
    steps = PlanStepSerializer(many=True)


class PrecheckSerializer(serializers.Serializer):
    """A read-only pre-check as it ran against a server."""

    server = serializers.CharField()
    key = serializers.CharField()
    title = serializers.CharField()
    gate = serializers.BooleanField()
    status = serializers.CharField()
    summary = serializers.CharField(allow_blank=True)
    findings = serializers.DictField(help_text="Structured results; keys depend on the check")
    issues = IssueSerializer(many=True)
    error = serializers.CharField(allow_blank=True)


class DryRunSerializer(serializers.Serializer):
    plan = PlanSerializer(allow_null=True, help_text="The plan of the first server (by name)")
    prechecks = PrecheckSerializer(many=True)
    plans = serializers.DictField(child=PlanSerializer(), required=False,
                                  help_text="Multi-server changes only: each server's plan, by server name")


class DryRunView(APIView):
    """Run the change's read-only pre-checks against its server(s) and return the plan that would run."""

    permission_classes = [HasAnyRole]
    # Seams for tests (the simulator in-process); production uses the inventory and runner.plans.
    sessions_factory: Any = None
    plan_builder: Any = None

    @extend_schema(
        request=None,
        responses={200: DryRunSerializer,
                   502: OpenApiResponse(ERROR_REF, description="The server answered but remoting failed"),
                   503: OpenApiResponse(ERROR_REF, description="The server (or the database) is unreachable")},
    )
    def post(self, request: Request, pk: str) -> Response:
        change = get_object_or_404(change_list(request.user), pk=pk)
        try:
            body = change_dry_run(change, actor=request.user, sessions_factory=type(self).sessions_factory,
                                  plan_builder=type(self).plan_builder)
        except ExchangeSessionError as exc:
            # 503 when the server could not be reached (worth trying again), 502 when it answered but the remoting
            # session failed (credentials, configuration).
            code = status.HTTP_503_SERVICE_UNAVAILABLE if exc.retryable else status.HTTP_502_BAD_GATEWAY
            log.warning("dry run of %s: %s: %s", change.number, type(exc).__name__, exc)
            return Response({"code": "server_unreachable" if exc.retryable else "remoting_failed",
                             "detail": f"{type(exc).__name__}: {exc}"}, status=code)
        return Response(body)
