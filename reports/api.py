"""``GET /api/v1/changes/{id}/report/``: the stored PDF, for auditors, operators and the change's approvers."""
from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request

from changes.api.permissions import HasAnyRole
from changes.selectors import change_list

from .services import report_download


@extend_schema(
    responses={(200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="The PDF report")},
    parameters=[
        OpenApiParameter("X-Report-SHA256", str, OpenApiParameter.HEADER, response=[200],
                         description="SHA-256 of the PDF, recorded when it was generated (also in the audit trail)"),
        OpenApiParameter("ETag", str, OpenApiParameter.HEADER, response=[200], description="The quoted SHA-256"),
        OpenApiParameter("Content-Disposition", str, OpenApiParameter.HEADER, response=[200],
                         description='attachment; filename="<number>-report.pdf"'),
    ],
)
@api_view(["GET"])
@permission_classes([HasAnyRole])
def change_report(request: Request, pk: int) -> HttpResponse:
    """The window's PDF report (generated on demand if the window ended and none is stored). Each download is
    audited. 404 ``report_not_ready`` before the window has ended."""
    change = get_object_or_404(change_list(request.user), pk=pk)
    report, data = report_download(change, actor=request.user)
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{change.number}-report.pdf"'
    response["ETag"] = f'"{report.sha256}"'
    response["X-Report-SHA256"] = report.sha256
    response["Cache-Control"] = "private, no-cache"
    response["Content-Length"] = str(len(data))
    return response
