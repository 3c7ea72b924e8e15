"""Decode a relay request body and turn it into a record.

`decode_body` turns bytes into a JSON object and rejects the JSON hazards
(NaN, duplicate keys, deep nesting, huge integers, ...). `build_record`
validates the callback, rejects NUL characters, lone surrogates and deep
nesting in everything the record keeps, and extracts the record's fields.
Both raise `PayloadError`, which names the offending field; the view turns it
into a 400.

Every stored value is bounded, so the item stays well under DynamoDB's
400 KB limit whatever a 2 MiB body holds. Names and ids have at most 256
characters and URLs at most 2,048. The environment has at most 8 KiB and the
failed tests at most 256 KiB (see failed_tests.py). The upstream webhook body
(`payload`) is not stored: only the PR number, head SHA and repository are
read from it.
"""

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from oot_ingest import counters, jsontext
from oot_ingest.failed_tests import cap_failed_tests
from oot_ingest.urls import UrlError, check_http_url
from oot_ingest.vocabulary import (
    EVENT_PUSH,
    SCHEMA_VERSIONS,
    STATUS_COMPLETED,
    STATUSES,
    dynamo_key,
)

logger = logging.getLogger(__name__)

MAX_NESTING = 64
# Counts are UInt64 in ClickHouse and run_attempt is UInt32; both stay far
# inside the 38 digits a DynamoDB number holds.
MAX_COUNT = 2**63 - 1
MAX_RUN_ATTEMPT = 2**32 - 1
# No stored number comes near this; the bound keeps int() cheap on hostile input.
MAX_INTEGER_DIGITS = 100
MAX_ID_DIGITS = 30
MAX_KEY_PART_CHARS = 256
# DynamoDB's limit for a partition key value.
MAX_KEY_BYTES = 2048
MAX_NAME_CHARS = 256
MAX_CONCLUSION_CHARS = 64
MAX_SCHEMA_VERSION_CHARS = 32
MAX_ENVIRONMENT_BYTES = 8 * 1024
MAX_SECONDS = Decimal(10**9)
REPO_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
SHA_PATTERN = re.compile(r"^[0-9a-fA-F]{7,64}$")
CIFLOW_TAG_PATTERN = re.compile(r"^refs/tags/ciflow/trunk/(\d{1,12})$")

SCHEMA_VERSIONS_SEEN_KEY = "oot:schema_versions_seen"
# Unknown schema versions already logged by this process. Cleared when full,
# so hostile versions cost bounded memory and at worst a repeated log line.
MAX_REMEMBERED_SCHEMA_VERSIONS = 10_000
_logged_schema_versions: set[tuple[str, str]] = set()
_schema_versions_lock = threading.Lock()


class PayloadError(ValueError):
    """A request body that cannot be accepted; `field` names where."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass
class Callback:
    """A validated callback: the record's fields and what the API needs besides."""

    record: dict[str, Any]
    repo: str
    delivery_id: str
    status: str
    callback_token: str | None = None
    # Set when workflow.schema_version is neither "1" nor "1.0".
    unknown_schema_version: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.record["dynamoKey"]


def _reject_constant(name: str) -> None:
    raise PayloadError("", f"{name} is not valid JSON: numbers must be finite")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise PayloadError(key, "duplicate key in a JSON object")
            seen.add(key)
    return result


