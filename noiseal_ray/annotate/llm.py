"""LLM relabeling: the annotator, an OpenAI-compatible HTTP client (its backend: ``llm_backend``).

Driver side, once per run::

    with llm_backend(config=cfg, run_dir=run_dir) as spec:   # deploys, or checks llm_endpoint
        ...                                                  # actors: make_annotator(spec)

Actor side, ``LLMAnnotator(**spec.options).annotate(queries=..., label_names=...)`` sends all
cache misses of a batch concurrently (at most ``concurrency`` in flight), greedy and constrained
to the label names, and returns one ``Answer`` per query; it never raises for one sample.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from noiseal_ray.annotate.base import Answer, Query
from noiseal_ray.annotate.cache import AnswerCache, CachedAnswer, answer_key
from noiseal_ray.annotate.endpoint import (
    DETAIL_CHARS,
    Failed,
    Reply,
    Retryable,
    auth_headers,
    check_endpoint,
    normalize_base_url,
    reply_from_response,
)
from noiseal_ray.annotate.llm_backend import CACHE_DIRNAME, llm_backend
from noiseal_ray.annotate.prompt import (
    DEFAULT_MAX_TEXT_CHARS,
    PROMPT_VERSION,
    build_messages,
    build_request,
    choice_ids,
    display_names,
    parse_choice,
)

# Importers of this module before the endpoint and the backend had modules of their own.
_Reply = Reply
__all__ = ["CACHE_DIRNAME", "LLMAnnotator", "auth_headers", "check_endpoint", "llm_backend", "normalize_base_url"]

log = logging.getLogger(__name__)


BACKOFF_CAP_S = 30.0  # the longest wait between two attempts of one request (plus jitter)


def longest_annotate_s(*, queries: int, concurrency: int, timeout_s: float, retries: int,
                       cold_start_timeout_s: float | None, backoff_s: float = 0.5) -> float:
    """Upper bound, in seconds, on one ``LLMAnnotator.annotate`` call over ``queries`` uncached
    queries with these options: every request makes at most ``retries + 1`` attempts of at most
    its timeout, with capped backoffs between them; the first goes alone with the cold-start
    timeout; the rest run ``concurrency`` at a time. A slow server is slow, not hung, until then.
    """
    def one(seconds: float) -> float:
        return (retries + 1) * seconds + retries * (BACKOFF_CAP_S + backoff_s)

    first = one(cold_start_timeout_s) if cold_start_timeout_s else 0.0
    return first + -(-max(queries, 0) // max(concurrency, 1)) * one(timeout_s)


def _timeout(seconds: float) -> Any:
    """httpx's timeout for a request allowed ``seconds``: connecting gets at most 10 s of it."""
    import httpx

    return httpx.Timeout(seconds, connect=min(10.0, seconds))


@dataclass(frozen=True)
class _Pending:
    """A query the cache could not answer: its position in the batch, cache key and request."""

    index: int
    key: str
    body: dict[str, Any]
    choices: list[str]  # the label names offered, in the order the request lists them
    ids: list[int]  # label id of each choice


