from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter(trailing_slash=True)
router.register("changes", views.ChangeViewSet, basename="change")
router.register("servers", views.ServerViewSet, basename="server")
router.register("freeze-windows", views.FreezeWindowViewSet, basename="freeze-window")

urlpatterns = [
    path("audit/verify/", views.audit_verify, name="audit-verify"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include(router.urls)),
]
