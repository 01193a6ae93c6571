"""Settings for the test run: the real settings module with test-only secrets supplied (DEBUG stays off, as in
production). Everything else — DATABASE_URL, CELERY_BROKER_URL — still comes from the environment."""
import os
import tempfile
import uuid

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
# Each test session gets its own var/ (SQLite file, filesystem broker) and its own Celery queue, so messages left
# behind by one run are never consumed by another run's worker.
os.environ.setdefault("EXMAINT_VAR_DIR", tempfile.mkdtemp(prefix="exmaint-test-"))
os.environ.setdefault("EXMAINT_TASK_QUEUE", f"exmaint-test-{uuid.uuid4().hex[:12]}")
# Under pytest-xdist every worker process is a session of its own, but it inherits the environment of the controller,
# which imported these settings first: each worker moves into a var/ subdirectory and a queue named after it (the
# test database gets pytest-django's _gwN suffix). The Celery workers a test starts inherit the marker and stay put.
_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _xdist_worker and os.environ.get("EXMAINT_TEST_XDIST_WORKER") != _xdist_worker:
    os.environ["EXMAINT_VAR_DIR"] = os.path.join(os.environ["EXMAINT_VAR_DIR"], _xdist_worker)
    os.environ["EXMAINT_TASK_QUEUE"] = f"{os.environ['EXMAINT_TASK_QUEUE']}-{_xdist_worker}"
    os.environ["EXMAINT_TEST_XDIST_WORKER"] = _xdist_worker
os.environ.setdefault("FIELD_ENCRYPTION_KEY", "dGVzdC1vbmx5LWtleS10ZXN0LW9ubHkta2V5LTMyYiE=")  # test-only Fernet key

# The callback tests run a receiver on 127.0.0.1.
os.environ.setdefault("EXMAINT_CALLBACK_ALLOWED_NETWORKS", "127.0.0.1/32")

from .settings import *  # noqa: E402, F403

STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405 - WhiteNoise warns about a missing directory

# Tests make users by the hundred: Django's default hasher (PBKDF2, 1,000,000 rounds, about 0.2 s of CPU each) would be
# a large share of the suite's time. Test-only; production keeps Django's default.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
