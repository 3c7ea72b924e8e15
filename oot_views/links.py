"""Every URL the pages render, built in one place so that only safe links reach a template.

Stored URLs come from callbacks, so they are links only when they are
absolute http(s) URLs (`safe_link`). GitHub links are built from parts that
must match GitHub's own formats (owner/repo, a hexadecimal SHA, a PR number),
so a crafted upstream repository or SHA yields no link rather than a
misleading one.
"""

import re
from typing import Any

from django.urls import NoReverseMatch, reverse

from oot_ingest.urls import is_http_url

GITHUB = "https://github.com"
GITHUB_REPO_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/(?!\.\.?$)[A-Za-z0-9._-]{1,100}$")
SHA_PATTERN = re.compile(r"^[0-9a-f]{7,64}$")
GITHUB_RUN_PATTERN = re.compile(r"^https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/actions/runs/\d+/?$")
CHECK_RUN_ID_PATTERN = re.compile(r"^\d{1,20}$")


def safe_link(url: Any) -> str | None:
    """Return the URL when it may be rendered as a link (absolute http or https), else None."""
    return url if is_http_url(url) else None


def job_log_url(run_url: str | None, check_run_id: Any) -> str | None:
    """Return `<run URL>/job/<check_run_id>` for a GitHub Actions run, or None for any other run URL."""
    check_run_id = str(check_run_id or "")
    if not run_url or not GITHUB_RUN_PATTERN.match(run_url) or not CHECK_RUN_ID_PATTERN.match(check_run_id):
        return None
    return f"{run_url.rstrip('/')}/job/{check_run_id}"


def github_repo(upstream_repo: Any) -> str | None:
    if isinstance(upstream_repo, str) and GITHUB_REPO_PATTERN.match(upstream_repo):
        return upstream_repo
    return None


def github_repo_url(repository: Any) -> str | None:
    repo = github_repo(repository)
    return f"{GITHUB}/{repo}" if repo else None


def commit_url(upstream_repo: Any, sha: Any) -> str | None:
    repo = github_repo(upstream_repo)
    if repo is None or not isinstance(sha, str) or not SHA_PATTERN.match(sha):
        return None
    return f"{GITHUB}/{repo}/commit/{sha}"


def pull_request_url(upstream_repo: Any, number: Any) -> str | None:
    repo = github_repo(upstream_repo)
    if repo is None or not isinstance(number, int) or number <= 0:
        return None
    return f"{GITHUB}/{repo}/pull/{number}"


def backend_path(repository: Any) -> str | None:
    """Return the path of a backend's page, or None when the name cannot be one (no owner/repo form)."""
    if not isinstance(repository, str) or repository.count("/") != 1:
        return None
    org, repo = repository.split("/")
    try:
        return reverse("oot-backend", kwargs={"org": org, "repo": repo})
    except NoReverseMatch:
        return None


def pr_path(number: Any) -> str | None:
    if not isinstance(number, int) or number <= 0:
        return None
    return reverse("oot-pr", kwargs={"number": number})
