"""Body framing over a real socket: chunked uploads and Content-Length that disagrees with the body.

Django's test client always sends a correct Content-Length, so these run
against the service under granian, as in production, on a loopback port.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TOKEN, callback_body
from tests.services import web_server

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """granian serving the project with its own migrated SQLite database and an empty allowlist."""
    directory = tmp_path_factory.mktemp("server")
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}", "LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=environment, check=True)
    with web_server(environment, directory / "server.log", threads=2) as port:
        yield port


def exchange(port: int, head: bytes, body_parts: list[bytes]) -> tuple[int, dict]:
    """Send a raw request and return the status and JSON body of the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        connection.sendall(head)
        try:
            for part in body_parts:
                connection.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything
        received = b""
        while b"\r\n\r\n" not in received or len(received) < _expected_length(received):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
    head_text, _separator, payload = received.partition(b"\r\n\r\n")
    status = int(head_text.split(b" ", 2)[1])
    return status, json.loads(payload[: _content_length(head_text)])


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _colon, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _expected_length(received: bytes) -> int:
    head, _separator, _payload = received.partition(b"\r\n\r\n")
    return len(head) + 4 + _content_length(head)


def request_head(extra: str) -> bytes:
    return (
        "POST /api/oot/results HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-OOT-Relay-Token: {TOKEN}\r\n{extra}\r\n"
    ).encode()


def chunked(data: bytes, size: int = 256 * 1024) -> list[bytes]:
    parts = [
        f"{len(data[i : i + size]):x}\r\n".encode() + data[i : i + size] + b"\r\n" for i in range(0, len(data), size)
    ]
    return [*parts, b"0\r\n\r\n"]


def test_chunked_body_is_read(server):
    body = json.dumps(callback_body(repo="nobody/unlisted-backend")).encode()
    status, answer = exchange(server, request_head("Transfer-Encoding: chunked\r\n"), chunked(body))
    assert status == 403, answer
    assert "not on the allowlist" in answer["error"], "the chunked body was parsed, not read as empty"


def test_chunked_invalid_json_is_400(server):
    status, answer = exchange(server, request_head("Transfer-Encoding: chunked\r\n"), chunked(b"{not json"))
    assert status == 400
    assert "not valid JSON" in answer["error"]


def test_chunked_body_over_limit_is_413(server):
    body = b'{"padding": "' + b"p" * LIMIT + b'"}'
    status, answer = exchange(server, request_head("Transfer-Encoding: chunked\r\n"), chunked(body))
    assert status == 413
    assert "larger than the limit of 2097152 bytes" in answer["error"]


def test_declared_length_over_limit_answered_before_body(server):
    status, answer = exchange(server, request_head(f"Content-Length: {LIMIT + 1}\r\n"), [])
    assert status == 413, "answered from the header alone, without waiting for the body"
    assert "2097153 bytes" in answer["error"]


def test_body_longer_than_declared_is_cut_at_length(server):
    """HTTP frames the body by Content-Length, so the bytes after it are not this request's body."""
    body = json.dumps(callback_body(repo="nobody/unlisted-backend")).encode()
    status, answer = exchange(server, request_head("Content-Length: 10\r\nConnection: close\r\n"), [body])
    assert status == 400
    assert "not valid JSON" in answer["error"]
