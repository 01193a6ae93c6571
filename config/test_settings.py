"""Settings for the test run: the real settings module with test-only secrets supplied (DEBUG stays off, as in
production). Everything else — DATABASE_URL, CELERY_BROKER_URL — still comes from the environment."""
import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("FIELD_ENCRYPTION_KEY", "dGVzdC1vbmx5LWtleS10ZXN0LW9ubHkta2V5LTMyYiE=")  # test-only Fernet key

from .settings import *  # noqa: E402, F403
