"""``POST /api/v1/servers/{id}/check/``: operators try a server's endpoints (read-only cmdlets only) and get the
report of runner/server_check.py: resolved host, SPN, mechanism, TLS certificate, Exchange version, clock offset.
A connection problem is part of the report (200), not an HTTP error."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from changes.api.permissions import ReadAnyRoleWriteOperator
from changes.models import Server

from .server_check import check_server


class ServerCheckView(APIView):
    permission_classes = [ReadAnyRoleWriteOperator]  # a POST: operators only

    @extend_schema(request=None, responses={200: dict}, operation_id="server_check")
    def post(self, request: Request, pk: int) -> Response:
        return Response(check_server(get_object_or_404(Server, pk=pk)).as_dict())
