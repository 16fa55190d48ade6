"""An OpenAI-compatible endpoint: its URL, credentials, reachability check and reply parsing."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any

from noiseal_ray.errors import AnnotatorError

DETAIL_CHARS = 200  # error details are truncated: response bodies can be long


class Retryable(Exception):
    """A failure worth another attempt (timeout, connection error, 429, 5xx)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Failed(Exception):
    """A failure that another attempt would not fix (4xx, malformed response)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Reply:
    """One chat completion: the message text and the summed log-probability of its tokens
    (None when the endpoint sent none, or a non-finite one)."""

    content: str | None
    logprob: float | None


def normalize_base_url(url: str) -> str:
    """OpenAI-compatible base URL ending in ``/v1`` (``http://h:8000`` -> ``http://h:8000/v1``)."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def auth_headers(api_key_env: str | None) -> dict[str, str]:
    """Authorization header from the env var *named* ``api_key_env``; empty when unset.

    The key lives only in this dict, in memory: it is never logged, put in options, or written.
    """
    key = os.environ.get(api_key_env) if api_key_env else None
    return {"Authorization": f"Bearer {key}"} if key else {}


def reply_from_response(r: Any) -> Reply:
    """The ``Reply`` in an httpx response to ``/chat/completions``.

    Raises ``Retryable`` for 429 and 5xx, ``Failed`` for another 4xx or a body without
    ``choices[0].message.content``.
    """
    if r.status_code == 429 or r.status_code >= 500:
        raise Retryable(f"http_{r.status_code}", r.text[:DETAIL_CHARS])
    if r.status_code >= 400:
        raise Failed(f"http_{r.status_code}", r.text[:DETAIL_CHARS])
    try:
        choice = r.json()["choices"][0]
        content = choice["message"]["content"]
        tokens = (choice.get("logprobs") or {}).get("content") or []
    except (ValueError, KeyError, IndexError, TypeError):
        raise Failed("bad_response", r.text[:DETAIL_CHARS]) from None
    logprob: float | None = None
    if tokens:
        try:
            logprob = float(sum(float(t["logprob"]) for t in tokens))
        except (KeyError, TypeError, ValueError):
            logprob = None
        if logprob is not None and not math.isfinite(logprob):
            logprob = None
    return Reply(content=content, logprob=logprob)


def check_endpoint(*, base_url: str, api_key_env: str | None, model: str | None, timeout_s: float = 10.0) -> str:
    """Check that an OpenAI-compatible endpoint answers and return the model name to use.

    GET ``/models``: a connection failure, 401/403 or 5xx raises AnnotatorError. With
    ``model=None`` the endpoint must list exactly one model, which is returned.
    """
    import httpx

    url = f"{normalize_base_url(base_url)}/models"
    try:
        r = httpx.get(url, headers=auth_headers(api_key_env), timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise AnnotatorError(f"LLM endpoint {base_url} is unreachable ({type(exc).__name__}: {exc})") from None
    if r.status_code in (401, 403):
        raise AnnotatorError(
            f"LLM endpoint {base_url} rejected the credentials (HTTP {r.status_code}); "
            f"set the API key in the env var {api_key_env!r}"
        )
    if r.status_code >= 500:
        raise AnnotatorError(f"LLM endpoint {base_url} fails (HTTP {r.status_code})")
    listed: list[str] = []
    if r.status_code == 200:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            listed = [str(m["id"]) for m in r.json()["data"]]
    if model is not None:
        if listed and model not in listed:
            raise AnnotatorError(f"LLM endpoint {base_url} does not serve {model!r} (it lists {listed})")
        return model
    if len(listed) == 1:
        return listed[0]
    raise AnnotatorError(
        f"set llm_model to the model name at {base_url}" + (f" (it lists {listed})" if listed else "")
    )
