"""Input serializers check shape only (types, lengths, choices); rules live in changes.services."""
from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from changes.models import Alert, Approval, AuditEvent, Change, FreezeWindow, Server, StepRun, validate_server_name
from changes.states import State, next_states

from . import schema  # noqa: F401 - registers the schema extensions of this module's field classes

# Far outside any maintenance window, and keeps UTC conversions away from datetime's year 1 / 9999 edges.
MIN_YEAR, MAX_YEAR = 2000, 2100


def parse_aware(value: Any) -> datetime:
    """ISO 8601 with an offset, between MIN_YEAR and MAX_YEAR; raises ValueError with a readable message."""
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date-time string, e.g. 2026-12-05T22:00:00+00:00")
    try:
        parsed = parse_datetime(value.strip())
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"'{value[:40]}' is not an ISO 8601 date-time")
    if parsed.tzinfo is None:
        raise ValueError("naive time refused: give a UTC offset, e.g. +00:00 or Z")
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ValueError(f"the year must be between {MIN_YEAR} and {MAX_YEAR}")
    return parsed.astimezone(UTC)


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with an offset; naive times are refused rather than guessed."""

    def to_internal_value(self, value: Any) -> datetime:
        try:
            return parse_aware(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class RefusesUnknownFields:
    """Refuses fields it does not know (or may not write), so a typo is an error rather than silently ignored."""

    def to_internal_value(self, data: Any):  # noqa: ANN201
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
        writable = {name for name, field in self.fields.items() if not field.read_only}
        unknown = sorted(set(data) - writable)
        if unknown:
            raise serializers.ValidationError({name: ["unknown or read-only field"] for name in unknown})
        return super().to_internal_value(data)


class StrictSerializer(RefusesUnknownFields, serializers.Serializer):
    pass


class HttpUrlField(serializers.URLField):
    """An http(s) URL. Its URLValidator runs in to_internal_value rather than from ``validators``, where the schema
    generator would read it as ``format: uri`` (see changes.api.schema.HttpUrlFieldExtension)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._url_validators = [v for v in self.validators if isinstance(v, URLValidator)]
        self.validators = [v for v in self.validators if not isinstance(v, URLValidator)]

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        for validator in self._url_validators:
            try:
                validator(value)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(exc.messages) from None
        if value and not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError("must be an http(s) URL")
        return value


def _server_name() -> serializers.CharField:
    """A NetBIOS server name, e.g. EX01: the model's validator, shared with the admin."""
    return serializers.CharField(max_length=15, validators=[validate_server_name])


class ChangeCreateSerializer(StrictSerializer):
    source = serializers.RegexField(r"^[a-z0-9][a-z0-9_.-]*$", max_length=40)
    external_ref = serializers.CharField(max_length=100)
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=20000, required=False, allow_blank=True, default="")
    change_type = serializers.ChoiceField(Change.ChangeType.choices)
    risk = serializers.ChoiceField(Change.Level.choices)
    impact = serializers.ChoiceField(Change.Level.choices, required=False, default=Change.Level.MEDIUM)
    servers = serializers.ListField(child=_server_name(), min_length=1, max_length=50)
    plan = serializers.RegexField(r"^[a-z0-9][a-z0-9_-]*$", max_length=64, required=False, default="maintenance")
    window_start = AwareDateTimeField()
    window_end = AwareDateTimeField()
    requested_by = serializers.CharField(max_length=254)
    notify = serializers.ListField(child=serializers.EmailField(max_length=254), max_length=200, required=False,
                                   default=list)
    callback_url = HttpUrlField(max_length=500, required=False, allow_blank=True, default="")
    notify_affected_mailboxes = serializers.BooleanField(required=False, default=False)
    # No default: a body without it keeps the digest (idempotent replays) it had before the catalogue existed.
    standard_template = serializers.RegexField(
        r"^[a-z0-9][a-z0-9_-]*$", max_length=64, required=False, allow_blank=True,
        help_text="Standard changes only, and required for them: the name of the standard-change template (catalogue "
                  "entry) the change fits — same plan, servers among the template's servers or DAGs, risk at most "
                  "its maximum, never high. A change that does not fit is refused (code not_standard).")


class ChangeUpdateSerializer(ChangeCreateSerializer):
    """PATCH: the editable fields, all optional; source and external_ref are the identity and cannot change."""

    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, write_only=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["partial"] = True
        super().__init__(*args, **kwargs)
        for name in ("source", "external_ref"):
            self.fields.pop(name)


class CommentSerializer(StrictSerializer):
    comment = serializers.CharField(max_length=5000)


class ReasonSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=5000)


