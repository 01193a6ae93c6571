"""The main job, as far as it exists today: identities and inventory, then the real users through the HTTP API —
an ITSM posts a normal medium-risk change, two approvers approve it, an auditor lists it and verifies the trail.

The runner and report issues extend this into a full maintenance window against the simulated Exchange ending
with a PDF.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from changes import services
from changes.models import ApiClient, Change, Server
from changes.states import HOLDS_SERVERS

IDENTITIES = {
    "servicenow": (["requester"], "servicenow"),
    "alice": (["approver"], ""),
    "bob": (["approver"], ""),
    "olga": (["operator"], ""),
    "audrey": (["auditor"], ""),
}


class Command(BaseCommand):
    help = "Demo: create identities and inventory, then post, approve and list a change through the REST API."

    def handle(self, *args, **options) -> None:
        tokens = {name: self._identity(name, roles, source) for name, (roles, source) in IDENTITIES.items()}
        operator = get_user_model().objects.get(username="olga")
        self._inventory(operator)
        # Earlier demo runs hold the same window: cancel them so this run can schedule its own.
        for old in Change.objects.filter(external_ref__startswith="DEMO-", state__in=HOLDS_SERVERS):
            services.change_cancel(old, actor=operator, reason="superseded by a new demo run")

        def client(name: str) -> APIClient:
            c = APIClient()
            c.credentials(HTTP_AUTHORIZATION=f"Token {tokens[name]}")
            return c

        start = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
        body = {
            "source": "servicenow", "external_ref": f"DEMO-{datetime.now(UTC):%Y%m%d%H%M%S%f}",
            "title": "Install Exchange 2019 CU15 on EX01", "change_type": "normal", "risk": "medium",
            "impact": "medium", "servers": ["EX01"], "window_start": start.isoformat(),
            "window_end": (start + timedelta(hours=2)).isoformat(), "requested_by": "carol@example.com",
            "notify": ["exchange-team@example.com"],
        }
        created = self._call(client("servicenow").post("/api/v1/changes/", body, format="json"), 201)
        self.stdout.write(f"POST /api/v1/changes/ → {created['number']} {created['state']} "
                          f"(needs {created['approvals_required']} approvals)")
        for approver in ("alice", "bob"):
            res = self._call(client(approver).post(f"/api/v1/changes/{created['id']}/approve/",
                                                   {"comment": f"Reviewed by {approver}"}, format="json"), 200)
            self.stdout.write(f"{approver} approves → {res['state']}")
        listing = self._call(client("audrey").get("/api/v1/changes/", {"external_ref": body["external_ref"]}), 200)
        verify = self._call(client("audrey").get("/api/v1/audit/verify/"), 200)
        self.stdout.write(f"auditor lists {listing['count']} change with that reference; audit chain ok={verify['ok']} "
                          f"events={verify['events']} head={verify['head']}")
        self.stdout.write("\nTokens for `make serve` (http://127.0.0.1:8000/api/v1/docs/):")
        for name, token in tokens.items():
            self.stdout.write(f"  {name:<11} {', '.join(IDENTITIES[name][0]):<9} {token}")

    def _identity(self, name: str, roles: list[str], source: str) -> str:
        user, _ = get_user_model().objects.get_or_create(username=name, defaults={"email": f"{name}@example.com"})
        user.groups.set(Group.objects.filter(name__in=roles))
        ApiClient.objects.get_or_create(user=user, defaults={"source": source})
        return Token.objects.get_or_create(user=user)[0].key

    def _inventory(self, operator) -> None:  # noqa: ANN001
        wanted = {"EX01": None, "EX02": "DAG1", "EX03": "DAG1", "EX04": "DAG1"}
        for name, dag in wanted.items():
            if not Server.objects.filter(name=name).exists():
                services.server_save(None, actor=operator, data={
                    "name": name, "fqdn": f"{name.lower()}.contoso.com", "dag_name": dag, "ad_site": "Default-Site",
                    "version": "Exchange Server 2019 CU14", "build": "15.2.1544.4", "auth_method": "negotiate",
                    "username": "CONTOSO\\svc-exmaint", "password": "demo-only-password",
                })

    def _call(self, response, status: int) -> dict:  # noqa: ANN001
        if response.status_code != status:
            raise CommandError(f"{response.request['REQUEST_METHOD']} {response.request['PATH_INFO']} answered "
                               f"{response.status_code}: {json.dumps(response.json())}")
        return response.json()
