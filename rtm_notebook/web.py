"""Slack Web API clients over httpx: :class:`AsyncWebClient` and :class:`WebClient`.

Both have the same surface::

    client = WebClient(token)                      # or AsyncWebClient(token)
    client.chat_postMessage(channel="C123", text="Hi")   # -> SlackResponse
    client.api_call("conversations.history", channel="C123", limit=50)
    for page in client.paginate("users.list", limit=200): ...

Any attribute spelled like a Slack method with dots turned into underscores
is a method (``conversations_history`` -> ``conversations.history``).
``ok: false`` raises :class:`~rtm_notebook.errors.SlackApiError` carrying the
:class:`SlackResponse`; HTTP 429 waits ``Retry-After`` and retries, at most
``max_retries`` times.

The module is built like a sans-I/O library: :func:`_build_request` turns a
call into httpx request arguments and :func:`_outcome` turns an HTTP answer
into a :class:`SlackResponse`, a retry delay or an exception. The two clients
only send, sleep and loop, so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from ssl import SSLCertVerificationError
from typing import Any

import httpx
import orjson

from rtm_notebook import __version__
from rtm_notebook.errors import FATAL_CONNECT_ERRORS, SlackApiError, SlackClientError

__all__ = ["SlackResponse", "AsyncWebClient", "WebClient", "WebClients", "DEFAULT_BASE_URL", "mask_token", "retry_after"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://slack.com/api/"
# A Retry-After that is missing or unreadable still means "slow down".
DEFAULT_RETRY_AFTER = 1.0
# One absurd Retry-After must not park a notebook cell for an hour.
MAX_RETRY_AFTER = 60.0
# Backoff after 5xx / network errors: 0.5 s, 1 s, 2 s, ... capped.
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0

_METHOD_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)+")
# Every Slack method has at least one dot, so a method attribute has at least
# one underscore; `client.token` or a typo like `client.clsoe` stays an
# AttributeError instead of becoming a surprise API call.
_ATTR_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z][A-Za-z0-9]*)+")
_HEADER_SAFE_RE = re.compile(r"[\x21-\x7e]+")

_HINTS: dict[str, str] = {
    "channel_not_found": "Check the channel ID (C…, G… or D…) and that the bot can see the channel.",
    "not_in_channel": "Invite the bot to the channel first (/invite @your-bot).",
    "unknown_method": "There is no Web API method by that name; check the spelling (in snake_case attribute names every '_' becomes '.').",
    "ratelimited": "Slack is rate limiting this method; wait and call less often.",
    "invalid_response": "The server did not answer with Slack's JSON; check base_url and any proxy in between.",
}


def mask_token(token: str | None) -> str | None:
    """What a repr may show of a token: its type prefix, e.g. ``xoxb-…``."""
    if token is None:
        return None
    prefix, dash, _ = token.partition("-")
    return f"{prefix}-…" if dash and len(prefix) <= 5 else "…"


def _hint(data: Mapping[str, Any], error: str) -> str:
    if error == "missing_scope" and data.get("needed"):
        return f"The token lacks the scope {data.get('needed')!s}; add it to the app and reinstall."
    return _HINTS.get(error) or FATAL_CONNECT_ERRORS.get(error, "")


class SlackResponse(Mapping[str, Any]):
    """A Web API answer. Reads like the JSON dict Slack sent (``resp["ts"]``,
    ``resp.get("channel")``, ``"ok" in resp``).

    ``data`` is that dict, ``status_code`` and ``headers`` come from HTTP and
    ``method`` is the API method name (``"chat.postMessage"``).
    """

    __slots__ = ("data", "status_code", "headers", "method")

    def __init__(self, method: str, data: dict[str, Any], status_code: int = 200,
                 headers: Mapping[str, str] | None = None) -> None:
        self.method = method
        self.data = data
        self.status_code = status_code
        self.headers: Mapping[str, str] = headers if headers is not None else {}

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def ok(self) -> bool:
        return self.data.get("ok") is True

    def validate(self) -> SlackResponse:
        """Return ``self`` if Slack said ``ok: true``; raise :class:`SlackApiError` otherwise."""
        if self.ok:
            return self
        error = self.data.get("error")
        code = str(error) if error not in (None, "") else "no error code given"
        message = f"Slack's {self.method} failed: {code}"
        if self.status_code != 200:
            message += f" (HTTP {self.status_code})"
        hint = _hint(self.data, code)
        raise SlackApiError(f"{message}. {hint}" if hint else message, self)

    def __repr__(self) -> str:
        # Keys but never values: `data` can hold secrets (oauth.v2.access returns tokens).
        if self.ok:
            keys = [str(k) for k in self.data if k != "ok"]
            shown = ", ".join(keys[:8]) + (", …" if len(keys) > 8 else "")
            return f"<SlackResponse {self.method} ok: {shown}>" if keys else f"<SlackResponse {self.method} ok>"
        return f"<SlackResponse {self.method} error={self.data.get('error')!r} status={self.status_code}>"


# --- request building ---------------------------------------------------------


def _form_value(method: str, key: str, value: Any) -> str:
    """Encode one form/query field the way Slack reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        # Slack takes id lists (types=, users=, ids=) comma-separated.
        return ",".join(str(v) for v in value)
    try:
        return jsonlib.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise SlackClientError(f"{method}: argument {key}= cannot be sent to Slack ({exc}).") from None


