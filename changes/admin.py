"""The admin is the approvers' tool: what awaits me, approve or reject with a comment (the same services and rules
as the API), approvals and step runs inline. Audit events are read-only to everyone."""
from __future__ import annotations

from datetime import UTC
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, URLField, Value
from django.db.models.functions import Concat
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from . import authority, services
from .errors import DomainError
from .models import (
    Alert,
    Approval,
    AuditAnchor,
    AuditEvent,
    Change,
    FreezeWindow,
    Identity,
    IdentityAlias,
    Pause,
    Server,
    StepRun,
)
from .roles import has_role
from .states import TransitionNotAllowed
from .work import describe_work


class AwaitingMyApprovalFilter(admin.SimpleListFilter):
    title = "approval"
    parameter_name = "awaiting"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("me", "Awaiting my approval")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Change]) -> QuerySet[Change]:
        if self.value() != "me":
            return queryset
        return authority.awaiting_decision_by(request.user, queryset)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ApprovalInline(ReadOnlyInline):
    model = Approval
    fields = ["approver", "decision", "comment", "fingerprint", "created_at", "voided_at"]
    readonly_fields = fields


class StepRunInline(ReadOnlyInline):
    model = StepRun
    fields = ["order", "phase", "name", "status", "attempts", "started_at", "finished_at", "error", "decision",
              "resolution"]
    readonly_fields = fields


class PauseInline(ReadOnlyInline):
    """Why the engine stopped and what the operator decided: the engine's structured record, as the report reads it."""

    model = Pause
    fields = ["paused_at", "code", "step", "server", "message", "decision", "decided_by_label", "decided_at",
              "decision_reason"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pause]:
        return super().get_queryset(request).select_related("step", "server")


class AlertInline(ReadOnlyInline):
    model = Alert
    fields = ["kind", "message", "raised_at", "cleared_at"]
    readonly_fields = fields


class DecisionForm(forms.Form):
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "cols": 80}), max_length=5000,
                              help_text="Required: it is recorded with your decision and shown in the report.")


@admin.register(Change)
class ChangeAdmin(admin.ModelAdmin):
    formfield_overrides = {URLField: {"assume_scheme": "https"}}  # no scheme typed: https, as Django 6 will
    list_display = ["number_display", "title", "state", "current_step", "change_type", "risk", "server_names",
                    "window_display", "approvals_display", "requested_by"]
    list_filter = [AwaitingMyApprovalFilter, "state", "change_type", "risk", "source"]
    search_fields = ["title", "external_ref", "requested_by"]
    date_hierarchy = "window_start"
    ordering = ["-id"]
    inlines = [AlertInline, PauseInline, ApprovalInline, StepRunInline]
    actions = ["approve_selected", "reject_selected"]
    readonly_fields = [
        "number_display", "source", "external_ref", "title", "description", "change_type", "standard_template",
        "risk", "impact", "server_names", "plan", "work_display", "window_start", "window_end", "requested_by",
        "notify", "callback_url", "state",
        "approvals_required", "business_hours_warning", "freeze_override_reason", "close_code", "close_notes",
        "created_by", "created_at", "updated_at",
    ]
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Change]:
        # What the API shows this identity, no more (the e-mails link here).
        changes = (
            super().get_queryset(request)
            .select_related("created_by")
            .prefetch_related("servers")
            .annotate(
                approvals_count=Count(
                    "approvals__approver", distinct=True,
                    filter=Q(approvals__decision=Approval.Decision.APPROVED, approvals__voided_at__isnull=True),
                ),
                # Live progress in the list without a query per row: the step running or awaiting a decision.
                current_step_label=Subquery(
                    StepRun.objects.filter(change=OuterRef("pk"), status__in=StepRun.CURRENT_STATUSES)
                    .order_by("-order")
                    .annotate(label=Concat("name", Value(" ("), "status", Value(")")))
                    .values("label")[:1]
                ),
            )
        )
        return authority.visible_changes(request.user, changes)

    @admin.display(description="Current step")
    def current_step(self, obj: Change) -> str:
        return obj.current_step_label or "—"

    @admin.display(description="Number", ordering="id")
    def number_display(self, obj: Change) -> str:
        return obj.number

    @admin.display(description="Window (UTC)", ordering="window_start")
    def window_display(self, obj: Change) -> str:
        start, end = obj.window_start.astimezone(UTC), obj.window_end.astimezone(UTC)
        tail = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M}"
        warn = " ⚠ business hours" if obj.business_hours_warning else ""
        return f"{start:%Y-%m-%d %H:%M} → {tail}{warn}"

    @admin.display(description="Work")
    def work_display(self, obj: Change) -> str:
        return describe_work(obj.work)

    @admin.display(description="Servers")
    def server_names(self, obj: Change) -> str:
        return ", ".join(s.name for s in obj.servers.all())

    @admin.display(description="Approvals")
    def approvals_display(self, obj: Change) -> str:
        return f"{getattr(obj, 'approvals_count', 0)}/{obj.approvals_required}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # changes come from the ITSM through the API

    def save_model(self, request: HttpRequest, obj: Change, form: forms.ModelForm, change: bool) -> None:
        pass  # every field is read-only here: decisions go through the actions, edits through the API (audited)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Approve selected changes (with a comment)")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Change]) -> HttpResponse | None:
        return self._decide(request, queryset, services.change_approve, "approve")

    @admin.action(description="Reject selected changes (with a comment)")
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Change]) -> HttpResponse | None:
        return self._decide(request, queryset, services.change_reject, "reject")

    def _decide(self, request: HttpRequest, queryset: QuerySet[Change], service: Any, verb: str) -> Any:
        form = DecisionForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            for change in queryset:
                try:
                    service(change, actor=request.user, comment=form.cleaned_data["comment"])
                except (DomainError, TransitionNotAllowed) as exc:
                    self.message_user(request, f"{change.number}: {getattr(exc, 'detail', exc)}", messages.ERROR)
                else:
                    self.message_user(request, f"{change.number}: {verb}d", messages.SUCCESS)
            return None
        return TemplateResponse(request, "admin/changes/change/decide.html", {
            **self.admin_site.each_context(request),
            "title": f"{verb.capitalize()} changes",
            "verb": verb,
            "action": f"{verb}_selected",
            "changes": queryset,
            "form": form,
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })


