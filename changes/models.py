"""The domain's tables. State is assigned only by changes.services; audit rows only by changes.audit."""
from __future__ import annotations

import base64

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Lower, Upper

from . import crypto
from .states import State
from .step_states import StepStatus


class Role(models.TextChoices):
    """Roles are Django groups of these names."""

    REQUESTER = "requester", "Requester"
    APPROVER = "approver", "Approver"
    OPERATOR = "operator", "Operator"
    AUDITOR = "auditor", "Auditor"


class ApiClient(models.Model):
    """An integration identity (ServiceNow, Jira Service Management, …): a user with a token and a source system."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_client")
    source = models.CharField(max_length=40, blank=True, help_text="Source system whose changes it may read.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.user.username


TIMEOUT_RANGE = [MinValueValidator(1), MaxValueValidator(3600)]

# The one rule for server names, used by the model (so the admin's form), the API's serializers and the inventory
# service: a NetBIOS name. Names reach PowerShell as parameters, so nothing else is allowed in.
validate_server_name = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}\Z",
    "Enter a NetBIOS server name: 1 to 15 letters, digits or hyphens, not starting with a hyphen (e.g. EX01).",
    code="invalid_server_name",
)


class Server(models.Model):
    """An Exchange server in the inventory. The password is write-only: stored encrypted, never returned."""

    # What the API, the admin and the inventory service let people edit (the password goes its own way).
    EDITABLE_FIELDS = (
        "name", "fqdn", "dag_name", "ad_site", "version", "build", "endpoint_url", "winrm_url", "auth_method",
        "verify_tls", "connection_timeout", "operation_timeout", "winrm_auth_method", "winrm_verify_tls",
        "winrm_connection_timeout", "winrm_operation_timeout", "username", "tls_ca_bundle", "install_username",
    )

    class AuthMethod(models.TextChoices):
        KERBEROS = "kerberos"
        NTLM = "ntlm"
        NEGOTIATE = "negotiate"
        BASIC = "basic"

    name = models.CharField(max_length=15, unique=True, validators=[validate_server_name],
                            help_text="NetBIOS name, e.g. EX01. Fixed once a change names the server.")
    fqdn = models.CharField(max_length=255)
    # The issue and the API say "null for a standalone server"; NULL also keeps DAG lookups free of "" matches.
    dag_name = models.CharField(max_length=64, null=True, blank=True, help_text="Empty for a standalone server.")  # noqa: DJ001
    ad_site = models.CharField(max_length=64, blank=True)
    version = models.CharField(max_length=64, blank=True, help_text="e.g. Exchange Server 2019 CU14")
    build = models.CharField(max_length=32, blank=True, help_text="e.g. 15.2.1544.4")
    endpoint_url = models.URLField(max_length=500, blank=True, help_text="Default: http://FQDN/PowerShell/")
    winrm_url = models.URLField(max_length=500, blank=True, help_text="Default: http://FQDN:5985/wsman")
    # How to reach the Exchange endpoint (endpoint_url); the default WinRM endpoint (winrm_url) uses the same unless
    # its own winrm_* setting is given: the two are often set up differently (e.g. Kerberos over HTTP to IIS's
    # /PowerShell, NTLM over HTTPS with an internal CA to 5986).
    auth_method = models.CharField(max_length=10, choices=AuthMethod.choices, default=AuthMethod.KERBEROS)
    verify_tls = models.BooleanField(default=True, help_text="Validate the TLS certificate of an https URL")
    connection_timeout = models.PositiveIntegerField(default=30, validators=TIMEOUT_RANGE, help_text="Seconds")
    operation_timeout = models.PositiveIntegerField(
        default=30, validators=TIMEOUT_RANGE, help_text="Seconds a WinRM operation (a Receive's long poll) may take")
    winrm_auth_method = models.CharField(max_length=10, choices=AuthMethod.choices, blank=True,
                                         help_text="Empty: as the Exchange endpoint")
    winrm_verify_tls = models.BooleanField(null=True, blank=True,
                                           help_text="Empty: as the Exchange endpoint")
    winrm_connection_timeout = models.PositiveIntegerField(
        null=True, blank=True, validators=TIMEOUT_RANGE, help_text="Seconds; empty: as the Exchange endpoint")
    winrm_operation_timeout = models.PositiveIntegerField(
        null=True, blank=True, validators=TIMEOUT_RANGE, help_text="Seconds; empty: as the Exchange endpoint")
    username = models.CharField(max_length=150, blank=True)
    password_encrypted = models.TextField(blank=True, editable=False)
    # A Kerberos keytab for the service account instead of its password (export with ktpass or ktutil), stored
    # encrypted like the password and never returned; the runner loads it into memory only (docs/kerberos.md).
    kerberos_keytab_encrypted = models.TextField(blank=True, editable=False)
    # The account an Exchange update's scheduled task runs as (a CU needs a domain account in Organization
    # Management; docs/exchange-install.md). Its password is write-only and encrypted like the server's.
    install_username = models.CharField(max_length=150, blank=True,
                                        help_text="DOMAIN\\user that runs Exchange setup; empty: the server's username")
    install_password_encrypted = models.TextField(blank=True, editable=False)
    tls_ca_bundle = models.CharField(
        max_length=500, blank=True, verbose_name="TLS CA bundle",
        help_text="PEM file of the CAs that sign this server's certificates; empty: EXMAINT_TLS_CA_BUNDLE, else the "
                  "system store")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Upper("name"), name="server_name_unique_any_case")]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_endpoint_url(self) -> str:
        return self.endpoint_url or f"http://{self.fqdn}/PowerShell/"

    @property
    def effective_winrm_url(self) -> str:
        return self.winrm_url or f"http://{self.fqdn}:5985/wsman"

    @property
    def has_password(self) -> bool:
        return bool(self.password_encrypted)

    def set_password(self, raw: str) -> None:
        self.password_encrypted = crypto.encrypt(raw) if raw else ""

    def get_password(self) -> str:
        return crypto.decrypt(self.password_encrypted) if self.password_encrypted else ""

    @property
    def has_install_password(self) -> bool:
        return bool(self.install_password_encrypted)

    def set_install_password(self, raw: str) -> None:
        self.install_password_encrypted = crypto.encrypt(raw) if raw else ""

    def get_install_password(self) -> str:
        return crypto.decrypt(self.install_password_encrypted) if self.install_password_encrypted else ""

    @property
    def has_keytab(self) -> bool:
        return bool(self.kerberos_keytab_encrypted)

    def set_keytab(self, raw: bytes | None) -> None:
        self.kerberos_keytab_encrypted = crypto.encrypt(base64.b64encode(raw).decode()) if raw else ""

    def get_keytab(self) -> bytes | None:
        return base64.b64decode(crypto.decrypt(self.kerberos_keytab_encrypted)) if self.has_keytab else None

    @property
    def tls_warnings(self) -> list[str]:
        """Endpoints reached over https without checking the certificate: shown in the admin, the API, reports."""
        warnings = []
        if self.verify_tls is False and self.effective_endpoint_url.startswith("https:"):
            warnings.append(f"{self.name}: TLS certificate validation is off for the Exchange endpoint")
        winrm_verify = self.verify_tls if self.winrm_verify_tls is None else self.winrm_verify_tls
        if winrm_verify is False and self.effective_winrm_url.startswith("https:"):
            warnings.append(f"{self.name}: TLS certificate validation is off for the WinRM endpoint")
        return warnings


def default_work() -> dict:
    return {"kind": "hold"}


class Change(models.Model):
    """A change request for Exchange maintenance, posted by an ITSM and driven through the lifecycle in states.py."""

    class ChangeType(models.TextChoices):
        STANDARD = "standard"
        NORMAL = "normal"
        EMERGENCY = "emergency"

    class Level(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"

    class CloseCode(models.TextChoices):
        SUCCESSFUL = "successful"
        SUCCESSFUL_WITH_ISSUES = "successful_with_issues"
        UNSUCCESSFUL = "unsuccessful"

    source = models.CharField(max_length=40)
    external_ref = models.CharField(max_length=100)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    change_type = models.CharField(max_length=10, choices=ChangeType.choices)
    risk = models.CharField(max_length=6, choices=Level.choices)
    impact = models.CharField(max_length=6, choices=Level.choices)
    servers = models.ManyToManyField(Server, related_name="changes")
    plan = models.CharField(max_length=64, default="maintenance")
    # What the work phase does (changes.work): hold (default), reboot or exchange-update; checked by normalize_work.
    work = models.JSONField(default=default_work, blank=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    requested_by = models.CharField(max_length=254, help_text="The person named by the ITSM.")
    notify = models.JSONField(default=list, blank=True)
    callback_url = models.URLField(max_length=500, blank=True)
    notify_affected_mailboxes = models.BooleanField(
        default=False, help_text="Also notify the users of the mailboxes on the servers (read from Exchange).")
    # The catalogue entry a standard change fits (changes.catalogue), by its name: names are fixed once created and
    # entries are deactivated, never deleted, so the name keeps pointing at what was pre-approved.
    standard_template = models.CharField(max_length=64, blank=True,
                                         help_text="The standard-change template (catalogue entry) it fits.")
    state = models.CharField(max_length=20, choices=State.choices, default=State.AWAITING_APPROVAL, editable=False)
    approvals_required = models.PositiveSmallIntegerField(default=0, editable=False)
    business_hours_warning = models.BooleanField(default=False, editable=False)
    freeze_override_reason = models.TextField(blank=True, editable=False)
    close_code = models.CharField(max_length=24, choices=CloseCode.choices, blank=True, editable=False)
    close_notes = models.TextField(blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="created_changes", editable=False
    )
    # SHA-256 of the create payload: the same payload again is the same change, a different one is a conflict.
    request_digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "change request"
        constraints = [
            models.UniqueConstraint(fields=["source", "external_ref"], name="change_unique_external_ref"),
            models.CheckConstraint(condition=models.Q(window_end__gt=models.F("window_start")), name="window_ordered"),
        ]
        indexes = [models.Index(fields=["state", "window_start"])]

    def __str__(self) -> str:
        return f"{self.number} {self.title}"

    @property
    def number(self) -> str:
        return f"EXM-{self.pk:06d}" if self.pk else "EXM-(new)"


class Approval(models.Model):
    """One approver's decision on one version (fingerprint) of a change. Voided when what was approved changes."""

    class Decision(models.TextChoices):
        APPROVED = "approved"
        REJECTED = "rejected"

    change = models.ForeignKey(Change, on_delete=models.PROTECT, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approvals")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField()
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    voided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.decision} by {self.approver} on {self.change.number}"