class LLMAnnotator:
    """Relabels queries through an OpenAI-compatible ``/chat/completions`` endpoint.

    Options (all plain values, so a spec can be pickled to Ray actors):
      base_url        OpenAI-compatible base (``.../v1`` appended when missing)
      model           the request's "model" field
      cache_model     model identity in the cache key (default: ``model``); the backend passes
                      the weights' source so two models served under one id never share answers
      api_key_env     name of the env var holding the API key (read here, never stored)
      concurrency     requests in flight at once; timeout_s per attempt; retries after the first
      cold_start_timeout_s  the first request this annotator sends goes alone and may take this
                      long: an autoscaled deployment at zero replicas answers it once one has
                      started; the rest follow concurrently (None: no such wait)
      backoff_s       first retry wait (exponential, with jitter, capped at 30 s)
      min_logprob     answers whose log-probability is below it become ``low_logprob`` errors
      label_descriptions  label name -> readable name shown to (and answered by) the LLM
      cache_dir       folder of the persistent answer cache (None: no persistence)
      max_text_chars  texts longer than this are truncated in prompts

    ``http_requests`` counts HTTP attempts made (retries included), for tests and reports.
    """

    name = "llm"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        cache_model: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 32,
        timeout_s: float = 120.0,
        cold_start_timeout_s: float | None = None,
        retries: int = 3,
        backoff_s: float = 0.5,
        min_logprob: float | None = None,
        label_descriptions: Mapping[str, str] | None = None,
        cache_dir: str | None = None,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.cache_model = cache_model or model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.cold_start_timeout_s = cold_start_timeout_s
        self._serving = cold_start_timeout_s is None  # False until a first request came back
        self.retries = retries
        self.backoff_s = backoff_s
        self.min_logprob = min_logprob
        self.label_descriptions = dict(label_descriptions or {})
        self.max_text_chars = max_text_chars
        self.cache = AnswerCache(directory=cache_dir)
        self.http_requests = 0
        self._count_lock = threading.Lock()
        self._client: Any = None  # httpx.Client, created on first use (actors pickle options only)

    # -- HTTP -------------------------------------------------------------------------------

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.Client(
                timeout=_timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
                headers=auth_headers(self.api_key_env),
            )
        return self._client

    def close(self) -> None:
        """Close the HTTP connection pool (the annotator stays usable: it reopens on demand)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _post_once(self, body: dict[str, Any], timeout_s: float | None = None) -> Reply:
        import httpx

        with self._count_lock:
            self.http_requests += 1
        wait = timeout_s or self.timeout_s
        try:
            r = self._http().post(f"{self.base_url}/chat/completions", json=body, timeout=_timeout(wait))
        except httpx.TimeoutException as exc:
            raise Retryable("timeout", f"no answer within {wait:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise Retryable("connection", f"{type(exc).__name__}: {exc}"[:DETAIL_CHARS]) from None
        return reply_from_response(r)

    def _post(self, body: dict[str, Any], timeout_s: float | None = None) -> Reply:
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential_jitter,
        )

        retrying = Retrying(
            retry=retry_if_exception_type(Retryable),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential_jitter(initial=self.backoff_s, max=BACKOFF_CAP_S, jitter=self.backoff_s),
            reraise=True,
        )
        try:
            return retrying(self._post_once, body, timeout_s)
        except RetryError as exc:  # only without reraise; kept for safety
            raise exc.last_attempt.exception() from None

    # -- annotation -------------------------------------------------------------------------

    def _accept(self, label: int, logprob: float | None, *, cached: bool) -> Answer:
        # A missing log-probability (an endpoint without logprobs) is not "below" the threshold.
        if self.min_logprob is not None and logprob is not None and logprob < self.min_logprob:
            return Answer(
                label=None,
                logprob=logprob,
                error=f"low_logprob: {logprob:.3f} < {self.min_logprob:g} for label {label}",
                cached=cached,
            )
        return Answer(label=label, logprob=logprob, cached=cached)

    def annotate(self, *, queries: Sequence[Query], label_names: Sequence[str]) -> list[Answer]:
        """One answer per query, in order. Cache hits (``cached=True``) make no request; misses are
        sent concurrently; every failure is returned as ``Answer(label=None, error="kind: ...")``
        with kind in timeout, connection, http_<status>, bad_response, unparseable, low_logprob,
        bad_query. Successful answers are persisted before returning."""
        names = display_names(label_names=label_names, label_descriptions=self.label_descriptions)
        answers: list[Answer | None] = [None] * len(queries)
        pending: list[_Pending] = []
        for i, q in enumerate(queries):
            answer, item = self._lookup(i, q, names=names, label_names=label_names)
            if item is not None:
                pending.append(item)
            else:
                answers[i] = answer
        if pending:
            self._ask(pending, names=names, answers=answers)
        return [a if a is not None else Answer(label=None, error="internal: no answer") for a in answers]

    def _lookup(self, i: int, q: Query, *, names: list[str],
                label_names: Sequence[str]) -> tuple[Answer | None, _Pending | None]:
        """The answer to query ``i`` from the cache (or a ``bad_query`` error), else its request."""
        try:
            ids = choice_ids(n_labels=len(names), candidates=q.candidates)
            messages = build_messages(
                text=q.text,
                demos=q.demos,
                label_names=label_names,
                label_descriptions=self.label_descriptions,
                max_text_chars=self.max_text_chars,
            )
        except ValueError as exc:
            return Answer(label=None, error=f"bad_query: {exc}"), None
        choices = [names[c] for c in ids]
        key = answer_key(model=self.cache_model, messages=messages, choices=choices, prompt_version=PROMPT_VERSION)
        hit = self.cache.get(key)
        if hit is not None and 0 <= hit.label < len(names) and names[hit.label] == hit.choice:
            return self._accept(hit.label, hit.logprob, cached=True), None
        body = build_request(model=self.model, messages=messages, choices=choices)
        return None, _Pending(index=i, key=key, body=body, choices=choices, ids=ids)

    def _answer_one(self, item: _Pending, timeout_s: float | None = None) -> tuple[Answer, int | None]:
        """Answer one pending query; also return the parsed label id (None: nothing to cache)."""
        try:
            reply = self._post(item.body, timeout_s)
        except (Retryable, Failed) as exc:
            return Answer(label=None, error=f"{exc.kind}: {exc.detail}"), None
        except Exception as exc:  # never raise for one sample
            return Answer(label=None, error=f"client: {type(exc).__name__}: {exc}"[:DETAIL_CHARS]), None
        idx = parse_choice(reply.content, choices=item.choices)
        if idx is None:
            return Answer(label=None, error=f"unparseable: {str(reply.content)[:DETAIL_CHARS]!r}"), None
        return self._accept(item.ids[idx], reply.logprob, cached=False), item.ids[idx]

    def _ask(self, pending: list[_Pending], *, names: list[str], answers: list[Answer | None]) -> None:
        """Send ``pending`` concurrently, fill their ``answers`` slots and persist what parsed."""
        new_entries: list[tuple[str, CachedAnswer]] = []
        self._http()  # one shared, thread-safe client, created before the threads start
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(pending)))
        try:
            for item, (answer, label) in self._replies(pending, pool):
                answers[item.index] = answer
                # Every parsed answer is stored, even one under min_logprob: the threshold is
                # applied on read, so changing it needs no new request. Failures are not stored.
                if label is not None:
                    new_entries.append((item.key, CachedAnswer(label=label, choice=names[label],
                                                               logprob=answer.logprob)))
        except BaseException:
            # Ctrl-C or a dying actor: drop the queued requests instead of sending them all.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            # Persist what was answered, also when interrupted: a rerun asks only the rest.
            try:
                self.cache.add(new_entries, model=self.cache_model)
            except OSError as exc:  # a read-only run dir must not lose the answers themselves
                log.warning("could not persist %d LLM answers: %s", len(new_entries), exc)
        pool.shutdown(wait=True)

    def _replies(self, pending: list[_Pending], pool: ThreadPoolExecutor) -> Iterator[tuple[_Pending, tuple[Answer, int | None]]]:
        """(item, reply) for every pending query, in order. Until one request has come back, the
        first goes alone with the cold-start timeout: sending the whole batch to a deployment
        still starting its first replica would time the requests out and resend them all."""
        rest = pending
        if not self._serving:
            first = pending[0]
            reply = self._answer_one(first, self.cold_start_timeout_s)
            self._serving = True  # answered or not: the others keep their own timeouts and retries
            yield first, reply
            rest = pending[1:]
        yield from zip(rest, pool.map(self._answer_one, rest))

    def __del__(self) -> None:  # best effort: free sockets when an actor drops the annotator
        try:
            self.close()
        except Exception:
            pass
