"""The callback API: `POST /api/oot/results`, `POST /api/oot/callback-tokens` and `GET /api/oot/allowlist`.

When several errors apply, the first of this order wins: 405, 503 (no token
configured), 401, 413, 400, 403, 429, 409, 503 (DynamoDB).
"""

import logging

from django.conf import settings
from django.core.signals import got_request_exception
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import parse_etags
from django.views.decorators.csrf import csrf_exempt

from oot_ingest import counters, oidc, policy, provenance
from oot_ingest.dynamo import DynamoUnavailable, RecordRejected, WriteResult, now_iso, write_record
from oot_ingest.models import RejectedRequest
from oot_ingest.payload import (
    Callback,
    PayloadError,
    build_record,
    decode_body,
    log_unknown_schema_version,
    request_ids,
)

logger = logging.getLogger(__name__)

TOKEN_HEADERS = ("HTTP_X_OOT_RELAY_TOKEN", "HTTP_X_HUD_INTERNAL_BOT")
DYNAMODB_RETRY_AFTER_SECONDS = 5
MAX_LOGGED_CHARS = 300
READ_CHUNK_BYTES = 64 * 1024


class Rejection(Exception):
    """A callback the API will not store: HTTP status, message, and ids for the log."""

    def __init__(
        self, status: int, message: str, repo: str = "", delivery_id: str = "", retry_after: int | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.repo = repo
        self.delivery_id = delivery_id
        self.retry_after = retry_after


def _error_response(rejection: Rejection) -> JsonResponse:
    response = JsonResponse({"ok": False, "error": rejection.message}, status=rejection.status)
    if rejection.retry_after is not None:
        response["Retry-After"] = str(rejection.retry_after)
    if rejection.status == 405:
        response["Allow"] = "POST"
    # _log_rejection has written the one log line for this request; this
    # flag stops Django's request logger from adding a second one.
    response._has_been_logged = True
    return response


def _printable(text: str) -> str:
    """Escape line breaks, control characters and lone surrogates, so a sender cannot forge log lines."""
    return repr(text[:MAX_LOGGED_CHARS])[1:-1]


def _loggable(text: str) -> str:
    return _printable(text) if text else "-"


def _log_rejection(rejection: Rejection) -> None:
    logger.warning(
        "callback rejected status=%s repo=%s delivery_id=%s reason=%s",
        rejection.status,
        _loggable(rejection.repo),
        _loggable(rejection.delivery_id),
        _loggable(rejection.message),
    )
    counters.increment("callbacks_rejected")
    counters.increment(f"callbacks_rejected_{rejection.status}")
    # No admin log row for requests that came without a valid token (anyone
    # could fill the table) or that the service itself could not serve.
    if rejection.status in (401, 405, 503):
        return
    try:
        RejectedRequest.objects.create(
            repository=_printable(rejection.repo)[:201],
            delivery_id=_printable(rejection.delivery_id)[:256],
            status_code=rejection.status,
            reason=_printable(rejection.message)[:500],
        )
    except Exception:  # noqa: BLE001 - the rejection log must never turn a 4xx into a 500
        logger.exception("could not record rejected callback repo=%s", rejection.repo or "-")


def _presented_token(request: HttpRequest) -> str | None:
    for header in TOKEN_HEADERS:
        value = request.META.get(header)
        if value:
            return value
    return None


def _read_body(request: HttpRequest) -> bytes:
    """Read at most OOT_MAX_BODY_BYTES; 413 before parsing when the body is larger.

    A declared Content-Length over the limit is refused without reading. A
    chunked body has no Content-Length and Django would read it as empty, so
    it is read from the WSGI stream directly. Either way at most one byte
    more than the limit is read, whatever the sender declared.
    """
    limit = settings.OOT_MAX_BODY_BYTES
    declared = request.META.get("CONTENT_LENGTH", "").strip()
    if declared:
        if not (declared.isascii() and declared.isdigit()):
            raise Rejection(400, f"Content-Length is not a number: {declared[:40]!r}")
        if int(declared) > limit:
            raise Rejection(413, f"body of {declared} bytes is larger than the limit of {limit} bytes")
        stream = request
    elif "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        stream = request.META["wsgi.input"]
    else:
        return b""

    chunks = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(READ_CHUNK_BYTES, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise Rejection(413, f"body is larger than the limit of {limit} bytes")
    return b"".join(chunks)


def _check_content_type(request: HttpRequest) -> None:
    """Accept application/json (UTF-8) or no Content-Type at all."""
    content_type = request.META.get("CONTENT_TYPE", "")
    media_type, _semicolon, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    if media_type and media_type != "application/json":
        raise Rejection(400, f"Content-Type must be application/json, got {media_type[:60]!r}")
    for parameter in parameters.split(";"):
        name, _equals, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise Rejection(400, f"charset must be utf-8, got {value.strip()[:40]!r}")


def _check_rate_limit(rate: policy.PendingRateLimit, repo: str, delivery_id: str) -> None:
    decision = rate.decision()
    if decision.limited:
        raise Rejection(
            429,
            f"repository {repo} is over its rate limit of {decision.limit} callbacks a minute; "
            f"retry after {decision.retry_after} s",
            repo,
            delivery_id,
            retry_after=decision.retry_after,
        )


@csrf_exempt
def results(request: HttpRequest) -> HttpResponse:
    """Accept one callback, from the relay or by direct reporting, and upsert its record."""
    try:
        return _accept(request)
    except Rejection as rejection:
        _log_rejection(rejection)
        return _error_response(rejection)
    except Exception:
        # A bug still gets the API's error shape in the response; the traceback goes to the log.
        logger.exception("callback failed with an unexpected error")
        # Django's handler sends this signal for the exceptions it catches, so
        # error reporters receive it and the test client raises it in the test.
        got_request_exception.send(sender=None, request=request)
        return JsonResponse({"ok": False, "error": "internal error; the service logged the details"}, status=500)


def _accept(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        raise Rejection(405, f"method {request.method} is not allowed; use POST")
    identity = _authenticate(request)

    raw = _read_body(request)
    _check_content_type(request)
    document = None
    try:
        document = decode_body(raw)
        if identity is not None:
            entry = policy.allowlist_entry(identity.repository)
            document = oidc.trusted_document(document, identity, entry.level if entry else None)
        callback = build_record(document)
    except PayloadError as error:
        raise Rejection(400, str(error), *request_ids(document)) from None

    repo, delivery_id = callback.repo, callback.delivery_id
    refusal = policy.admission_error(repo)
    if refusal:
        raise Rejection(403, refusal, repo, delivery_id)
    if identity is not None:
        _pin_repository_id(identity, delivery_id)
    check = _check_provenance(callback)
    # The callback is counted now, and Redis's reply is read just before the
    # write leaves for DynamoDB: the Redis round trip overlaps preparing and
    # signing the request, and a callback over its limit still writes nothing.
    rate = policy.start_rate_limit(request, repo)
    try:
        if check.mode == provenance.MODE_ENFORCE:
            # A reservation is made only for a callback within its limit.
            _check_rate_limit(rate, repo, delivery_id)
        _reserve_transition(check, callback)
        result = _write(callback, check, lambda: _check_rate_limit(rate, repo, delivery_id))
    finally:
        rate.discard()

    counters.record_callback(f"callbacks_{result.outcome}", repo, now_iso())
    if callback.unknown_schema_version is not None:
        log_unknown_schema_version(repo, callback.unknown_schema_version)
    logger.info(
        "callback %s repo=%s delivery_id=%s dynamoKey=%s status=%s",
        result.outcome,
        repo,
        _loggable(delivery_id),
        _loggable(callback.key),
        result.status,
    )
    return JsonResponse({"ok": True, "status": result.status, "dynamoKey": callback.key})


def _write(callback: Callback, check: provenance.ProvenanceCheck, before_send) -> WriteResult:
    """Write the record; `before_send` runs once, just before the request is sent, and may reject it by raising."""
    repo, delivery_id = callback.repo, callback.delivery_id
    written = False
    try:
        result = write_record(callback.record, before_send=before_send)
        written = True
    except DynamoUnavailable as error:
        # A rejection by before_send (429) outranks DynamoDB's 503, also when
        # the write failed before reaching the point where it runs.
        before_send()
        raise Rejection(
            503,
            f"DynamoDB is unavailable ({error}); retry later",
            repo,
            delivery_id,
            retry_after=DYNAMODB_RETRY_AFTER_SECONDS,
        ) from None
    except RecordRejected as error:
        raise Rejection(400, f"DynamoDB rejected the record: {error}", repo, delivery_id) from None
    finally:
        # Releases the reservation when nothing was written, so a retry can pass.
        provenance.finish_transition(check, written=written)
    return result


def _check_relay_token(request: HttpRequest) -> None:
    if not policy.token_configured():
        raise Rejection(503, "no relay token is configured; set OOT_RELAY_TOKEN or create one in admin", retry_after=60)
    if not policy.check_token(_presented_token(request)):
        raise Rejection(401, "missing or invalid relay token in X-OOT-Relay-Token")


def _authenticate(request: HttpRequest) -> oidc.OidcIdentity | None:
    """Check the relay token, or with direct reporting an OIDC bearer token; return the OIDC identity if any.

    A request with a relay token header always goes the relay way, so a
    relay keeps working unchanged when direct reporting is enabled.
    """
    presented = _presented_token(request)
    bearer = oidc.bearer_token(request) if settings.OOT_DIRECT_REPORTING else None
    if bearer is not None and not presented:
        try:
            return oidc.verify_token(bearer)
        except oidc.OidcError as error:
            retry_after = DYNAMODB_RETRY_AFTER_SECONDS if error.status == 503 else None
            raise Rejection(error.status, error.message, retry_after=retry_after) from None

    if settings.OOT_DIRECT_REPORTING and not presented and not policy.token_configured():
        raise Rejection(401, "missing token: send an OIDC token as Bearer or a relay token in X-OOT-Relay-Token")
    _check_relay_token(request)
    return None


def _pin_repository_id(identity: oidc.OidcIdentity, delivery_id: str) -> None:
    try:
        oidc.pin_repository_id(identity)
    except oidc.OidcError as error:
        retry_after = DYNAMODB_RETRY_AFTER_SECONDS if error.status == 503 else None
        raise Rejection(error.status, error.message, identity.repository, delivery_id, retry_after) from None


def _check_provenance(callback: Callback) -> provenance.ProvenanceCheck:
    """Apply the backend's provenance mode to the callback token (403 when enforced)."""
    mode = provenance.mode_for(policy.allowlist_entry(callback.repo))
    try:
        return provenance.check_callback(callback, mode)
    except provenance.ProvenanceError as error:
        retry_after = DYNAMODB_RETRY_AFTER_SECONDS if error.status == 503 else None
        raise Rejection(error.status, error.message, callback.repo, callback.delivery_id, retry_after) from None


def _reserve_transition(check: provenance.ProvenanceCheck, callback: Callback) -> None:
    """Reserve the job's transition under enforce: 409 on a replay or backwards move, 403 on a used token."""
    try:
        provenance.reserve_transition(check)
    except provenance.ProvenanceError as error:
        retry_after = DYNAMODB_RETRY_AFTER_SECONDS if error.status == 503 else None
        raise Rejection(error.status, error.message, callback.repo, callback.delivery_id, retry_after) from None


@csrf_exempt
def callback_tokens(request: HttpRequest) -> HttpResponse:
    """Mint a callback token for one dispatch, for the relay."""
    try:
        return _mint(request)
    except Rejection as rejection:
        _log_rejection(rejection)
        return _error_response(rejection)


def _mint(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        raise Rejection(405, f"method {request.method} is not allowed; use POST")
    _check_relay_token(request)

    raw = _read_body(request)
    _check_content_type(request)
    try:
        mint_request = provenance.parse_mint_request(decode_body(raw))
    except PayloadError as error:
        raise Rejection(400, str(error)) from None

    refusal = policy.admission_error(mint_request.repository)
    if refusal:
        raise Rejection(403, refusal, mint_request.repository, mint_request.delivery_id)

    token, expires_at = provenance.mint_token(
        delivery_id=mint_request.delivery_id,
        repository=mint_request.repository,
        pr_number=mint_request.pr_number,
        head_sha=mint_request.head_sha,
        dispatched_at=mint_request.dispatched_at,
    )
    counters.increment("callback_tokens_minted")
    logger.info(
        "callback token minted repo=%s delivery_id=%s pr_number=%s",
        mint_request.repository,
        mint_request.delivery_id,
        mint_request.pr_number,
    )
    expires = expires_at.isoformat().replace("+00:00", "Z")
    return JsonResponse({"ok": True, "callback_token": token, "expires_at": expires})


def allowlist(request: HttpRequest) -> HttpResponse:
    """Serve the enabled allowlist as JSON grouped by level, for the relay; 304 when If-None-Match matches."""
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"ok": False, "error": f"method {request.method} is not allowed; use GET"}, status=405)
        response["Allow"] = "GET, HEAD"
        return response

    body, etag = policy.allowlist_body()
    presented = parse_etags(request.META.get("HTTP_IF_NONE_MATCH", ""))
    # If-None-Match uses the weak comparison, so W/"x" matches "x".
    if "*" in presented or etag in (tag.removeprefix("W/") for tag in presented):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(body, content_type="application/json")
    response["ETag"] = etag
    response["Cache-Control"] = "public, max-age=60"
    return response
