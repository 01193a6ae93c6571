"""The test settings with the notifications app wired as the lead will wire it: for the subprocess workers of
test_worker_kill.py and for ``pytest --ds tests.notifications.settings``. The workers get the test's SMTP port and
a short lease from the environment."""
import os

from config.test_settings import *  # noqa: F403

if "notifications" not in INSTALLED_APPS:  # noqa: F405
    INSTALLED_APPS = [*INSTALLED_APPS, "notifications"]  # noqa: F405
if os.environ.get("EXMAINT_TEST_SMTP_PORT"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST, EMAIL_PORT, EMAIL_TIMEOUT = "127.0.0.1", int(os.environ["EXMAINT_TEST_SMTP_PORT"]), 60
    DEFAULT_FROM_EMAIL = "exmaint <exmaint@example.com>"
EXMAINT_NOTIFICATIONS = {"BATCH_SIZE": 10, "LEASE_SECONDS": int(os.environ.get("EXMAINT_TEST_LEASE_SECONDS", "300")),
                         "CALLBACK_ALLOWED_NETWORKS": ["127.0.0.1/32"]}
