"""Settings, all from environment variables (see .env.example). Bad values fail at start-up."""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_int, env_list, env_secret, env_str, env_time, env_weekdays

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("EXMAINT_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = "insecure-dev-only-key-do-not-use-in-production"  # noqa: S105 - DEBUG only
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])

# Key(s) for the secrets stored encrypted (Fernet, urlsafe base64 of 32 bytes; a comma list, newest first, while
# rotating). In DEBUG a key derived from SECRET_KEY keeps the embedded defaults working; production sets its own.
FIELD_ENCRYPTION_KEY = env_secret("FIELD_ENCRYPTION_KEY")
if not FIELD_ENCRYPTION_KEY and not DEBUG:
    raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY is required when DEBUG is off")
if FIELD_ENCRYPTION_KEY:
    # A comma-separated list, newest first, during a key rotation (see changes/crypto.py and rotate_secrets).
    from changes.crypto import parse_keys

    try:
        if not parse_keys(FIELD_ENCRYPTION_KEY):
            raise ValueError("no key given")
    except ValueError as exc:
        raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEY: {exc}") from None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served by us: the docs page works offline
    "changes",
    "runner",
    "reports",
    "notifications",
    "devtools",
]

MIDDLEWARE = [
    "changes.api.middleware.RequestIdMiddleware",
    "changes.api.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS, Swagger UI) straight from gunicorn: no separate web server needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before CommonMiddleware, whose APPEND_SLASH would otherwise redirect (or fail) API URLs lacking the slash.
    "changes.api.middleware.ApiErrorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a lockout into its answer (changes.api.throttling.lockout_response).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

try:
    DATABASES = {
        "default": dj_database_url.parse(
            env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'exmaint.sqlite3'}"), conn_max_age=60
        )
    }
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from exc
# A persistent connection that died with the database (a restart, a fail-over) is checked and replaced at the start of
# each request or task rather than failing its first query (issue 24 item 2; the engine also retries its writes).
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Audit appends take a write lock up front; wait for it rather than failing with "database is locked".
    # WAL lets readers (the API, the admin) work while the engine commits, and synchronous=NORMAL makes each of the
    # engine's small per-step commits cheap; a power cut may lose the last commits, never corrupt the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Tests use a file too: an in-memory shared-cache database fails concurrent writers at once ("table is locked")
    # instead of waiting for the lock as the real file does, which is what the concurrency tests must exercise.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-exmaint.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Sign-in throttling and HTTPS ---------------------------------------------------------------------------------
# django-axes counts failed admin logins (its backend, first) and failed API tokens (changes.api.authentication).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("EXMAINT_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("EXMAINT_LOGIN_COOLOFF_MINUTES", 15, minimum=1, maximum=24 * 60))
# Per user name and address: a password guesser is stopped without letting anyone lock a colleague out from
# elsewhere. API tokens all count under one pseudo-user, so their failures are per client address.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "changes.api.throttling.client_ip"
AXES_LOCKOUT_CALLABLE = "changes.api.throttling.lockout_response"
AXES_VERBOSE = False
# Reverse proxies in front of the service whose X-Forwarded-For is trusted (0: use the connection's address).
EXMAINT_PROXY_COUNT = env_int("EXMAINT_PROXY_COUNT", 0, minimum=0, maximum=5)

