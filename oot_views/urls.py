from django.templatetags.static import static
from django.urls import path, register_converter
from django.views.generic import RedirectView

from oot_views import views


class RepoPartConverter:
    regex = r"[A-Za-z0-9_.-]{1,100}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(RepoPartConverter, "repopart")

urlpatterns = [
    path("", RedirectView.as_view(url="/oot", permanent=False)),
    # Browsers ask for /favicon.ico on pages without an icon link, such as the JSON endpoints.
    path("favicon.ico", RedirectView.as_view(url=static("oot/favicon.svg"), permanent=True)),
    path("oot", views.summary_page, name="oot-summary"),
    path("oot/metrics", views.metrics_page, name="oot-metrics"),
    path("oot/<repopart:org>/<repopart:repo>", views.backend_page, name="oot-backend"),
    path("pr/<int:number>", views.pr_page, name="oot-pr"),
    path("pr/<str:raw>", views.pr_page_invalid),
    path("pr", views.pr_lookup, name="oot-pr-lookup"),
    path("api/oot/summary", views.summary_json, name="oot-summary-json"),
    path("api/oot/backends/<repopart:org>/<repopart:repo>", views.backend_json, name="oot-backend-json"),
    path("api/oot/pr/<int:number>", views.pr_json, name="oot-pr-json"),
    path("api/oot/pr/<str:raw>", views.pr_json_invalid),
    path("api/oot/metrics", views.metrics_json, name="oot-metrics-json"),
    path("api/oot/openapi.json", views.openapi_json, name="oot-openapi"),
]
