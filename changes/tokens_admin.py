"""API tokens in the admin, for superusers: who has one, its shown prefix, when it expires. A key is displayed only
once, on the page that answers its creation or rotation (never stored, not in a message cookie, not cached); the
list and detail pages show no key and no digest."""
from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from . import tokens
from .models import ApiToken


class ApiTokenAddForm(forms.ModelForm):
    days = forms.IntegerField(min_value=1, max_value=3650, required=False,
                              help_text="Days the token is valid; empty: EXMAINT_API_TOKEN_DAYS.")

    class Meta:
        model = ApiToken
        fields = ["user"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "prefix_display", "created_at", "expires_at", "status"]
    search_fields = ["user__username", "prefix"]
    fields = ["user", "prefix_display", "created_at", "expires_at", "status"]
    readonly_fields = fields
    actions = ["rotate_selected"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        return super().get_queryset(request).select_related("user")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return list(self.fields) if obj is not None else ["user", "days"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return list(self.readonly_fields) if obj is not None else []

    @admin.display(description="Key starts with", ordering="prefix")
    def prefix_display(self, obj: ApiToken) -> str:
        return f"{obj.prefix}…"

    @admin.display(description="Status")
    def status(self, obj: ApiToken) -> str:
        return "expired" if obj.expires_at <= timezone.now() else "valid"

    def save_model(self, request: HttpRequest, obj: ApiToken, form: forms.ModelForm, change: bool) -> None:
        issued = tokens.token_issue(form.cleaned_data["user"], actor=request.user,
                                    days=form.cleaned_data.get("days"))
        obj.pk, obj.prefix, obj.digest = issued.token.pk, issued.token.prefix, issued.token.digest
        obj.created_at, obj.expires_at = issued.token.created_at, issued.token.expires_at
        request._exmaint_issued = [(issued.token.user, issued)]

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: Any = None) -> HttpResponse:
        return self._shown_once(request, request._exmaint_issued, "API token created")

    @admin.action(description="Rotate the selected tokens (the old keys stop working at once)")
    def rotate_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> HttpResponse:
        issued = [(t.user, tokens.token_issue(t.user, actor=request.user)) for t in queryset.select_related("user")]
        return self._shown_once(request, issued, "API tokens rotated")

    def _shown_once(self, request: HttpRequest, issued: list[tuple[Any, tokens.Issued]], title: str) -> HttpResponse:
        response = TemplateResponse(request, "admin/changes/apitoken/shown_once.html", {
            **self.admin_site.each_context(request),
            "title": title,
            "issued": [{"user": user, "key": i.key, "expires_at": i.token.expires_at} for user, i in issued],
            "opts": self.model._meta,
            "default_days": settings.EXMAINT["API_TOKEN_DAYS"],
        })
        add_never_cache_headers(response)  # the key must not stay in a proxy's or the browser's cache
        return response

    def delete_model(self, request: HttpRequest, obj: ApiToken) -> None:
        tokens.token_revoke(obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset.select_related("user"):
            tokens.token_revoke(token, actor=request.user)

    # Identities and their credentials are the superuser's business (like users and groups).
    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # nothing to edit: rotate instead

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser  # revoking a token is deleting it