class Identity(models.Model):
    """One person (or integration) as separation of duties sees it: a user and every name the ITSM may use for it.

    Filled automatically from the user's name and e-mail (``changes.identities``); admins add the other names
    (UPN, sAMAccountName, DOMAIN\\user) as aliases. Compared by ``changes.authority``, never by plain strings."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identity")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "identities"

    def __str__(self) -> str:
        return self.user.get_username()


class IdentityAlias(models.Model):
    """A name for one identity: unique across identities without case, so a name never means two people."""

    class Kind(models.TextChoices):
        USERNAME = "username", "User name"
        EMAIL = "email", "E-mail"
        UPN = "upn", "User principal name"
        SAM = "sam", "DOMAIN\\sAMAccountName"
        OTHER = "other", "Other"

    identity = models.ForeignKey(Identity, on_delete=models.CASCADE, related_name="aliases")
    value = models.CharField(max_length=254)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.OTHER)
    # Derived from the user's name or e-mail and kept in step with them; admin-added aliases are not.
    automatic = models.BooleanField(default=False, editable=False)

    class Meta:
        verbose_name_plural = "identity aliases"
        constraints = [models.UniqueConstraint(Lower("value"), name="identity_alias_unique_any_case")]

    def __str__(self) -> str:
        return self.value


class FreezeWindow(models.Model):
    """A period when no maintenance may run: everywhere, or only on some servers or one DAG."""

    start = models.DateTimeField()
    end = models.DateTimeField()
    servers = models.ManyToManyField(Server, blank=True, related_name="freeze_windows")
    dag_name = models.CharField(max_length=64, blank=True)
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["start"]
        constraints = [models.CheckConstraint(condition=models.Q(end__gt=models.F("start")), name="freeze_ordered")]

    def __str__(self) -> str:
        return f"Freeze {self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M}: {self.reason[:40]}"


class StepRun(models.Model):
    """One step of a maintenance window as the runner executed it (filled by the runner)."""

    class Phase(models.TextChoices):
        PRECHECK = "precheck"
        ENTER = "enter"
        WORK = "work"
        EXIT = "exit"
        VERIFY = "verify"

    # The lifecycle is data in step_states.py; only the engine and the operator's decision move it, through
    # step_next().
    Status = StepStatus

    # A change's current step, for live progress: the one running, or the failed one awaiting a decision.
    CURRENT_STATUSES = (Status.RUNNING, Status.FAILED)

    change = models.ForeignKey(Change, on_delete=models.PROTECT, related_name="steps")
    order = models.PositiveIntegerField()
    phase = models.CharField(max_length=10, choices=Phase.choices)
    key = models.CharField(max_length=100, blank=True, help_text="The plan's step key, e.g. enter.hub_draining.")
    name = models.CharField(max_length=100)
    idempotent = models.BooleanField(default=True)
    skippable = models.BooleanField(default=True, help_text="May an operator skip it after a failure?")
    mutating = models.BooleanField(default=True)
    server = models.ForeignKey(Server, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    commands = models.JSONField(default=list, blank=True, help_text="Cmdlets with parameters, secrets redacted.")
    output_summary = models.TextField(blank=True)
    findings = models.JSONField(default=dict, blank=True, help_text="Structured results (pre-checks, snapshots).")
    issues = models.JSONField(default=list, blank=True, help_text="Anomalies met: [{summary, resolution, automatic}]")
    error = models.TextField(blank=True)
    decision = models.CharField(max_length=10, blank=True, help_text="Operator decision: retry, skip or abort.")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolution = models.TextField(blank=True)
    # The step's own time limit as the plan declares it; the watchdog calls a step running past it (plus a grace)
    # stalled. Empty on rows written before it was recorded: the watchdog then assumes the plans' default.
    timeout_s = models.PositiveIntegerField(null=True, blank=True, help_text="The step's own time limit (s).")

    class Meta:
        ordering = ["change", "order"]
        constraints = [models.UniqueConstraint(fields=["change", "order"], name="step_unique_order")]

    def __str__(self) -> str:
        return f"{self.order}. {self.phase}/{self.name}"


class Pause(models.Model):
    """One stop of a window for an operator, and the operator's answer: the engine → report contract.

    Written by ``changes.run_services.change_pause`` (the engine) and ``change_resume`` (the decision), each in the
    transaction of its state change; the report, the admin and the notifications read these fields, never the prose
    of an audit reason. Shape:

    - ``code`` (``Pause.Reason``) why the engine stopped; ``step`` and ``server`` where (either may be empty: a plan
      that cannot be built has no step);
    - ``message`` the sentence people read (the same text is the transition's audit reason and the alert);
    - ``evidence`` the failing attempt's structured findings (JSON, as the step raised them; ``{}`` when none): a
      retried step's row keeps only its last attempt, this keeps what the operator decided on;
    - ``paused_seq`` / ``decided_seq`` the audit events of the pause and of the decision, so a report built to an
      older audit head leaves later pauses and decisions out;
    - ``decision`` (``Pause.Decision``), ``decided_by`` (a user; ``decided_by_label`` is the actor as the audit trail
      names it), ``decided_at`` and ``decision_reason``: empty until an operator answers.
    """

    class Reason(models.TextChoices):
        STEP_FAILED = "step_failed", "A step's check failed"
        GATE_REFUSED = "gate_refused", "A pre-check refused the window"
        UNREACHABLE = "unreachable", "The server could not be reached"
        REMOTING_FAILED = "remoting_failed", "The server answered but remoting failed"
        HALF_DONE = "half_done", "A step was found half-done after a worker crash"
        HOLD_OVERDUE = "hold_overdue", "A step held past its time"
        INTERNAL_ERROR = "internal_error", "A step raised an unexpected error"
        PLAN_UNAVAILABLE = "plan_unavailable", "The plan cannot be built or lost the step"
        UNRESOLVED_FAILURE = "unresolved_failure", "A failed step awaits a decision"
        UNRECORDED = "unrecorded", "Paused without a recorded reason"

    class Decision(models.TextChoices):
        RETRY = "retry"
        SKIP = "skip"
        ABORT = "abort"

    change = models.ForeignKey(Change, on_delete=models.PROTECT, related_name="pauses")
    code = models.CharField(max_length=24, choices=Reason.choices)
    step = models.ForeignKey(StepRun, on_delete=models.PROTECT, null=True, blank=True, related_name="pauses")
    server = models.ForeignKey(Server, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    message = models.TextField(blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    paused_at = models.DateTimeField()
    paused_seq = models.PositiveBigIntegerField(null=True, blank=True)
    decision = models.CharField(max_length=10, choices=Decision.choices, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_by_label = models.CharField(max_length=160, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_seq = models.PositiveBigIntegerField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["change", "paused_seq", "id"]

    def __str__(self) -> str:
        return f"{self.change.number} paused: {self.code}"


class WindowRun(models.Model):
    """The runner's persisted view of one maintenance window: which plan, what it saved (snapshot, activation
    policy, votes it set), who holds the run, and the operator's reports. One per change."""

    change = models.OneToOneField(Change, on_delete=models.PROTECT, related_name="run")
    plan = models.CharField(max_length=64)
    variant = models.CharField(max_length=32, blank=True)
    options = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True, help_text="Plan state kept between steps (ctx.state).")
    aborting = models.BooleanField(default=False, help_text="An operator chose abort: run the exit path, then end.")
    # The lock: one worker runs a change at a time; an expired lease may be taken over (crashed worker).
    lock_owner = models.CharField(max_length=200, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)
    wake_at = models.DateTimeField(null=True, blank=True, help_text="A held step runs again at this time.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    work_done_at = models.DateTimeField(null=True, blank=True)
    work_done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    work_notes = models.TextField(blank=True)
    # An operator's decision (start, retry/skip/abort, work-done) is recorded here in the same transaction as the
    # decision itself; the queued task is only the fast path. Cleared when a worker takes the run's lease (it then
    # reads the decision) or releases it; until then the sweep queues the run and the watchdog alerts after a minute.
    decision_waiting_since = models.DateTimeField(
        null=True, blank=True, help_text="An operator's decision waits for the runner since then.")

    def __str__(self) -> str:
        return f"run of {self.change.number}"


class Alert(models.Model):
    """Something a person must look at: a window overrunning, a server left in maintenance, a paused window."""

    class Kind(models.TextChoices):
        OVERRUN = "overrun", "Window still active past its end"
        LEFT_IN_MAINTENANCE = "left_in_maintenance", "Server in maintenance with no running change"
        UNREACHABLE = "unreachable", "Server unreachable"
        PAUSED = "paused", "Window paused for an operator"
        PRECHECK_BLOCKED = "precheck_blocked", "A pre-check blocked the window"
        NOT_STARTED = "not_started", "The window could not start"
        NOTIFICATION_FAILED = "notification_failed", "A notification could not be sent"
        DECISION_WAITING = "decision_waiting", "An operator's decision waits for the runner"
        PAST_WINDOW_END = "past_window_end", "Server still in maintenance past its window end"
        STEP_STALLED = "step_stalled", "A running step makes no progress past its timeout"
        WORKER_LOST = "worker_lost", "The run's worker no longer heartbeats"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    change = models.ForeignKey(Change, on_delete=models.PROTECT, null=True, blank=True, related_name="alerts")
    server = models.ForeignKey(Server, on_delete=models.PROTECT, null=True, blank=True, related_name="alerts")
    message = models.TextField()
    raised_at = models.DateTimeField(auto_now_add=True)
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"


class AuditEvent(models.Model):
    """Append-only, hash-chained record of everything that happened. Written only through changes.audit.append."""

    seq = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor = models.CharField(max_length=160, help_text="user:<name>, client:<name> or system:<component>")
    request_id = models.CharField(max_length=64, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=64)
    changes = models.JSONField(default=dict, help_text="Changed fields: {field: [before, after]}")
    reason = models.TextField(blank=True)
    prev_hash = models.CharField(max_length=64)
    # The change's own chain: the hash of the same change's previous event (GENESIS for its first), so one change's
    # events prove their completeness and order without the other changes' events (the report's evidence). Null for
    # events of other objects and for events written before the column existed; hashed only when set.
    change_prev_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 - null: not hashed
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_type}:{self.object_id}"


