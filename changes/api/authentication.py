"""Token authentication accepting both 'Token <key>' and 'Bearer <key>' (ITSM tools differ). Failures count towards
the client's lockout (django-axes, see changes.api.throttling), so tokens cannot be guessed at speed."""
from __future__ import annotations

from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth.signals import user_login_failed
from django.db.models import Aggregate, CharField
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token

from changes.roles import remember_roles

from .throttling import TOKEN_CREDENTIALS, cooloff_seconds


class _Joined(Aggregate):
    """The values, comma-joined (role names have no commas): STRING_AGG on PostgreSQL, GROUP_CONCAT on SQLite."""

    function = "STRING_AGG"
    template = "%(function)s(%(expressions)s, ',')"
    output_field = CharField()

    def as_sqlite(self, compiler, connection, **extra_context):  # noqa: ANN001, ANN201 - Django's signature
        return super().as_sql(compiler, connection, function="GROUP_CONCAT", **extra_context)


class TokenOrBearerAuthentication(TokenAuthentication):
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
        except exceptions.AuthenticationFailed:
            user_login_failed.send(sender=type(self), credentials=TOKEN_CREDENTIALS, request=django_request)
            raise

    def _authenticate(self, parts: list[bytes]):  # noqa: ANN202 - DRF's (user, token)
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Authorization must be 'Token <key>' or 'Bearer <key>'")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("the token contains invalid characters") from None
        return self.authenticate_credentials(key)

    def authenticate_credentials(self, key: str):  # noqa: ANN201 - DRF's (user, token)
        # One query for the token, its user, the user's API client (its source) and roles, which every request
        # reads next (changes.roles).
        try:
            token = (Token.objects.select_related("user", "user__api_client")
                     .annotate(role_names=_Joined("user__groups__name")).get(key=key))
        except Token.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        remember_roles(token.user, (token.role_names or "").split(","))
        return token.user, token


class TokenOrBearerScheme(OpenApiAuthenticationExtension):
    target_class = "changes.api.authentication.TokenOrBearerAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201 - drf-spectacular signature
        # HTTP bearer: a client following the scheme sends "Bearer <key>", which is accepted; "Token <key>" is too.
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "token",
            "description": "`Authorization: Bearer <key>` (or `Token <key>`); the bare key is refused",
        }
