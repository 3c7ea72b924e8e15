"""Only absolute http(s) URLs with a host are stored as workflow.url and artifact_url."""

import pytest

from oot_ingest.urls import UrlError, check_http_url, is_http_url
from tests.conftest import callback_body, post_callback, stored_item

KEY = "acme-ai/torch-npu/11111111-2222-3333-4444-555555555555/npu-ci/test-float32/98765432100"

REJECTED = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "javascript://github.com/%0aalert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "VBScript:msgbox(1)",
    " https://github.com/acme-ai/torch-npu",
    "\thttps://github.com/acme-ai/torch-npu",
    "\x01https://github.com/acme-ai/torch-npu",
    "https://github.com/acme-ai/torch-npu\n",
    "ht\ttps://github.com/acme-ai/torch-npu",
    "java\tscript:alert(1)",
    "//evil.example/run",
    "\\\\evil.example\\run",
    "https:\\\\evil.example\\run",
    "https:/\\evil.example/run",
    "https://github.com\\@evil.example/",
    "https://github.com@evil.example/",
    "https://user:password@github.com/",
    "https://github.com:443@evil.example/",
    "https:evil.example/run",
    "https:///evil.example/run",
    "https://",
    "https://:443/",
    "https://evil..example/",
    "https://.evil.example/",
    "https://exa mple.org/",
    "https://exa\u00a0mple.org/",
    "https://ｅｖｉｌ.example/",
    "https://github.com:99999/",
    "https://github.com:80:80/",
    "https://github.com:-1/",
    "http://[::1",
    "http://[::1]x/",
    "http://[::1]]/",
    "ftp://files.example.org/run",
    "file:///etc/passwd",
    "https://github.com/<script>",
    'https://github.com/"onmouseover="alert(1)',
    "https://example.org/" + "a" * 2100,
]

ACCEPTED = [
    "https://github.com/acme-ai/torch-npu/actions/runs/24033272679",
    "http://artifacts.example.org/runs/1/",
    "HTTPS://GitHub.com/acme-ai/torch-npu",
    "https://artifacts.example.org:8443/runs/1/?page=2#log",
    "http://127.0.0.1:8080/report",
    "http://[2001:db8::1]:8080/report",
    "https://example.org/runs/1/report%20final.html",
    "https://example.org/path@with-at-sign",
]


@pytest.mark.parametrize("url", REJECTED)
def test_unsafe_url_rejected(url):
    with pytest.raises(UrlError):
        check_http_url(url)
    assert not is_http_url(url)


@pytest.mark.parametrize("url", ACCEPTED)
def test_http_url_accepted(url):
    assert check_http_url(url) == url
    assert is_http_url(url)


@pytest.mark.usefixtures("stores", "demo_allowlist")
@pytest.mark.parametrize("field", ["url", "artifact_url"])
@pytest.mark.parametrize("url", ["javascript:alert(1)", " https://github.com/x", "//evil.example/", "data:,x"])
def test_unsafe_url_is_400(client, field, url):
    body = callback_body("completed")
    body["untrusted"]["callback_payload"]["workflow"][field] = url
    response = post_callback(client, body)
    assert response.status_code == 400
    assert f"untrusted.callback_payload.workflow.{field}" in response.json()["error"]
    assert stored_item(KEY) is None


@pytest.mark.usefixtures("stores", "demo_allowlist")
def test_url_must_be_string(client):
    body = callback_body("completed")
    body["untrusted"]["callback_payload"]["workflow"]["artifact_url"] = {"href": "https://example.org"}
    response = post_callback(client, body)
    assert response.status_code == 400
    assert "artifact_url: must be a URL string" in response.json()["error"]


@pytest.mark.usefixtures("stores", "demo_allowlist")
def test_http_urls_stored(client):
    body = callback_body("completed")
    body["untrusted"]["callback_payload"]["workflow"]["artifact_url"] = "HTTPS://Artifacts.example.org/runs/1/"
    assert post_callback(client, body).status_code == 200
    item = stored_item(KEY)
    assert item["artifact_url"] == "HTTPS://Artifacts.example.org/runs/1/"
    assert item["workflow_run_url"] == "https://github.com/acme-ai/torch-npu/actions/runs/24033272679"