class AuditHead(models.Model):
    """One row: the newest event's seq and hash, written with every append. Deleting events from the end of the chain
    leaves a valid-looking shorter chain; this anchor (guarded on PostgreSQL: its seq may only grow) exposes it."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.PositiveBigIntegerField()
    hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"head #{self.seq}"


class ApiToken(models.Model):
    """A user's API token, stored as the SHA-256 of the key only: the key is shown once, when it is issued
    (changes.tokens), and cannot be read back from the database or the admin. One per user; rotating replaces it,
    which invalidates the old key at once. Expired keys are refused."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_token")
    prefix = models.CharField(max_length=12, help_text="The key's first characters, to recognise it (not secret).")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the key, hex.")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class StandardChangeTemplate(models.Model):
    """An entry of the standard-change catalogue: work pre-approved once (by an approver, recorded with the time) for
    the servers and DAGs listed, with one plan and a maximum risk. A standard change names one and must fit it
    (changes.catalogue); only such changes run without approvals. High risk is never standard."""

    class MaxRisk(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"

    name = models.CharField(max_length=64, unique=True, validators=[RegexValidator(
        r"^[a-z0-9][a-z0-9_-]*\Z", "Lower-case letters, digits, '-' and '_' (e.g. monthly-security-update).")],
        help_text="What a standard change names in standard_template; fixed once created.")
    work = models.CharField(max_length=200, help_text="The pre-approved work, e.g. the monthly Windows security "
                                                      "update with a restart; printed in the report.")
    description = models.TextField(blank=True)
    plan = models.CharField(max_length=64, default="maintenance", help_text="The plan a fitting change runs.")
    servers = models.ManyToManyField(Server, blank=True, related_name="+", help_text="Servers it may run on.")
    dag_names = models.JSONField(default=list, blank=True, help_text="DAGs whose members it may run on.")
    max_risk = models.CharField(max_length=6, choices=MaxRisk.choices, default=MaxRisk.LOW)
    active = models.BooleanField(default=True, help_text="Inactive entries cannot be named by new standard changes.")
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+",
                                    editable=False)
    approved_at = models.DateTimeField(editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "standard-change template"
        constraints = [models.CheckConstraint(condition=models.Q(max_risk__in=["low", "medium"]),
                                              name="standard_template_never_high_risk")]

    def __str__(self) -> str:
        return self.name
class AuditAnchor(models.Model):
    """A chain head written outside PostgreSQL (changes/anchors.py): the event's seq and hash, when, why, the sinks
    it reached and the RFC 3161 token when a TSA stamped it. This row is a convenience for the report and the admin;
    ``verify_audit --anchors`` trusts only the external copy (someone who can rewrite the chain can rewrite this)."""

    seq = models.PositiveBigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    event_created_at = models.DateTimeField()
    created_at = models.DateTimeField(help_text="When the anchor was written")
    reason = models.CharField(max_length=120)
    sinks = models.JSONField(default=list, help_text="The sinks written: file, syslog, email")
    tsa_token = models.BinaryField(blank=True, default=b"", help_text="DER RFC 3161 TimeStampToken (empty: none)")
    tsa_time = models.DateTimeField(null=True, blank=True, help_text="genTime of the TSA token")

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"anchor #{self.seq}"