def _https_by_default(field: Any, **kwargs: Any) -> Any:
    """Form fields of a model: a URL typed without a scheme means https:// (Django 6's rule, chosen now)."""
    if isinstance(field, URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class ServerAdminForm(forms.ModelForm):
    password = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                               help_text="Write-only. Leave empty to keep the stored password.")
    install_password = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                                       help_text="Write-only. The install account's password; empty keeps it.")
    keytab = forms.FileField(required=False, label="Kerberos keytab",
                             help_text="Write-only, stored encrypted; used instead of the password. Leave empty to "
                                       "keep the stored one.")

    class Meta:
        model = Server
        fields = list(Server.EDITABLE_FIELDS)
        formfield_callback = _https_by_default
        labels = {"fqdn": "FQDN", "dag_name": "DAG", "ad_site": "AD site", "endpoint_url": "URL",
                  "winrm_url": "URL", "auth_method": "Authentication", "verify_tls": "Verify TLS certificate",
                  "winrm_auth_method": "Authentication", "winrm_verify_tls": "Verify TLS certificate",
                  "winrm_connection_timeout": "Connection timeout", "winrm_operation_timeout": "Operation timeout"}

    def clean(self) -> dict[str, Any]:
        """The inventory service's refusals (renaming a server that changes name, Basic in clear text) shown on the
        form, not a 500."""
        cleaned = super().clean()
        if self.instance.pk:
            stored = Server.objects.get(pk=self.instance.pk)
            diff = {k: [getattr(stored, k), v] for k, v in cleaned.items()
                    if k in Server.EDITABLE_FIELDS and getattr(stored, k) != v}
            try:
                services.server_edit_check(stored, diff)
            except DomainError as exc:
                raise forms.ValidationError(exc.detail) from None
        try:
            fields = ("name", "fqdn", "endpoint_url", "winrm_url", "auth_method", "winrm_auth_method")
            services.server_refuse_clear_text_basic(
                Server(**{f: cleaned.get(f, getattr(self.instance, f)) or "" for f in fields}))
        except DomainError as exc:
            raise forms.ValidationError(exc.detail) from None
        return cleaned


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):
    formfield_overrides = {URLField: {"assume_scheme": "https"}}  # no scheme typed: https, as Django 6 will
    form = ServerAdminForm
    fieldsets = [
        (None, {"fields": ["name", "fqdn", "dag_name", "ad_site", "version", "build"]}),
        ("Exchange management endpoint (Exchange cmdlets)", {"fields": [
            "endpoint_url", "auth_method", "verify_tls", "connection_timeout", "operation_timeout"]}),
        ("Default WinRM endpoint (services, failover cluster); empty settings follow the Exchange endpoint's", {
            "fields": ["winrm_url", "winrm_auth_method", "winrm_verify_tls", "winrm_connection_timeout",
                       "winrm_operation_timeout"]}),
        ("Credentials", {"fields": ["username", "password", "keytab"]}),
        ("TLS", {"fields": ["tls_ca_bundle"]}),
        ("Exchange update install account (runs Setup as a scheduled task)", {
            "fields": ["install_username", "install_password"]}),
    ]
    list_display = ["name", "fqdn", "dag_name", "ad_site", "version", "auth_method", "has_password", "has_keytab",
                    "tls_warning"]
    actions: list = []  # runner/admin.py adds "Check the connection" (the runner does the remote I/O)

    @admin.display(description="TLS")
    def tls_warning(self, obj: Server) -> str:
        return "; ".join(obj.tls_warnings) or "ok"

    @admin.display(boolean=True, description="Keytab")
    def has_keytab(self, obj: Server) -> bool:
        return obj.has_keytab

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            for warning in obj.tls_warnings:
                self.message_user(request, warning, messages.WARNING)
        return form
    list_filter = ["dag_name", "ad_site", "auth_method"]
    search_fields = ["name", "fqdn"]

    def save_model(self, request: HttpRequest, obj: Server, form: forms.ModelForm, change: bool) -> None:
        data = {k: v for k, v in form.cleaned_data.items() if k not in ("password", "keytab", "install_password")}
        if form.cleaned_data.get("password"):
            data["password"] = form.cleaned_data["password"]
        if form.cleaned_data.get("install_password"):
            data["install_password"] = form.cleaned_data["install_password"]
        if form.cleaned_data.get("keytab"):
            data["keytab"] = form.cleaned_data["keytab"].read()
        original = Server.objects.get(pk=obj.pk) if change else None
        saved = services.server_save(original, actor=request.user, data=data)
        obj.pk = saved.pk

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, "operator")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, "operator")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deletion goes through the API, which refuses servers named by changes


