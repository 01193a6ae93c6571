"""Role checks at the HTTP edge; the services re-check what matters."""
from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from changes.models import Role
from changes.roles import has_role


class HasAnyRole(BasePermission):
    message = "your identity has no exmaint role"

    def has_permission(self, request, view) -> bool:  # noqa: ANN001
        return bool(request.user and request.user.is_authenticated and has_role(request.user, *Role.values))


class ReadAnyRoleWriteOperator(BasePermission):
    """The inventory: everyone with a role reads; operators write."""

    message = "only operators may change this"

    def has_permission(self, request, view) -> bool:  # noqa: ANN001
        if request.method in SAFE_METHODS:
            return has_role(request.user, *Role.values)
        return has_role(request.user, Role.OPERATOR)


class ReadAnyRoleWriteOperatorOrApprover(ReadAnyRoleWriteOperator):
    message = "only operators and approvers may change freeze windows"

    def has_permission(self, request, view) -> bool:  # noqa: ANN001
        if request.method in SAFE_METHODS:
            return has_role(request.user, *Role.values)
        return has_role(request.user, Role.OPERATOR, Role.APPROVER)