class StartSerializer(StrictSerializer):
    """Operator choices for this window (the scheduler's automatic start uses the defaults)."""

    clear_setup_leftovers = serializers.BooleanField(
        required=False, help_text="Also clear Functional votes a failed CU setup left (ServerWideOffline, Monitoring, "
                                  "RecoveryActionsEnabled).")
    backup_max_age_hours = serializers.IntegerField(
        required=False, min_value=1, max_value=24 * 14, help_text="Newest backup may be at most this old (default 24).")


class ResumeSerializer(StrictSerializer):
    action = serializers.ChoiceField(["retry", "skip", "abort"])
    reason = serializers.CharField(max_length=5000)


class WorkDoneSerializer(StrictSerializer):
    notes = serializers.CharField(max_length=20000)


class CloseSerializer(StrictSerializer):
    close_code = serializers.ChoiceField(Change.CloseCode.choices)
    close_notes = serializers.CharField(max_length=20000)


class IssueSerializer(serializers.Serializer):
    """An anomaly met during a step (runner.step_types.Issue.as_dict)."""

    summary = serializers.CharField()
    resolution = serializers.CharField(allow_blank=True)
    automatic = serializers.BooleanField(required=False)


class CommandSerializer(serializers.Serializer):
    """A cmdlet a step ran (runner.context.CommandRecord), parameters with secrets redacted."""

    cmdlet = serializers.CharField()
    parameters = serializers.DictField(required=False)
    endpoint = serializers.CharField(required=False)
    access = serializers.CharField(required=False)
    started_at = serializers.CharField(required=False)
    duration_ms = serializers.IntegerField(required=False)
    outcome = serializers.CharField(required=False, help_text=(
        '"ok", "errors", "failed: <error>"; "sent" while the command is out (it is recorded before it is sent); '
        '"sent, outcome unknown" when its attempt was interrupted before the answer was recorded: it may or may not '
        "have run on the server."))
    attempt = serializers.IntegerField(required=False)
    via = serializers.CharField(required=False, allow_null=True)


class CurrentStepSerializer(serializers.Serializer):
    """The step running or waiting for a decision."""

    order = serializers.IntegerField()
    key = serializers.CharField()
    phase = serializers.CharField()
    name = serializers.CharField()
    status = serializers.ChoiceField(StepRun.Status.choices)
    summary = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)


FINDINGS_HELP = "Structured results of the step (pre-checks, snapshots); keys depend on the step"


class ApprovalSerializer(serializers.ModelSerializer):
    approver = serializers.CharField(source="approver.username")
    valid = serializers.SerializerMethodField()

    class Meta:
        model = Approval
        fields = ["id", "approver", "decision", "comment", "fingerprint", "created_at", "voided_at", "valid"]

    def get_valid(self, obj: Approval) -> bool:
        return obj.voided_at is None


class ChangeSerializer(serializers.ModelSerializer):
    number = serializers.CharField(read_only=True)
    servers = serializers.SerializerMethodField()
    next_states = serializers.SerializerMethodField()
    approvals_received = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    notify = serializers.ListField(child=serializers.EmailField(), read_only=True)
    callback_url = HttpUrlField(read_only=True, allow_blank=True)
    # "" until the change is closed: the enum or blank.
    close_code = serializers.ChoiceField(Change.CloseCode.choices, allow_blank=True, read_only=True)

    class Meta:
        model = Change
        fields = [
            "id", "number", "source", "external_ref", "title", "description", "change_type", "risk", "impact",
            "servers", "plan", "window_start", "window_end", "requested_by", "notify", "notify_affected_mailboxes",
            "callback_url", "standard_template", "state",
            "next_states", "approvals_required", "approvals_received", "business_hours_warning",
            "freeze_override_reason", "close_code", "close_notes", "created_by", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def get_servers(self, obj: Change) -> list[str]:
        return [s.name for s in obj.servers.all()]

    @extend_schema_field(serializers.ListField(child=serializers.ChoiceField(State.choices)))
    def get_next_states(self, obj: Change) -> list[str]:
        return next_states(obj.state)

    def get_approvals_received(self, obj: Change) -> int:
        annotated = getattr(obj, "approvals_count", None)
        if annotated is not None:
            return annotated
        return obj.approvals.filter(decision="approved", voided_at__isnull=True).values("approver").distinct().count()


class AlertSerializer(serializers.ModelSerializer):
    class Meta:
        model = Alert
        fields = ["id", "kind", "message", "raised_at", "cleared_at"]
        read_only_fields = fields


class ChangeDetailSerializer(ChangeSerializer):
    approvals = ApprovalSerializer(many=True, read_only=True)
    alerts = AlertSerializer(many=True, read_only=True)
    current_step = serializers.SerializerMethodField()
    # null until the work is reported done, and forever for changes that never ran to it
    work_done_at = serializers.DateTimeField(source="run.work_done_at", default=None, read_only=True, allow_null=True)
    # An operator's decision (start, retry/skip/abort, work-done) recorded but not yet taken up by the runner (the
    # broker or the workers may be down: it is acted on when they return); null once a worker took it.
    decision_waiting_since = serializers.DateTimeField(source="run.decision_waiting_since", default=None,
                                                       read_only=True, allow_null=True)

    class Meta(ChangeSerializer.Meta):
        fields = [*ChangeSerializer.Meta.fields, "current_step", "work_done_at", "decision_waiting_since", "alerts",
                  "approvals"]
        read_only_fields = fields

    @extend_schema_field(CurrentStepSerializer(allow_null=True))
    def get_current_step(self, obj: Change) -> dict[str, Any] | None:
        """The step running or waiting for a decision, for live progress."""
        if "steps" in getattr(obj, "_prefetched_objects_cache", {}):  # a change created by this request: none yet
            step = max((s for s in obj.steps.all() if s.status in StepRun.CURRENT_STATUSES),
                       key=lambda s: s.order, default=None)
        else:
            step = obj.steps.filter(status__in=StepRun.CURRENT_STATUSES).order_by("-order").first()
        if step is None:
            return None
        return {"order": step.order, "key": step.key, "phase": step.phase, "name": step.name, "status": step.status,
                "summary": step.output_summary, "error": step.error}


class StepRunSerializer(serializers.ModelSerializer):
    server = serializers.CharField(source="server.name", default=None, read_only=True, allow_null=True)
    decided_by = serializers.CharField(source="decided_by.username", default=None, read_only=True, allow_null=True)
    commands = CommandSerializer(many=True, read_only=True)
    findings = serializers.DictField(read_only=True, help_text=FINDINGS_HELP)
    issues = IssueSerializer(many=True, read_only=True)

    class Meta:
        model = StepRun
        fields = [
            "id", "order", "phase", "key", "name", "server", "status", "attempts", "started_at", "finished_at",
            "commands", "output_summary", "findings", "issues", "error", "decision", "decided_by", "resolution",
            "idempotent", "skippable", "mutating",
        ]
        read_only_fields = fields


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "seq", "created_at", "actor", "request_id", "action", "object_type", "object_id", "changes", "reason",
            "change_prev_hash", "prev_hash", "hash",
        ]
        read_only_fields = fields


class AuditVerifySerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    events = serializers.IntegerField()
    head = serializers.CharField()
    first_bad_seq = serializers.IntegerField(allow_null=True, required=False)
    problem = serializers.CharField(required=False)


class Base64BytesField(serializers.CharField):
    """Binary uploads in JSON: base64 text in, bytes out (never read back)."""

    def to_internal_value(self, data: Any) -> bytes:
        text = super().to_internal_value(data)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise serializers.ValidationError("not valid base64") from None


class ServerSerializer(RefusesUnknownFields, serializers.ModelSerializer):
    """The inventory. ``password`` is write-only; reads show only whether one is set."""

    password = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=512,
                                     style={"input_type": "password"})
    has_password = serializers.BooleanField(read_only=True)
    keytab = Base64BytesField(write_only=True, required=False, allow_blank=True, max_length=64 * 1024,
                              help_text="Write-only Kerberos keytab of the service account, base64; empty removes it")
    has_keytab = serializers.BooleanField(read_only=True)
    tls_warnings = serializers.ListField(child=serializers.CharField(), read_only=True)
    effective_endpoint_url = serializers.CharField(read_only=True)
    effective_winrm_url = serializers.CharField(read_only=True)
    name = _server_name()
    endpoint_url = HttpUrlField(max_length=500, required=False, allow_blank=True)
    winrm_url = HttpUrlField(max_length=500, required=False, allow_blank=True)

    class Meta:
        model = Server
        fields = [
            "id", *Server.EDITABLE_FIELDS, "effective_endpoint_url", "effective_winrm_url", "password", "has_password",
            "keytab", "has_keytab", "tls_warnings", "created_at", "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {"dag_name": {"allow_null": True}, "winrm_auth_method": {"allow_blank": True}}


class ServerNamesField(serializers.ListField):
    """Writes as a list of names; reads a many-to-many of servers back as names."""

    def to_representation(self, data: Any) -> list[str]:
        return [s.name for s in data.all()] if hasattr(data, "all") else super().to_representation(data)


class FreezeWindowSerializer(RefusesUnknownFields, serializers.ModelSerializer):
    start = AwareDateTimeField()
    end = AwareDateTimeField()
    servers = ServerNamesField(child=_server_name(), required=False, max_length=200)
    created_by = serializers.CharField(source="created_by.username", read_only=True)

    class Meta:
        model = FreezeWindow
        fields = ["id", "start", "end", "servers", "dag_name", "reason", "created_by", "created_at"]
        read_only_fields = ["id", "created_by", "created_at"]

    def to_representation(self, instance: FreezeWindow) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["servers"] = [s.name for s in instance.servers.all()]
        return data
