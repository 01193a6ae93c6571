"""The standard-change catalogue in the admin: approvers create and edit the pre-approved templates (saving is
approving, through changes.catalogue.template_save, audited); everyone with a role may read them. Entries are
deactivated, never deleted, and keep their name."""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from . import catalogue
from .errors import DomainError
from .models import Role, Server, StandardChangeTemplate
from .roles import has_role


class StandardChangeTemplateForm(forms.ModelForm):
    dag_names = forms.MultipleChoiceField(
        required=False, label="DAGs", widget=forms.CheckboxSelectMultiple,
        help_text="Every member of these DAGs may be named by a fitting change.")

    class Meta:
        model = StandardChangeTemplate
        fields = ["name", "work", "description", "plan", "servers", "dag_names", "max_risk", "active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        known = set(Server.objects.exclude(dag_name__isnull=True).exclude(dag_name="")
                    .values_list("dag_name", flat=True))
        known |= set(self.instance.dag_names or [])
        self.fields["dag_names"].choices = [(d, d) for d in sorted(known)]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not cleaned.get("servers") and not cleaned.get("dag_names"):
            raise forms.ValidationError("Name the servers or DAGs the template pre-approves.")
        return cleaned


@admin.register(StandardChangeTemplate)
class StandardChangeTemplateAdmin(admin.ModelAdmin):
    form = StandardChangeTemplateForm
    list_display = ["name", "work", "plan", "max_risk", "allowed", "active", "approved_by", "approved_at"]
    list_filter = ["active", "plan", "max_risk"]
    search_fields = ["name", "work"]
    filter_horizontal = ["servers"]
    readonly_fields = ["approved_by", "approved_at"]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("approved_by").prefetch_related("servers")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "name"] if obj is not None else list(self.readonly_fields)

    @admin.display(description="Servers / DAGs")
    def allowed(self, obj: StandardChangeTemplate) -> str:
        return ", ".join([*(s.name for s in obj.servers.all()), *(f"DAG {d}" for d in obj.dag_names)]) or "—"

    def save_model(self, request: HttpRequest, obj: StandardChangeTemplate, form: forms.ModelForm,
                   change: bool) -> None:
        pass  # saved with its servers in save_related, through the service (which records the approval)

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        data = dict(form.cleaned_data)
        data["servers"] = list(data.get("servers") or [])
        data["dag_names"] = sorted(data.get("dag_names") or [])
        original = StandardChangeTemplate.objects.get(pk=form.instance.pk) if change else None
        try:
            saved = catalogue.template_save(original, actor=request.user, data=data)
        except DomainError as exc:
            # The form and the permissions refuse what they can; this is the service's last word.
            self.message_user(request, f"Not saved: {exc.detail}", messages.ERROR)
            return
        form.instance.pk = saved.pk

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, *Role.values)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.APPROVER)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, Role.APPROVER)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deactivate instead: changes refer to templates by name