# Production behind an HTTPS reverse proxy (which sets X-Forwarded-Proto): `manage.py check --deploy` is clean.
HTTPS = env_bool("EXMAINT_HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Load balancers and compose probe the health check over plain HTTP inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("EXMAINT_HSTS_SECONDS", 31536000, minimum=3600, maximum=63072000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("EXMAINT_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("EXMAINT_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading commits the whole parent domain to HTTPS in every browser: the organisation's decision, not
        # this service's, so --deploy's reminder (W021) is silenced unless EXMAINT_HSTS_PRELOAD=true.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_HTTPONLY = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
# Filled by `manage.py collectstatic` (docker-compose's web command, `make serve`); WhiteNoise serves it, compressed.
# Not the manifest storage: it would make every page fail until collectstatic has run.
STATIC_ROOT = Path(env_str("EXMAINT_STATIC_ROOT", str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Celery -------------------------------------------------------------------------------------------------------
# The embedded default is kombu's filesystem transport: no broker server needed.
_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or env_str("REDIS_URL") or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    for sub in ("out", "processed", "control"):
        (_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "out"),
        "data_folder_out": str(_BROKER_DIR / "out"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "control_folder": str(_BROKER_DIR / "control"),  # else kombu writes ./control in the working directory
        "store_processed": False,
    }
elif not CELERY_BROKER_URL.startswith(("redis://", "rediss://", "amqp://", "memory://")):
    raise ImproperlyConfigured(f"CELERY_BROKER_URL={CELERY_BROKER_URL!r} has an unsupported scheme")
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A held window waits for its window end in an ETA message; Redis would redeliver it after the default one-hour
    # visibility timeout (harmless thanks to the lease, but noisy).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 43200}
# Issue 24: a broker outage of any length is waited out; celery's default gives up after 100 retries (about 50 min
# at its 30 s cap) and the worker exits. The same on startup, so a worker started before Redis waits for it.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = env_str("EXMAINT_TASK_QUEUE", "exmaint")
CELERY_BEAT_SCHEDULE = {
    # Starts windows whose start message was lost, wakes held windows, recovers runs of dead workers.
    "start-due-windows": {"task": "runner.tasks.start_due_windows", "schedule": 60.0},
    # Often enough that a decision whose message was lost, or a dead worker's run (its lease expires after
    # EXMAINT_LEASE_SECONDS), is resumed within a minute.
    "resume-held-windows": {"task": "runner.tasks.resume_held_windows", "schedule": 10.0},
    # A window must never stall silently: decisions not taken up, stalled steps, lost workers (database reads only).
    "watch-runs": {"task": "runner.tasks.watch_runs", "schedule": 20.0},
    # A server must never silently stay in maintenance (reads every idle server through PowerShell).
    "watchdog": {"task": "runner.tasks.watchdog", "schedule": 300.0},
    # Sends due notifications: reminders, retries, rows queued while the broker was down, rows of dead workers.
    "notifications-dispatch-due": {"task": "notifications.tasks.dispatch_due", "schedule": 60.0},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# --- Business policy ------------------------------------------------------------------------------------------------
EXMAINT = {
    "APPROVALS_NORMAL_LOW": env_int("EXMAINT_APPROVALS_NORMAL_LOW", 1, minimum=1, maximum=10),
    "APPROVALS_NORMAL_MEDIUM": env_int("EXMAINT_APPROVALS_NORMAL_MEDIUM", 2, minimum=1, maximum=10),
    "APPROVALS_NORMAL_HIGH": env_int("EXMAINT_APPROVALS_NORMAL_HIGH", 2, minimum=1, maximum=10),
    "APPROVALS_EMERGENCY": env_int("EXMAINT_APPROVALS_EMERGENCY", 1, minimum=1, maximum=10),
    "MAX_WINDOW_MINUTES": env_int("EXMAINT_MAX_WINDOW_MINUTES", 8 * 60, minimum=15, maximum=7 * 24 * 60),
    "BUSINESS_HOURS_START": env_time("EXMAINT_BUSINESS_HOURS_START", "08:00"),
    "BUSINESS_HOURS_END": env_time("EXMAINT_BUSINESS_HOURS_END", "18:00"),
    "BUSINESS_DAYS": env_weekdays("EXMAINT_BUSINESS_DAYS", "1,2,3,4,5"),
    "BUSINESS_TIME_ZONE": env_str("EXMAINT_BUSINESS_TIME_ZONE", "UTC"),
    # The runner.
    # Renewed by a heartbeat every third of it, so it can be short: a dead worker's run is taken over once it ends.
    "LEASE_SECONDS": env_int("EXMAINT_LEASE_SECONDS", 30, minimum=5, maximum=3600),
    "WATCHDOG_GRACE_MINUTES": env_int("EXMAINT_WATCHDOG_GRACE_MINUTES", 30, minimum=0, maximum=1440),
    "WATCHDOG_STALL_GRACE_SECONDS": env_int("EXMAINT_WATCHDOG_STALL_GRACE_SECONDS", 120, minimum=0, maximum=86400),
    "EXIT_RETRY_ATTEMPTS": env_int("EXMAINT_EXIT_RETRY_ATTEMPTS", 4, minimum=1, maximum=20),
    "ALLOW_UNENCRYPTED_BASIC": env_bool("EXMAINT_ALLOW_UNENCRYPTED_BASIC", False),
    # Kerberos: the realm appended to bare user names (empty: krb5.conf's default_realm) and a krb5.conf other than
    # /etc/krb5.conf (exported as KRB5_CONFIG, which libkrb5 reads). TLS: the CA bundle for https endpoints (empty:
    # the operating system's store); a server's own tls_ca_bundle wins.
    "KERBEROS_REALM": env_str("EXMAINT_KERBEROS_REALM", "") or "",
    "KRB5_CONFIG": env_str("EXMAINT_KRB5_CONFIG", "") or "",
    "TLS_CA_BUNDLE": env_str("EXMAINT_TLS_CA_BUNDLE", "") or "",
    "RUNNER_CLOCK": env_str("EXMAINT_RUNNER_CLOCK", "real"),  # "real" | "scaled:<speed>" (demo)
    # How long a newly issued or rotated API token is valid (changes.tokens).
    "API_TOKEN_DAYS": env_int("EXMAINT_API_TOKEN_DAYS", 90, minimum=1, maximum=3650),
}
if EXMAINT["BUSINESS_HOURS_END"] <= EXMAINT["BUSINESS_HOURS_START"]:
    raise ImproperlyConfigured("EXMAINT_BUSINESS_HOURS_END must be after EXMAINT_BUSINESS_HOURS_START")
try:
    from runner.clock import parse_clock

    parse_clock(EXMAINT["RUNNER_CLOCK"])
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None
try:
    import zoneinfo

    zoneinfo.ZoneInfo(EXMAINT["BUSINESS_TIME_ZONE"])
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(f"EXMAINT_BUSINESS_TIME_ZONE={EXMAINT['BUSINESS_TIME_ZONE']!r} is unknown") from None

# --- Audit chain anchors outside PostgreSQL (changes/anchors.py, docs/audit-trail.md) --------------------------------
EXMAINT_AUDIT_ANCHORS = {
    # Anchor the chain head every N events (and at every window's end, and for every report).
    "EVERY": env_int("EXMAINT_AUDIT_ANCHOR_EVERY", 1000, minimum=1, maximum=10_000_000),
    # Append-only JSON lines, fsync'd ("off": no file). Put it where the database's owner cannot write.
    "FILE": "" if env_str("EXMAINT_AUDIT_ANCHOR_FILE", "") == "off"
    else env_str("EXMAINT_AUDIT_ANCHOR_FILE", "") or str(VAR_DIR / "audit-anchors.jsonl"),
    # Syslog: a socket path (/dev/log) or host:port (UDP); "" turns it off.
    "SYSLOG": env_str("EXMAINT_AUDIT_ANCHOR_SYSLOG", "") or "",
    # An RFC 3161 time-stamping authority; "" stamps nothing.
    "TSA_URL": env_str("EXMAINT_TSA_URL", "") or "",
    "TSA_TIMEOUT_SECONDS": env_int("EXMAINT_TSA_TIMEOUT_SECONDS", 10, minimum=1, maximum=120),
    # PEM file of the TSA's trust roots, used by verify_audit --anchors to check the tokens.
    "TSA_ROOTS": env_str("EXMAINT_TSA_ROOTS", "") or "",
}
if EXMAINT_AUDIT_ANCHORS["TSA_URL"] and not EXMAINT_AUDIT_ANCHORS["TSA_URL"].startswith(("http://", "https://")):
    raise ImproperlyConfigured("EXMAINT_TSA_URL must be an http:// or https:// URL")

# --- Notifications: e-mail (SMTP), calendar invites, signed ITSM callbacks -----------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are mutually exclusive")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1, maximum=600)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "exmaint <exmaint@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EXMAINT_NOTIFICATIONS = {
    "PUBLIC_URL": env_str("EXMAINT_PUBLIC_URL", "http://localhost:8000"),
    "BATCH_SIZE": env_int("EXMAINT_NOTIFY_BATCH_SIZE", 50, minimum=1, maximum=500),
    "REMINDER_MINUTES": env_list("EXMAINT_NOTIFY_REMINDER_MINUTES", ["1440", "60"]),
    "EMAIL_RETRY_HOURS": env_int("EXMAINT_NOTIFY_RETRY_HOURS", 24, minimum=1, maximum=168),
    "CALLBACK_RETRY_HOURS": env_int("EXMAINT_CALLBACK_RETRY_HOURS", 24, minimum=1, maximum=168),
    "BACKOFF_SECONDS": env_int("EXMAINT_NOTIFY_BACKOFF_SECONDS", 30, minimum=1, maximum=3600),
    "BACKOFF_MAX_SECONDS": env_int("EXMAINT_NOTIFY_BACKOFF_MAX_SECONDS", 3600, minimum=1, maximum=86400),
    "LEASE_SECONDS": env_int("EXMAINT_NOTIFY_LEASE_SECONDS", 300, minimum=30, maximum=3600),
    "CALLBACK_TIMEOUT_SECONDS": env_int("EXMAINT_CALLBACK_TIMEOUT_SECONDS", 10, minimum=1, maximum=120),
    "CALLBACK_ALLOWED_NETWORKS": env_list("EXMAINT_CALLBACK_ALLOWED_NETWORKS", []),
    "MAILBOX_LIMIT": env_int("EXMAINT_NOTIFY_MAILBOX_LIMIT", 5000, minimum=1, maximum=100000),
    "MAILBOX_PAGE_SIZE": env_int("EXMAINT_NOTIFY_MAILBOX_PAGE_SIZE", 200, minimum=1, maximum=5000),
    "CALENDAR_PAST_DAYS": env_int("EXMAINT_CALENDAR_PAST_DAYS", 30, minimum=0, maximum=3650),
}
try:
    import ipaddress as _ipaddress

    EXMAINT_NOTIFICATIONS["REMINDER_MINUTES"] = [int(m) for m in EXMAINT_NOTIFICATIONS["REMINDER_MINUTES"]]
    if any(m <= 0 for m in EXMAINT_NOTIFICATIONS["REMINDER_MINUTES"]):
        raise ValueError("EXMAINT_NOTIFY_REMINDER_MINUTES must be positive minutes, e.g. 1440,60")
    for _net in EXMAINT_NOTIFICATIONS["CALLBACK_ALLOWED_NETWORKS"]:
        _ipaddress.ip_network(_net, strict=False)
except ValueError as exc:
    raise ImproperlyConfigured(f"notification settings: {exc}") from None
if EXMAINT["KRB5_CONFIG"]:
    if not Path(EXMAINT["KRB5_CONFIG"]).is_file():
        raise ImproperlyConfigured(f"EXMAINT_KRB5_CONFIG={EXMAINT['KRB5_CONFIG']!r} is not a file")
    os.environ["KRB5_CONFIG"] = EXMAINT["KRB5_CONFIG"]
if EXMAINT["TLS_CA_BUNDLE"] and not Path(EXMAINT["TLS_CA_BUNDLE"]).is_file():
    raise ImproperlyConfigured(f"EXMAINT_TLS_CA_BUNDLE={EXMAINT['TLS_CA_BUNDLE']!r} is not a file")

# The report-signing certificate (PEM: the certificate, then its chain) and its private key (PEM, normally encrypted
# with EXMAINT_REPORT_SIGNING_KEY_PASSWORD, a secret). Unset: reports are not signed, and say so. The TSA time-stamps
# the signature when set. Rotation: README, "For auditors".
EXMAINT_REPORTS = {
    "SIGNING_CERT": env_str("EXMAINT_REPORT_SIGNING_CERT", "") or "",
    "SIGNING_KEY": env_str("EXMAINT_REPORT_SIGNING_KEY", "") or "",
    "SIGNING_KEY_PASSWORD": env_secret("EXMAINT_REPORT_SIGNING_KEY_PASSWORD") or "",
    "TSA_URL": env_str("EXMAINT_TSA_URL", "") or "",
}
if bool(EXMAINT_REPORTS["SIGNING_CERT"]) != bool(EXMAINT_REPORTS["SIGNING_KEY"]):
    raise ImproperlyConfigured("EXMAINT_REPORT_SIGNING_CERT and EXMAINT_REPORT_SIGNING_KEY go together")
for _name in ("SIGNING_CERT", "SIGNING_KEY"):
    if EXMAINT_REPORTS[_name] and not Path(EXMAINT_REPORTS[_name]).is_file():
        raise ImproperlyConfigured(f"EXMAINT_REPORT_{_name}={EXMAINT_REPORTS[_name]!r} is not a file")

if EXMAINT_NOTIFICATIONS["LEASE_SECONDS"] <= 2 * EMAIL_TIMEOUT:
    # A live worker blocked in SMTP must never lose its lease to a second worker (that could send a batch twice).
    raise ImproperlyConfigured("EXMAINT_NOTIFY_LEASE_SECONDS must be more than twice EMAIL_TIMEOUT")

# --- REST framework -------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "changes.api.authentication.TokenOrBearerAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "changes.api.pagination.LimitOffsetOrPageSize",
    "PAGE_SIZE": env_int("EXMAINT_PAGE_SIZE", 50, minimum=1, maximum=1000),
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "changes.api.errors.exception_handler",
    "DEFAULT_PARSER_CLASSES": ["changes.api.parsers.SafeJSONParser"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "exmaint API",
    "DESCRIPTION": "Change-managed maintenance windows for Microsoft Exchange Server.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # risk and impact share one choice set; so do the two endpoints' auth methods.
    "ENUM_NAME_OVERRIDES": {"LevelEnum": "changes.models.Change.Level",
                            "AuthMethodEnum": "changes.models.Server.AuthMethod",
                            "StateEnum": "changes.states.State",
                            "StepStatusEnum": "changes.step_states.StepStatus",
                            "DeliveryStatusEnum": "notifications.models.Delivery.Status"},
    # The error shape on every operation, X-Request-ID on every response, closed request bodies: changes/api/schema.py
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "changes.api.schema.postprocess"],
    # The calendar feed's secret ?key= (notifications.api.calendar_feed), an alternative to the token.
    "APPEND_COMPONENTS": {"securitySchemes": {"calendarKey": {
        "type": "apiKey", "in": "query", "name": "key",
        "description": "The per-user secret calendar feed key (POST /api/v1/calendar/key/ makes one)"}}},
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # At DEBUG these libraries log whole WS-Man messages, parameter values (credentials) included; at INFO they log
    # every pipeline. Our own runner logs each command, redacted.
    "loggers": {
        name: {"level": "WARNING", "handlers": ["console"], "propagate": False}
        for name in ("pypsrp", "psrpcore", "spnego", "requests_ntlm", "urllib3")
    },
}
