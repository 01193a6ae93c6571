"""Failed logins are throttled by django-axes: admin logins through its authentication backend, API tokens through
TokenOrBearerAuthentication, which reports each failure to axes as a login failure of the pseudo-user below. Both
lock the client out for EXMAINT_LOGIN_COOLOFF_MINUTES after EXMAINT_LOGIN_FAILURE_LIMIT failures."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

# Token failures are counted per client address under this name (never the token itself, not even a prefix).
TOKEN_CREDENTIALS = {"username": "(api-token)"}


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or behind EXMAINT_PROXY_COUNT trusted proxies the address the outermost of
    them saw (the right-most entries of X-Forwarded-For are the ones our proxies wrote; the left ones the client can
    forge)."""
    count = getattr(settings, "EXMAINT_PROXY_COUNT", 0)
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    if count and len(forwarded) >= count:
        return forwarded[-count]
    return request.META.get("REMOTE_ADDR", "")


def cooloff_seconds() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """429 with Retry-After; under /api/ the API's error shape."""
    wait = cooloff_seconds()
    detail = f"too many failed authentication attempts from this client; try again in {wait // 60} minutes"
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"code": "too_many_failures", "detail": detail}, status=429)
    else:
        response = HttpResponse(f"{detail}.\n", status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(wait)
    return response
