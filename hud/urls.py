from django.contrib import admin
from django.urls import include, path

from hud import health
from oot_ingest import views as ingest

urlpatterns = [
    path("api/oot/results", ingest.results, name="oot-results"),
    path("api/oot/allowlist", ingest.allowlist, name="oot-allowlist"),
    path("api/oot/callback-tokens", ingest.callback_tokens, name="oot-callback-tokens"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("", include("oot_views.urls")),
]
