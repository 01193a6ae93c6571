"""Token authentication accepting both 'Token <key>' and 'Bearer <key>' (ITSM tools differ), against the hashed
tokens of changes.tokens. Failures with an unknown key count towards the client's lockout (django-axes, see
changes.api.throttling), so tokens cannot be guessed at speed; an expired key is a known one, answered with its own
401 (code token_expired) and not counted, so a forgotten rotation does not lock out its neighbours."""
from __future__ import annotations

from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth.signals import user_login_failed
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from changes.tokens import TokenRefused, token_user

from .throttling import TOKEN_CREDENTIALS, cooloff_seconds


class TokenExpired(exceptions.AuthenticationFailed):
    default_code = "token_expired"


class TokenOrBearerAuthentication(BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):  # noqa: ANN001, ANN201 - DRF signature
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in (b"token", b"bearer"):
            return None
        django_request = request._request
        if not AxesProxyHandler.is_allowed(django_request, TOKEN_CREDENTIALS):
            # Locked out: not even a valid token is checked until the cool-off ends.
            raise exceptions.Throttled(wait=cooloff_seconds(),
                                       detail="too many failed authentication attempts from this client")
        try:
            return self._authenticate(parts)
        except TokenExpired:
            raise
        except exceptions.AuthenticationFailed:
            user_login_failed.send(sender=type(self), credentials=TOKEN_CREDENTIALS, request=django_request)
            raise

    def authenticate_header(self, request) -> str:  # noqa: ANN001 - DRF signature
        # A 401 needs a WWW-Authenticate challenge (else DRF answers 403).
        return self.keyword

    def _authenticate(self, parts: list[bytes]):  # noqa: ANN202 - DRF's (user, auth)
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Authorization must be 'Token <key>' or 'Bearer <key>'")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("the token contains invalid characters") from None
        try:
            return token_user(key)
        except TokenRefused as exc:
            raise (TokenExpired if exc.expired else exceptions.AuthenticationFailed)(exc.detail) from None


class TokenOrBearerScheme(OpenApiAuthenticationExtension):
    target_class = "changes.api.authentication.TokenOrBearerAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201 - drf-spectacular signature
        # HTTP bearer: a client following the scheme sends "Bearer <key>", which is accepted; "Token <key>" is too.
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "token",
            "description": "`Authorization: Bearer <key>` (or `Token <key>`); the bare key is refused. Keys start "
                           "with `exm_`, are shown once when issued and expire (401 `token_expired`): rotate them",
        }
