"""Replay a JSONL corpus of relay requests against a running service over HTTP.

Each line is `{"sent_at": ISO-8601, "body": {...}}`. Every timestamp
(`sent_at`, `workflow.started_at`, `workflow.completed_at`) is shifted by the
same amount so that the newest line is "now". Lines are sent in file order.
With several connections, all callbacks of one job go through the same
connection, so a job's callbacks keep their order.
"""

import gzip
import http.client
import json
import os
import queue
import threading
import time
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _format(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def load_corpus(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _workflow(body) -> dict | None:
    if not isinstance(body, dict):
        return None
    callback = body.get("untrusted", {}).get("callback_payload", {})
    workflow = callback.get("workflow") if isinstance(callback, dict) else None
    return workflow if isinstance(workflow, dict) else None


def shift_corpus(entries: list[dict], now: datetime) -> list[dict]:
    """Shift all timestamps so that the newest `sent_at` becomes `now`."""
    newest = max(_parse(entry["sent_at"]) for entry in entries)
    delta: timedelta = now - newest
    for entry in entries:
        entry["sent_at"] = _format(_parse(entry["sent_at"]) + delta)
        workflow = _workflow(entry["body"])
        if workflow is None:
            continue
        for name in ("started_at", "completed_at"):
            if isinstance(workflow.get(name), str):
                workflow[name] = _format(_parse(workflow[name]) + delta)
    return entries


def _job_identity(body) -> str:
    workflow = _workflow(body) or {}
    callback = body.get("untrusted", {}).get("callback_payload", {}) if isinstance(body, dict) else {}
    parts = (callback.get("delivery_id"), workflow.get("name"), workflow.get("job_name"), workflow.get("check_run_id"))
    return "|".join(str(part) for part in parts)


class Sender(threading.Thread):
    """Sends the lines of its queue over one keep-alive connection and records outcomes."""

    def __init__(self, url: str, token: str, lines: queue.Queue, results: list, lock: threading.Lock):
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port or 80, parts.path or "/api/oot/results"
        self.token = token
        self.lines = lines
        self.results = results
        self.lock = lock
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def post(self, payload: bytes) -> tuple[int, float, dict]:
        headers = {"Content-Type": "application/json", "X-OOT-Relay-Token": self.token}
        for attempt in range(3):
            started = time.perf_counter()
            try:
                self.connection.request("POST", self.path, body=payload, headers=headers)
                response = self.connection.getresponse()
                text = response.read()
                elapsed = time.perf_counter() - started
                try:
                    body = json.loads(text)
                except ValueError:
                    body = {}
                return response.status, elapsed, body
            except (ConnectionError, http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                time.sleep(0.2 * (attempt + 1))
        return 0, 0.0, {}

    def run(self) -> None:
        while True:
            item = self.lines.get()
            if item is None:
                return
            index, payload = item
            status, elapsed, body = self.post(payload)
            with self.lock:
                self.results.append((index, status, elapsed, body, time.time()))


def replay(entries: list[dict], url: str, token: str, connections: int = 4, rate: float = 0.0, progress=None) -> dict:
    """Send every entry; return counts by status, throughput and per-request results."""
    queues = [queue.Queue(maxsize=200) for _ in range(connections)]
    results: list = []
    lock = threading.Lock()
    senders = [Sender(url, token, lines, results, lock) for lines in queues]
    for sender in senders:
        sender.start()

    started = time.perf_counter()
    for index, entry in enumerate(entries):
        if rate > 0:
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        body = entry["body"]
        # A string body is a double-encoded request: send it as the JSON string it is.
        payload = json.dumps(body).encode("utf-8")
        target = zlib.crc32(_job_identity(body if isinstance(body, dict) else {}).encode()) % connections
        queues[target].put((index, payload))
        if progress and index and index % 1000 == 0:
            progress(index)
    for lines in queues:
        lines.put(None)
    for sender in senders:
        sender.join()
    elapsed = time.perf_counter() - started

    statuses = Counter(status for _, status, _, _, _ in results)
    return {
        "sent": len(results),
        "seconds": elapsed,
        "per_second": len(results) / elapsed if elapsed else 0.0,
        "statuses": dict(sorted(statuses.items())),
        "results": results,
    }


class Command(BaseCommand):
    help = "Replay a relay-traffic JSONL corpus against a running service, shifting timestamps so the newest is now."

    def add_arguments(self, parser):
        parser.add_argument("path", help="JSONL file, optionally gzip-compressed")
        parser.add_argument(
            "--url",
            default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/api/oot/results",
            help="Ingestion endpoint (default: the local service)",
        )
        parser.add_argument(
            "--token", default=os.environ.get("OOT_RELAY_TOKEN", ""), help="Relay token (default: $OOT_RELAY_TOKEN)"
        )
        parser.add_argument("--connections", type=int, default=4, help="Parallel keep-alive connections")
        parser.add_argument("--rate", type=float, default=0.0, help="Callbacks per second; 0 sends as fast as possible")
        parser.add_argument("--limit", type=int, default=0, help="Send only the first N lines")

    def handle(self, *args, **options):
        path = Path(options["path"])
        if not path.exists():
            raise CommandError(f"corpus file {path} not found")
        if not options["token"]:
            raise CommandError("no relay token: pass --token or set OOT_RELAY_TOKEN")
        if urlsplit(options["url"]).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise CommandError("replay sends only to a service on this machine (127.0.0.1, localhost or ::1)")

        entries = load_corpus(path)
        if options["limit"]:
            entries = entries[: options["limit"]]
        shift_corpus(entries, datetime.now(UTC))
        self.stdout.write(f"replaying {len(entries)} callbacks to {options['url']}")
        outcome = replay(
            entries,
            options["url"],
            options["token"],
            max(1, options["connections"]),
            options["rate"],
            progress=lambda count: self.stdout.write(f"  {count} sent"),
        )
        self.stdout.write(
            f"sent {outcome['sent']} callbacks in {outcome['seconds']:.1f} s "
            f"({outcome['per_second']:.0f} callbacks/s); responses by status: {outcome['statuses']}"
        )
        failures = {status: count for status, count in outcome["statuses"].items() if status != 200}
        if failures:
            raise CommandError(f"some callbacks were not accepted: {failures}")