def _parse_int(text: str) -> int:
    if len(text) > MAX_INTEGER_DIGITS:
        raise PayloadError("", f"body contains an integer with more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _loads(text: str) -> Any:
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_int=_parse_int,
            parse_constant=_reject_constant,
            object_pairs_hook=_object_without_duplicates,
        )
    except RecursionError:
        raise PayloadError("", f"JSON is nested deeper than {MAX_NESTING} levels") from None
    except json.JSONDecodeError as error:
        raise PayloadError(
            "", f"body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None


def _check_strings_and_depth(document: Any, root: str = "") -> None:
    """Reject NUL characters, lone surrogates and nesting deeper than MAX_NESTING.

    This runs on every callback, so paths are only formatted for an error.
    """
    _check_value(document, (root,) if root else (), 0)


def _check_value(value: Any, path: tuple, depth: int) -> None:
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    if depth > MAX_NESTING:
        raise PayloadError(_format_path(path), f"JSON is nested deeper than {MAX_NESTING} levels")
    for key, item in items:
        if isinstance(key, str):
            _check_text(key, (*path, key))
        if isinstance(item, str):
            _check_text(item, (*path, key))
        elif isinstance(item, (dict, list)):
            _check_value(item, (*path, key), depth + 1)


def _check_text(text: str, path: tuple) -> None:
    if "\x00" in text:
        raise PayloadError(_format_path(path), "contains a NUL character")
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(_format_path(path), "contains a lone surrogate, which is not valid Unicode") from None


def _format_path(path: tuple) -> str:
    """Write a path such as ("a", "b", 0) as a.b[0]."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def decode_body(raw: bytes) -> dict:
    """Decode a request body into a JSON object.

    A body that is a JSON string holding an encoded object is unwrapped once,
    because some relays encode the payload twice.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raise PayloadError("", "body starts with a UTF-8 byte order mark; send plain UTF-8 JSON")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PayloadError("", f"body is not valid UTF-8 at byte {error.start}") from None
    if not text.strip():
        raise PayloadError("", "body is empty; send a JSON object")

    document = _loads(text)
    if isinstance(document, str):
        document = _loads(document)
        if not isinstance(document, dict):
            raise PayloadError("", "body is a JSON string that does not hold a JSON object")
    if not isinstance(document, dict):
        raise PayloadError("", f"body must be a JSON object, not {_json_type(document)}")
    return document


def request_ids(document: Any) -> tuple[str, str]:
    """Return the repository and delivery id a body claims, for logging a rejection; empty when absent."""
    if not isinstance(document, dict):
        return "", ""
    trusted = document.get("trusted")
    repo = trusted.get("verified_repo") if isinstance(trusted, dict) else None
    untrusted = document.get("untrusted")
    callback = untrusted.get("callback_payload") if isinstance(untrusted, dict) else None
    delivery_id = callback.get("delivery_id") if isinstance(callback, dict) else None
    return (
        repo[:MAX_KEY_PART_CHARS] if isinstance(repo, str) else "",
        delivery_id[:MAX_KEY_PART_CHARS] if isinstance(delivery_id, str) else "",
    )


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _object(parent: dict, key: str, path: str, required: bool = True) -> dict:
    value = parent.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        what = "missing" if value is None else f"must be an object, not {_json_type(value)}"
        raise PayloadError(path, what)
    return value


def _text(parent: dict, key: str, path: str, required: bool = False, max_chars: int = MAX_NAME_CHARS) -> str | None:
    value = parent.get(key)
    if value is None or value == "":
        if required:
            raise PayloadError(path, "missing or empty")
        return None
    if not isinstance(value, str):
        raise PayloadError(path, f"must be a string, not {_json_type(value)}")
    if len(value) > max_chars:
        raise PayloadError(path, f"is longer than {max_chars} characters")
    return value


def _id_text(parent: dict, key: str, path: str, required: bool = False) -> str | None:
    """Read an identifier sent either as a number or as a string of digits."""
    value = parent.get(key)
    if value is None or value == "":
        if required:
            raise PayloadError(path, "missing or empty")
        return None
    if isinstance(value, bool):
        raise PayloadError(path, "must be a number or a string of digits, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise PayloadError(path, "must not be negative")
        text = str(value)
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        text = value
    else:
        raise PayloadError(path, f"must be a number or a string of digits, got {_preview(value)}")
    if len(text) > MAX_ID_DIGITS:
        raise PayloadError(path, f"has more than {MAX_ID_DIGITS} digits")
    return text


def _preview(value: Any) -> str:
    """Show a rejected value in an error message, shortened."""
    if isinstance(value, str):
        return repr(value[:40])
    if isinstance(value, (dict, list)):
        return _json_type(value)
    return repr(value)[:40]


def parse_count(value: Any, path: str, maximum: int = MAX_COUNT) -> int | None:
    """Read a count: an integer >= 0 or a string of decimal digits; null is absent.

    A JSON number with a zero fraction (10.0, 1e3) counts as an integer. Any
    other fraction, a negative number, a boolean or another string is invalid.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise PayloadError(path, "must be a non-negative integer, not a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, Decimal) and value == value.to_integral_value() and value.adjusted() < 20:
        number = int(value)
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        digits = value.lstrip("0") or "0"
        if len(digits) > len(str(maximum)):
            raise PayloadError(path, f"is larger than {maximum}")
        number = int(digits)
    elif isinstance(value, Decimal) and value == value.to_integral_value():
        raise PayloadError(path, f"is larger than {maximum}")
    else:
        raise PayloadError(path, f"must be a non-negative integer, got {_preview(value)}")
    if number < 0:
        raise PayloadError(path, f"must be a non-negative integer, got {number}")
    if number > maximum:
        raise PayloadError(path, f"is larger than {maximum}")
    return number


def _seconds(value: Any, path: str) -> Decimal | None:
    """Read a duration in seconds as an exact decimal; null is absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise PayloadError(path, f"must be a number of seconds, not {_json_type(value)}")
    number = Decimal(value)
    if number < 0 or number > MAX_SECONDS:
        raise PayloadError(path, f"must be between 0 and 1e9 seconds, got {_preview(value)}")
    if number.as_tuple().exponent < -9:
        # DynamoDB keeps at most 38 significant digits; nanoseconds are plenty.
        number = number.quantize(Decimal("0.000000001"))
    return number


def parse_timestamp(value: Any, path: str) -> str | None:
    """Normalise an ISO 8601 time to UTC with a trailing Z; null is absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise PayloadError(path, "must be an ISO 8601 time string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise PayloadError(path, f"is not an ISO 8601 time: {value!r}") from None
    except OverflowError:
        raise PayloadError(path, f"is out of range: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if not 2000 <= moment.year <= 2200:
        raise PayloadError(path, f"is out of range: {value!r}")
    return moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds").replace("+00:00", "Z")


def _url(parent: dict, key: str, path: str) -> str | None:
    value = parent.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(path, f"must be a URL string, not {_json_type(value)}")
    try:
        return check_http_url(value)
    except UrlError as error:
        raise PayloadError(path, str(error)) from None


def _pr_context(event_type: str, payload: dict) -> tuple[int, str | None]:
    """Find the upstream PR number and head SHA for each kind of event."""
    pull_request = payload.get("pull_request")
    if pull_request is not None and not isinstance(pull_request, dict):
        raise PayloadError(
            "untrusted.callback_payload.payload.pull_request", f"must be an object, not {_json_type(pull_request)}"
        )
    if isinstance(pull_request, dict):
        number = parse_count(pull_request.get("number"), "untrusted.callback_payload.payload.pull_request.number")
        head = pull_request.get("head") if isinstance(pull_request.get("head"), dict) else {}
        return number or 0, _sha(head.get("sha"), "untrusted.callback_payload.payload.pull_request.head.sha")

    if event_type == EVENT_PUSH or "after" in payload:
        ref = payload.get("ref")
        match = CIFLOW_TAG_PATTERN.match(ref) if isinstance(ref, str) else None
        number = int(match.group(1)) if match else 0
        return number, _sha(payload.get("after"), "untrusted.callback_payload.payload.after")

    return 0, _sha(payload.get("head_sha"), "untrusted.callback_payload.payload.head_sha")


def _sha(value: Any, path: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not SHA_PATTERN.match(value):
        raise PayloadError(path, "must be a hexadecimal commit SHA")
    return value.lower()


def _test_counts(workflow: dict) -> tuple[dict[str, int], list | None]:
    """Read test counts and failed tests from `test_results` or the older `test-results`."""
    path = "untrusted.callback_payload.workflow"
    counts_key = "test_results" if "test_results" in workflow else "test-results"
    results = workflow.get(counts_key)
    if results is not None and not isinstance(results, dict):
        raise PayloadError(f"{path}.{counts_key}", f"must be an object, not {_json_type(results)}")
    results = results or {}

    counts: dict[str, int] = {}
    for source, target in (("passed", "passed_tests"), ("failed", "failed_tests"), ("skipped", "skipped_tests")):
        number = parse_count(results.get(source), f"{path}.{counts_key}.{source}")
        if number is not None:
            counts[target] = number
    total = parse_count(results.get("total"), f"{path}.{counts_key}.total")
    if total is None and counts:
        total = sum(counts.values())
    if total is not None:
        counts["total_tests"] = total

    failed = workflow.get("failed_tests_detail")
    failed_path = f"{path}.failed_tests_detail"
    if failed is None and isinstance(results.get("failures"), list):
        failed = results["failures"]
        failed_path = f"{path}.{counts_key}.failures"
    if failed is not None and not isinstance(failed, list):
        raise PayloadError(failed_path, f"must be a list, not {_json_type(failed)}")
    return counts, failed


def _environment(workflow: dict) -> str | None:
    value = workflow.get("environment")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PayloadError(
            "untrusted.callback_payload.workflow.environment", f"must be an object, not {_json_type(value)}"
        )
    text = jsontext.dumps(value)
    if len(text.encode("utf-8")) > MAX_ENVIRONMENT_BYTES:
        raise PayloadError(
            "untrusted.callback_payload.workflow.environment", f"is larger than {MAX_ENVIRONMENT_BYTES} bytes"
        )
    return text


def build_record(document: dict) -> Callback:
    """Validate a decoded body and build the record it describes.

    Fields the relay vouches for come from `trusted` only; nothing in
    `untrusted` can override the repository, its level or the timings.
    """
    trusted = _object(document, "trusted", "trusted")
    _check_strings_and_depth(trusted, "trusted")
    repo = _text(trusted, "verified_repo", "trusted.verified_repo", required=True)
    if not REPO_PATTERN.match(repo):
        raise PayloadError("trusted.verified_repo", f"must be owner/repo, got {repo[:80]!r}")
    level = _text(trusted, "downstream_repo_level", "trusted.downstream_repo_level", max_chars=8)
    metrics = _object(trusted, "ci_metrics", "trusted.ci_metrics", required=False)

    untrusted = _object(document, "untrusted", "untrusted")
    base = "untrusted.callback_payload"
    callback = _object(untrusted, "callback_payload", base)
    for key, value in callback.items():
        # The upstream webhook body is not stored, so only what is read from
        # it below is checked.
        if key != "payload":
            _check_strings_and_depth(value, f"{base}.{key}")
    delivery_id = _text(callback, "delivery_id", f"{base}.delivery_id", required=True, max_chars=MAX_KEY_PART_CHARS)
    event_type = _text(callback, "event_type", f"{base}.event_type", max_chars=64) or ""
    payload = _object(callback, "payload", f"{base}.payload", required=False)
    workflow = _object(callback, "workflow", f"{base}.workflow")

    wpath = f"{base}.workflow"
    status = _text(workflow, "status", f"{wpath}.status", required=True, max_chars=32)
    if status not in STATUSES:
        raise PayloadError(f"{wpath}.status", f"must be one of {', '.join(STATUSES)}, got {status!r}")
    workflow_name = _text(workflow, "name", f"{wpath}.name", required=True, max_chars=MAX_KEY_PART_CHARS)
    job_name = _text(workflow, "job_name", f"{wpath}.job_name", required=True, max_chars=MAX_KEY_PART_CHARS)
    check_run_id = _id_text(workflow, "check_run_id", f"{wpath}.check_run_id", required=True)
    key = dynamo_key(repo, delivery_id, workflow_name, job_name, check_run_id)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise PayloadError(
            f"{base}.delivery_id, {wpath}.name, {wpath}.job_name",
            f"together make a dynamoKey longer than {MAX_KEY_BYTES} UTF-8 bytes",
        )
    run_id = _id_text(workflow, "run_id", f"{wpath}.run_id")
    run_attempt = parse_count(workflow.get("run_attempt"), f"{wpath}.run_attempt", maximum=MAX_RUN_ATTEMPT)
    if run_attempt == 0:
        raise PayloadError(f"{wpath}.run_attempt", "must be 1 or more")
    schema_version = _schema_version(workflow, f"{wpath}.schema_version")

    upstream = payload.get("repository") if isinstance(payload.get("repository"), dict) else {}
    upstream_repo = _text(upstream, "full_name", f"{base}.payload.repository.full_name") or settings.OOT_UPSTREAM_REPO
    if not REPO_PATTERN.match(upstream_repo):
        raise PayloadError(f"{base}.payload.repository.full_name", f"must be owner/repo, got {upstream_repo[:80]!r}")
    pr_number, head_sha = _pr_context(event_type, payload)

    record: dict[str, Any] = {
        "dynamoKey": key,
        "status": status,
        "downstream_repo": repo,
        "upstream_repo": upstream_repo,
        "pr_number": pr_number,
        "event_type": event_type,
        "delivery_id": delivery_id,
        "workflow_name": workflow_name,
        "job_name": job_name,
        "check_run_id": check_run_id,
        "run_attempt": run_attempt or 1,
    }
    optional = {
        "downstream_repo_level": level,
        "pytorch_head_sha": head_sha,
        "run_id": run_id,
        "workflow_run_url": _url(workflow, "url", f"{wpath}.url"),
        "artifact_url": _url(workflow, "artifact_url", f"{wpath}.artifact_url"),
        "environment": _environment(workflow),
        "schema_version": schema_version,
        "queue_time": _seconds(metrics.get("queue_time"), "trusted.ci_metrics.queue_time"),
        "execution_time": _seconds(metrics.get("execution_time"), "trusted.ci_metrics.execution_time"),
        "started_at": parse_timestamp(workflow.get("started_at"), f"{wpath}.started_at"),
    }
    record.update({name: value for name, value in optional.items() if value is not None})

    counts, failed = _test_counts(workflow)
    if status == STATUS_COMPLETED:
        conclusion = _text(workflow, "conclusion", f"{wpath}.conclusion", max_chars=MAX_CONCLUSION_CHARS)
        completed_at = parse_timestamp(workflow.get("completed_at"), f"{wpath}.completed_at")
        if conclusion is not None:
            record["conclusion"] = conclusion
        if completed_at is not None:
            record["completed_at"] = completed_at
        record.update(counts)
        if failed is not None:
            capped = cap_failed_tests(failed)
            record["failed_tests_json"] = capped.json
            if capped.entries_cut or capped.bytes_cut:
                record["failed_tests_entries_cut"] = capped.entries_cut
                record["failed_tests_bytes_cut"] = capped.bytes_cut

    token = callback.get("callback_token")
    return Callback(
        record=record,
        repo=repo,
        delivery_id=delivery_id,
        status=status,
        callback_token=token if isinstance(token, str) else None,
        unknown_schema_version=schema_version if schema_version not in SCHEMA_VERSIONS else None,
    )


def _schema_version(workflow: dict, path: str) -> str | None:
    """Read schema_version as text; a number such as 1 or 1.0 is taken as its digits."""
    value = workflow.get("schema_version")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise PayloadError(path, f"must be a string, not {_json_type(value)}")
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_SCHEMA_VERSION_CHARS:
        raise PayloadError(path, f"is longer than {MAX_SCHEMA_VERSION_CHARS} characters")
    return text


def log_unknown_schema_version(repo: str, version: str) -> None:
    """Log a stored callback's unknown schema version once per repository and version.

    Redis remembers which pairs were logged, so several processes and restarts
    log each pair once; without Redis, each process logs it once.
    """
    pair = (repo.lower(), version)
    with _schema_versions_lock:
        if pair in _logged_schema_versions:
            return
        if len(_logged_schema_versions) >= MAX_REMEMBERED_SCHEMA_VERSIONS:
            _logged_schema_versions.clear()
        _logged_schema_versions.add(pair)
    try:
        first = counters.redis_client().sadd(SCHEMA_VERSIONS_SEEN_KEY, f"{pair[0]} {version}") == 1
    except RedisError:
        first = True
    if first:
        logger.warning("unknown schema_version repo=%s schema_version=%r; stored as version 1", repo, version)
