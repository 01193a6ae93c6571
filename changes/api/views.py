"""Thin views: parse, call the service, return."""
from __future__ import annotations

from django.db import connection
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from changes import audit, run_services, services
from changes.models import FreezeWindow, Role, Server
from changes.roles import has_role
from changes.selectors import audit_events_for, change_list, prime_new_change

from .filters import ChangeFilter
from .permissions import HasAnyRole, ReadAnyRoleWriteOperator, ReadAnyRoleWriteOperatorOrApprover
from .schema import DATE_TIME_PATTERN
from .serializers import (
    AuditEventSerializer,
    AuditVerifySerializer,
    ChangeCreateSerializer,
    ChangeDetailSerializer,
    ChangeSerializer,
    ChangeUpdateSerializer,
    CloseSerializer,
    CommentSerializer,
    FreezeWindowSerializer,
    ReasonSerializer,
    ResumeSerializer,
    ServerSerializer,
    StartSerializer,
    StepRunSerializer,
    WorkDoneSerializer,
)


def _parse(serializer_class: type, request: Request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class ChangeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Change requests: created by ITSM integrations, decided by approvers, run by operators."""

    permission_classes = [HasAnyRole]
    filterset_class = ChangeFilter
    serializer_class = ChangeSerializer

    def get_queryset(self):  # noqa: ANN201
        return change_list(self.request.user).order_by("-id")

    def get_serializer_class(self) -> type:
        return ChangeDetailSerializer if self.action == "retrieve" else ChangeSerializer

    # The filters' date-times carry the same bounds as the bodies' (changes.api.filters.AwareDateTimeFilter).
    @extend_schema(parameters=[
        OpenApiParameter(name, OpenApiTypes.DATETIME, pattern=DATE_TIME_PATTERN,
                         description=f"{label}; ISO 8601 with a UTC offset, year 2000 to 2100")
        for name, label in (("window_after", "windows ending at or after"),
                            ("window_before", "windows starting at or before"))
    ])
    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().list(request, *args, **kwargs)

    def _respond(self, change, code: int = status.HTTP_200_OK) -> Response:  # noqa: ANN001
        change = get_object_or_404(self.get_queryset(), pk=change.pk)
        return Response(ChangeDetailSerializer(change).data, status=code)

    @extend_schema(request=ChangeCreateSerializer, responses={201: ChangeDetailSerializer, 200: ChangeDetailSerializer})
    def create(self, request: Request) -> Response:
        change, created = services.change_create(actor=request.user, data=_parse(ChangeCreateSerializer, request))
        if created:  # the request wrote all there is to show: no read-back
            return Response(ChangeDetailSerializer(prime_new_change(change)).data, status=status.HTTP_201_CREATED)
        return self._respond(change)

    @extend_schema(request=ChangeUpdateSerializer, responses=ChangeDetailSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        data = _parse(ChangeUpdateSerializer, request)
        reason = data.pop("reason", "")
        change = services.change_update(self.get_object(), actor=request.user, data=data, reason=reason)
        return self._respond(change)

    @extend_schema(request=CommentSerializer, responses=ChangeDetailSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        data = _parse(CommentSerializer, request)
        return self._respond(services.change_approve(self.get_object(), actor=request.user, **data))

    @extend_schema(request=CommentSerializer, responses=ChangeDetailSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str | None = None) -> Response:
        data = _parse(CommentSerializer, request)
        return self._respond(services.change_reject(self.get_object(), actor=request.user, **data))

    @extend_schema(request=ReasonSerializer, responses=ChangeDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        data = _parse(ReasonSerializer, request)
        return self._respond(services.change_cancel(self.get_object(), actor=request.user, **data))

    @extend_schema(request=StartSerializer, responses=ChangeDetailSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        """Start a scheduled window now that it is open (the scheduler does it at window_start anyway)."""
        options = _parse(StartSerializer, request) if request.data else {}
        return self._respond(run_services.change_start(self.get_object(), actor=request.user, options=options))

    @extend_schema(request=ResumeSerializer, responses=ChangeDetailSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        """An operator's decision on a paused window: retry, skip or abort, with a reason."""
        data = _parse(ResumeSerializer, request)
        return self._respond(run_services.change_resume(self.get_object(), actor=request.user, **data))

    @extend_schema(request=WorkDoneSerializer, responses=ChangeDetailSerializer)
    @action(detail=True, methods=["post"], url_path="work-done")
    def work_done(self, request: Request, pk: str | None = None) -> Response:
        """The operator reports the work done; the exit runs next."""
        data = _parse(WorkDoneSerializer, request)
        return self._respond(run_services.change_work_done(self.get_object(), actor=request.user, **data))

    @extend_schema(request=CloseSerializer, responses=ChangeDetailSerializer)
    @action(detail=True, methods=["post"])
    def close(self, request: Request, pk: str | None = None) -> Response:
        data = _parse(CloseSerializer, request)
        return self._respond(services.change_close(self.get_object(), actor=request.user, **data))

    # A bare array of every step, in order: no paging, and none of the change list's filters.
    @extend_schema(responses=StepRunSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def steps(self, request: Request, pk: str | None = None) -> Response:
        steps = self.get_object().steps.select_related("server", "decided_by").order_by("order")
        return Response(StepRunSerializer(steps, many=True).data)

    # Paged (limit/offset), but none of the change list's filters.
    @extend_schema(responses=AuditEventSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def audit(self, request: Request, pk: str | None = None) -> Response:
        events = audit_events_for(self.get_object())
        page = self.paginate_queryset(events)
        return self.get_paginated_response(AuditEventSerializer(page, many=True).data)


class ServerViewSet(viewsets.ModelViewSet):
    """The Exchange server inventory. Operators write; every role reads. Passwords are write-only."""

    permission_classes = [ReadAnyRoleWriteOperator]
    serializer_class = ServerSerializer
    queryset = Server.objects.order_by("name")
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def perform_create(self, serializer: ServerSerializer) -> None:
        serializer.instance = services.server_save(None, actor=self.request.user, data=serializer.validated_data)

    def perform_update(self, serializer: ServerSerializer) -> None:
        serializer.instance = services.server_save(
            serializer.instance, actor=self.request.user, data=serializer.validated_data
        )

    def perform_destroy(self, instance: Server) -> None:
        services.server_delete(instance, actor=self.request.user)


class FreezeWindowViewSet(viewsets.ModelViewSet):
    """Periods when no maintenance may run (emergency changes excepted, with the reason recorded)."""

    permission_classes = [ReadAnyRoleWriteOperatorOrApprover]
    serializer_class = FreezeWindowSerializer
    queryset = FreezeWindow.objects.select_related("created_by").prefetch_related("servers").order_by("start")
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def perform_create(self, serializer: FreezeWindowSerializer) -> None:
        serializer.instance = services.freeze_window_save(
            None, actor=self.request.user, data=serializer.validated_data
        )

    def perform_update(self, serializer: FreezeWindowSerializer) -> None:
        serializer.instance = services.freeze_window_save(
            serializer.instance, actor=self.request.user, data=serializer.validated_data
        )

    def perform_destroy(self, instance: FreezeWindow) -> None:
        services.freeze_window_delete(instance, actor=self.request.user)


@extend_schema(responses={200: AuditVerifySerializer, 409: AuditVerifySerializer})
@api_view(["GET"])
@permission_classes([HasAnyRole])
def audit_verify(request: Request) -> Response:
    """Walk the whole audit chain; ``ok`` is false and ``first_bad_seq`` names the first bad event if tampered."""
    if not has_role(request.user, Role.AUDITOR, Role.OPERATOR, Role.APPROVER):
        return Response({"code": "permission_denied", "detail": "auditors verify the trail"}, status=403)
    result = audit.verify(request.query_params.get("head") or None)
    body = {"ok": result.ok, "events": result.events, "head": result.head}
    if not result.ok:
        body.update(first_bad_seq=result.first_bad_seq, problem=result.problem)
    return Response(body, status=status.HTTP_200_OK if result.ok else status.HTTP_409_CONFLICT)


@extend_schema(exclude=True)
def healthz(request) -> JsonResponse:  # noqa: ANN001
    """Database and broker reachability, for load balancers and compose health checks."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report any failure as unhealthy
        checks["database"] = f"error: {type(exc).__name__}"
    checks["broker"] = _broker_status()
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse({"ok": healthy, **checks}, status=200 if healthy else 503)


def _broker_status() -> str:
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        return f"error: {type(exc).__name__}"

