"""Token authentication accepting both 'Token <key>' and 'Bearer <key>' (ITSM tools differ)."""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header


class TokenOrBearerAuthentication(TokenAuthentication):
    def authenticate(self, request):  # noqa: ANN001, ANN201 - DRF signature
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in (b"token", b"bearer"):
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Authorization must be 'Token <key>' or 'Bearer <key>'")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("the token contains invalid characters") from None
        return self.authenticate_credentials(key)


class TokenOrBearerScheme(OpenApiAuthenticationExtension):
    target_class = "changes.api.authentication.TokenOrBearerAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201 - drf-spectacular signature
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>` or `Bearer <key>`",
        }