@admin.register(FreezeWindow)
class FreezeWindowAdmin(admin.ModelAdmin):
    list_display = ["start", "end", "dag_name", "reason", "created_by"]
    fields = ["start", "end", "servers", "dag_name", "reason"]
    filter_horizontal = ["servers"]

    def save_model(self, request: HttpRequest, obj: FreezeWindow, form: forms.ModelForm, change: bool) -> None:
        pass  # saved with its servers in save_related, through the service

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        data = dict(form.cleaned_data)
        data["servers"] = [s.name for s in data.get("servers", [])]
        original = FreezeWindow.objects.get(pk=form.instance.pk) if change else None
        try:
            saved = services.freeze_window_save(original, actor=request.user, data=data)
        except DomainError as exc:
            self.message_user(request, f"Not saved: {exc.detail}", messages.ERROR)
            return
        form.instance.pk = saved.pk

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class IdentityAliasInline(admin.TabularInline):
    model = IdentityAlias
    extra = 1
    fields = ["value", "kind", "automatic"]
    readonly_fields = ["automatic"]


@admin.register(Identity)
class IdentityAdmin(admin.ModelAdmin):
    """The names a person goes by (UPN, DOMAIN\\user, e-mail, ...), for separation of duties. User name and e-mail
    are added automatically; every alias added, changed or removed here is audited (changes.identities)."""

    list_display = ["user", "alias_list"]
    search_fields = ["user__username", "user__email", "aliases__value"]
    fields = ["user"]
    readonly_fields = ["user"]
    inlines = [IdentityAliasInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Identity]:
        return super().get_queryset(request).select_related("user").prefetch_related("aliases")

    @admin.display(description="Aliases")
    def alias_list(self, obj: Identity) -> str:
        return ", ".join(a.value for a in obj.aliases.all())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # one per user, made with the user

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["seq", "created_at", "actor", "action", "object_type", "object_id", "reason", "request_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_id", "request_id", "hash"]
    ordering = ["-seq"]
    readonly_fields = ["seq", "created_at", "actor", "request_id", "action", "object_type", "object_id", "changes",
                       "reason", "change_prev_hash", "prev_hash", "hash"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

@admin.register(AuditAnchor)
class AuditAnchorAdmin(AuditEventAdmin):
    """The anchors written outside the database, read-only (verify_audit --anchors reads the external copy)."""

    list_display = ["seq", "created_at", "reason", "sinks", "stamped", "hash"]
    list_filter = []
    search_fields = ["hash", "reason"]
    readonly_fields = ["seq", "hash", "event_created_at", "created_at", "reason", "sinks", "tsa_time"]
    exclude = ["tsa_token"]

    @admin.display(boolean=True, description="RFC 3161")
    def stamped(self, obj: AuditAnchor) -> bool:
        return bool(obj.tsa_token)


# The catalogue's and the API tokens' pages live beside their domain modules; importing them registers them.
from . import catalogue_admin, tokens_admin  # noqa: E402, F401