def _fields(method: str, values: Mapping[str, Any]) -> dict[str, str]:
    return {k: _form_value(method, k, v) for k, v in values.items() if v is not None}


def _clean_token(token: Any) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str):
        raise SlackClientError(f"token must be a string (xoxb-…), not {type(token).__name__}.")
    token = token.strip()  # tokens pasted or read from files often end in a newline
    if not _HEADER_SAFE_RE.fullmatch(token):
        # Never echo it: httpx's own error would print the header value.
        raise SlackClientError("The token contains spaces or control characters; copy it again (it looks like xoxb-…).")
    return token


def _build_request(method: str, *, token: str | None, base_url: str, http_verb: str,
                   params: Mapping[str, Any] | None, json: Mapping[str, Any] | None,
                   data: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Turn one API call into keyword arguments for ``httpx.Client.request``.

    Form fields by default; a JSON body when ``json`` is given (other keyword
    arguments join it); with GET everything goes into the query string. A
    ``token`` argument anywhere overrides the client's token and, like the
    client's, travels only in the Authorization header.
    """
    if not isinstance(method, str) or not _METHOD_RE.fullmatch(method):
        raise SlackClientError(f"{method!r} is not a Slack Web API method name (like 'chat.postMessage').")
    verb = http_verb.upper() if isinstance(http_verb, str) else http_verb
    if verb not in ("GET", "POST"):
        raise SlackClientError(f"http_verb must be 'GET' or 'POST', not {http_verb!r}.")
    fields = {**(data or {}), **kwargs}
    query = dict(params or {})
    body = dict(json) if json is not None else None
    for source in (fields, query, body):
        if source is not None and "token" in source:
            override = source.pop("token")
            if override is not None:
                token = _clean_token(override)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request: dict[str, Any] = {"method": verb, "url": base_url + method, "headers": headers}
    if verb == "GET":
        if body is not None:
            raise SlackClientError(f"{method}: json= needs http_verb='POST'.")
        request["params"] = _fields(method, {**query, **fields})
        return request
    if query:
        request["params"] = _fields(method, query)
    if body is not None:
        body.update((k, v) for k, v in fields.items() if v is not None)
        try:
            request["content"] = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise SlackClientError(f"{method}: json= cannot be encoded as JSON ({exc}).") from None
        headers["Content-Type"] = "application/json; charset=utf-8"
    else:
        request["data"] = _fields(method, fields)
    return request


# --- response interpretation --------------------------------------------------


def retry_after(headers: Mapping[str, str]) -> float:
    try:
        seconds = float(headers.get("retry-after") or headers.get("Retry-After") or "")
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    if not seconds >= 0:  # also rejects NaN
        return DEFAULT_RETRY_AFTER
    return min(seconds, MAX_RETRY_AFTER)


def _backoff(attempt: int) -> float:
    return min(BACKOFF_BASE * 2**attempt, BACKOFF_MAX)


def _parse(method: str, status_code: int, headers: Mapping[str, str], content: bytes,
           secret: str | None = None) -> SlackResponse:
    """Decode Slack's JSON object; a body that is not one raises SlackApiError."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        return SlackResponse(method, data, status_code, headers)
    if status_code == 429:
        # Proxies and Slack itself may send a 429 with no body; it is still a rate limit.
        return SlackResponse(method, {"ok": False, "error": "ratelimited"}, status_code, headers)
    response = SlackResponse(method, {"ok": False, "error": "invalid_response"}, status_code, headers)
    what = "a JSON value that is not an object" if data is not None else "a body that is not JSON"
    snippet = content[:120].decode("utf-8", "replace")
    if secret:
        snippet = snippet.replace(secret, mask_token(secret) or "…")
    ctype = headers.get("content-type") or headers.get("Content-Type") or "no content type"
    raise SlackApiError(
        f"Slack's {method} answered HTTP {status_code} with {what} ({ctype}, {len(content)} bytes: "
        f"{snippet!r}). {_HINTS['invalid_response']}",
        response,
    )


def _outcome(method: str, status_code: int, headers: Mapping[str, str], content: bytes,
             attempt: int, max_retries: int, secret: str | None = None) -> SlackResponse | float:
    """Decide what an HTTP answer means: a validated SlackResponse, or the
    number of seconds to wait before retrying. Raises SlackApiError."""
    retryable = status_code == 429 or status_code >= 500
    if retryable and attempt < max_retries:
        return retry_after(headers) if status_code == 429 else _backoff(attempt)
    response = _parse(method, status_code, headers, content, secret)
    if status_code == 429:
        raise SlackApiError(
            f"Slack's {method} is rate limited (HTTP 429) and still was after {attempt} "
            f"retr{'y' if attempt == 1 else 'ies'}; Slack asked to wait {retry_after(headers):g} s. "
            "Call it less often.",
            response,
        )
    return response.validate()


# Errors after which Slack may already have acted on the request (a timed-out
# chat.postMessage may have posted) or that no retry can fix.
_NOT_RETRYABLE = (httpx.ReadTimeout, httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def _untrusted_certificate(exc: BaseException) -> bool:
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:  # chains can loop
        if isinstance(link, SSLCertVerificationError):
            return True
        chain.append(link)
        link = link.__cause__ or link.__context__
    return False


def _after_transport_error(method: str, base_url: str, exc: httpx.TransportError,
                           attempt: int, max_retries: int) -> float:
    """Seconds to wait before retrying after a network error; raises when done."""
    untrusted = _untrusted_certificate(exc)
    if not isinstance(exc, _NOT_RETRYABLE) and not untrusted and attempt < max_retries:
        return _backoff(attempt)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.ReadTimeout):
        advice = "Slack may or may not have carried it out; check before repeating a write."
    elif untrusted:
        # Typical behind a TLS-inspecting company proxy; retrying cannot help.
        advice = ("The server's TLS certificate is not trusted. Pass ssl=ssl.create_default_context(cafile=...) "
                  "with your organisation's CA bundle.")
    else:
        advice = f"Gave up after {attempt} retr{'y' if attempt == 1 else 'ies'}; check the network, base_url and proxy."
    raise SlackApiError(f"Could not call Slack's {method} at {base_url} ({detail}). {advice}") from exc


# --- the clients ----------------------------------------------------------------


class _Base:
    """Configuration and method-attribute lookup shared by both clients."""

    def __init__(self, token: str | None, base_url: str, timeout: float, ssl: Any,
                 proxy: str | None, headers: Mapping[str, str] | None, max_retries: int) -> None:
        self._token = _clean_token(token)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise SlackClientError(f"base_url must be an http(s) URL like {DEFAULT_BASE_URL!r}, not {base_url!r}.")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise SlackClientError(f"max_retries must be an integer >= 0, not {max_retries!r}.")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self.max_retries = max_retries
        self.headers = dict(headers or {})
        self._httpx_options: dict[str, Any] = {
            "timeout": httpx.Timeout(timeout),
            "verify": True if ssl is None else ssl,
            "proxy": proxy,
            "headers": {"User-Agent": f"rtm_notebook/{__version__} httpx/{httpx.__version__}", **self.headers},
        }
        self._closed = False

    def _request(self, method: str, http_verb: str, params: Any, json: Any, data: Any,
                 kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise SlackClientError(f"This {type(self).__name__} is closed; create a new one.")
        return _build_request(method, token=self._token, base_url=self.base_url, http_verb=http_verb,
                              params=params, json=json, data=data, kwargs=kwargs)

    def _outcome(self, method: str, answer: httpx.Response, attempt: int) -> SlackResponse | float:
        log.debug("%s -> HTTP %d", method, answer.status_code)
        outcome = _outcome(method, answer.status_code, answer.headers, answer.content, attempt,
                           self.max_retries, self._token)
        if not isinstance(outcome, SlackResponse):
            log.info("%s answered HTTP %d; retrying in %.1f s (retry %d of %d)",
                     method, answer.status_code, outcome, attempt + 1, self.max_retries)
        return outcome

    def _after_error(self, method: str, exc: httpx.TransportError, attempt: int) -> float:
        delay = _after_transport_error(method, self.base_url, exc, attempt, self.max_retries)
        log.info("%s failed (%s); retrying in %.1f s (retry %d of %d)",
                 method, type(exc).__name__, delay, attempt + 1, self.max_retries)
        return delay

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if not _ATTR_RE.fullmatch(name):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        method = name.replace("_", ".")
        api_call = self.api_call  # type: ignore[attr-defined]

        def call(**kwargs: Any) -> Any:
            return api_call(method, **kwargs)

        call.__name__ = name
        call.__doc__ = f"Call Slack's {method} Web API method; keyword arguments are its parameters."
        return call

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token={mask_token(self._token)!r}, base_url={self.base_url!r})"


class AsyncWebClient(_Base):
    """Slack Web API client for asyncio code (async handlers, notebooks).

    ``token`` is a bot token (``xoxb-…``); ``ssl`` is an ``ssl.SSLContext`` or
    a bool (certificate verification); ``proxy`` a URL; ``headers`` extra
    HTTP headers; ``max_retries`` bounds retries after HTTP 429, 5xx and
    network errors. Use it on one event loop; close with :meth:`aclose` or
    ``async with``.
    """

    def __init__(self, token: str | None = None, *, base_url: str = DEFAULT_BASE_URL, timeout: float = 30.0,
                 ssl: Any = None, proxy: str | None = None, headers: Mapping[str, str] | None = None,
                 max_retries: int = 3) -> None:
        super().__init__(token, base_url, timeout, ssl, proxy, headers, max_retries)
        self._http = httpx.AsyncClient(**self._httpx_options)

    async def api_call(self, method: str, *, http_verb: str = "POST", params: Mapping[str, Any] | None = None,
                       json: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                       **kwargs: Any) -> SlackResponse:
        """Call ``method`` (e.g. ``"chat.postMessage"``) and return its :class:`SlackResponse`.

        Keyword arguments are the method's parameters, sent as form fields
        (lists of IDs comma-joined, other lists and dicts as JSON); ``json=``
        sends a JSON body instead; ``http_verb="GET"`` sends a query string.
        ``data=`` is the seed API's name for form fields. Raises
        :class:`SlackApiError` on ``ok: false``, exhausted retries or an answer
        that is not Slack's JSON.
        """
        request = self._request(method, http_verb, params, json, data, kwargs)
        attempt = 0
        while True:
            try:
                answer = await self._http.request(**request)
            except httpx.TransportError as exc:
                delay = self._after_error(method, exc, attempt)
            else:
                outcome = self._outcome(method, answer, attempt)
                if isinstance(outcome, SlackResponse):
                    return outcome
                delay = outcome
            attempt += 1
            await asyncio.sleep(delay)

    async def paginate(self, method: str, **kwargs: Any) -> AsyncIterator[SlackResponse]:
        """Yield every page of a cursor-paginated method (``users.list``,
        ``conversations.list``, ``conversations.history``, …), following
        ``response_metadata.next_cursor`` until it is empty. Pass ``limit=``
        to choose the page size."""
        while True:
            page = await self.api_call(method, **kwargs)
            yield page
            cursor = _next_cursor(page)
            if not cursor:
                return
            kwargs["cursor"] = cursor

    async def aclose(self) -> None:
        """Close the connection pool. Calls after this raise SlackClientError."""
        self._closed = True
        await self._http.aclose()

    async def __aenter__(self) -> AsyncWebClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


class WebClient(_Base):
    """Slack Web API client for plain synchronous code and sync handlers.

    Same arguments and surface as :class:`AsyncWebClient`. One instance may be
    used from many threads at once (httpx's connection pool is thread-safe);
    close with :meth:`close` or ``with``.
    """

    def __init__(self, token: str | None = None, *, base_url: str = DEFAULT_BASE_URL, timeout: float = 30.0,
                 ssl: Any = None, proxy: str | None = None, headers: Mapping[str, str] | None = None,
                 max_retries: int = 3) -> None:
        super().__init__(token, base_url, timeout, ssl, proxy, headers, max_retries)
        self._http = httpx.Client(**self._httpx_options)

    def api_call(self, method: str, *, http_verb: str = "POST", params: Mapping[str, Any] | None = None,
                 json: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> SlackResponse:
        """Call ``method`` (e.g. ``"chat.postMessage"``) and return its :class:`SlackResponse`.

        See :meth:`AsyncWebClient.api_call`; this one blocks the calling thread
        (including while waiting out a ``Retry-After``).
        """
        request = self._request(method, http_verb, params, json, data, kwargs)
        attempt = 0
        while True:
            try:
                answer = self._http.request(**request)
            except httpx.TransportError as exc:
                delay = self._after_error(method, exc, attempt)
            else:
                outcome = self._outcome(method, answer, attempt)
                if isinstance(outcome, SlackResponse):
                    return outcome
                delay = outcome
            attempt += 1
            time.sleep(delay)

    def paginate(self, method: str, **kwargs: Any) -> Iterator[SlackResponse]:
        """Yield every page of a cursor-paginated method, following
        ``response_metadata.next_cursor`` until it is empty. Pass ``limit=``
        to choose the page size."""
        while True:
            page = self.api_call(method, **kwargs)
            yield page
            cursor = _next_cursor(page)
            if not cursor:
                return
            kwargs["cursor"] = cursor

    def close(self) -> None:
        """Close the connection pool. Calls after this raise SlackClientError."""
        self._closed = True
        self._http.close()

    def __enter__(self) -> WebClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _next_cursor(page: SlackResponse) -> str | None:
    meta = page.get("response_metadata")
    cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
    return cursor if isinstance(cursor, str) and cursor else None


class WebClients:
    """One client's pair of Web API clients, made on first use with its token and
    HTTP options: an :class:`AsyncWebClient` for its loop, a :class:`WebClient`
    for other threads (sync handlers). Thread-safe."""

    def __init__(self) -> None:
        self._clients: dict[bool, AsyncWebClient | WebClient] = {}
        self._lock = threading.Lock()

    def get(self, is_async: bool, token: str | None, options: dict) -> AsyncWebClient | WebClient:
        with self._lock:
            client = self._clients.get(is_async)
            if client is None:
                kind = AsyncWebClient if is_async else WebClient
                client = self._clients[is_async] = kind(token, **options)
            return client

    def forget(self) -> AsyncWebClient | None:
        """Drop both (closing the sync one); the async one is returned, to be awaited closed."""
        with self._lock:
            clients, self._clients = self._clients, {}
        sync = clients.get(False)
        if sync is not None:
            sync.close()
        return clients.get(True)
