"""Issue 13 (deployment): the admin is styled and the Swagger UI works under gunicorn with no web server in front
and no Internet: WhiteNoise serves the collected static files, drf-spectacular-sidecar ships Swagger UI."""
from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory):
    """Collected once, without compression (slow; the packaging test runs the configured storage)."""
    root = tmp_path_factory.mktemp("static")
    plain = {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
             "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    with override_settings(STATIC_ROOT=root, STORAGES=plain, DEBUG=False):
        call_command("collectstatic", "--noinput", verbosity=0, stdout=StringIO())
        yield root


def test_the_admin_css_is_served_without_a_web_server(collected) -> None:
    res = Client().get("/static/admin/css/base.css")
    assert res.status_code == 200
    assert b"".join(res.streaming_content).strip()
    assert res["Content-Type"].startswith("text/css")
    login = Client().get("/admin/login/")
    assert 'href="/static/admin/css/base.css"' in login.content.decode()


def test_swagger_ui_loads_only_from_this_server(collected, auditor) -> None:
    client = Client()
    client.force_login(auditor)
    page = client.get("/api/v1/docs/").content.decode()
    assert "swagger-ui" in page
    external = re.findall(r'(?:src|href)="(https?://[^"]+)"', page)
    assert external == [], external
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    for asset in assets:
        assert Client().get(asset).status_code == 200, asset
