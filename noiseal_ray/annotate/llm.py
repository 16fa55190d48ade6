"""LLM relabeling: the annotator (an OpenAI-compatible HTTP client) and its backend (Ray Serve vLLM).

Driver side, once per run::

    with llm_backend(config=cfg, run_dir=run_dir) as spec:   # deploys, or checks llm_endpoint
        ...                                                  # actors: make_annotator(spec)

Actor side, ``LLMAnnotator(**spec.options).annotate(queries=..., label_names=...)`` sends all
cache misses of a batch concurrently (at most ``concurrency`` in flight), greedy and constrained
to the label names, and returns one ``Answer`` per query; it never raises for one sample.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from noiseal_ray.annotate.base import Answer, Query
from noiseal_ray.annotate.cache import AnswerCache, CachedAnswer, answer_key
from noiseal_ray.annotate.factory import AnnotatorSpec
from noiseal_ray.annotate.prompt import (
    DEFAULT_MAX_TEXT_CHARS,
    PROMPT_VERSION,
    build_messages,
    build_request,
    choice_ids,
    display_names,
    parse_choice,
)
from noiseal_ray.config import RunConfig
from noiseal_ray.errors import AnnotatorError

log = logging.getLogger(__name__)

CACHE_DIRNAME = "llm_cache"
_DETAIL_CHARS = 200  # error details are truncated: response bodies can be long


class _Retryable(Exception):
    """A failure worth another attempt (timeout, connection error, 429, 5xx)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class _Failed(Exception):
    """A failure that another attempt would not fix (4xx, malformed response)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class _Reply:
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


class LLMAnnotator:
    """Relabels queries through an OpenAI-compatible ``/chat/completions`` endpoint.

    Options (all plain values, so a spec can be pickled to Ray actors):
      base_url        OpenAI-compatible base (``.../v1`` appended when missing)
      model           the request's "model" field
      cache_model     model identity in the cache key (default: ``model``); the backend passes
                      the weights' source so two models served under one id never share answers
      api_key_env     name of the env var holding the API key (read here, never stored)
      concurrency     requests in flight at once; timeout_s per attempt; retries after the first
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
                timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
                limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
                headers=auth_headers(self.api_key_env),
            )
        return self._client

    def close(self) -> None:
        """Close the HTTP connection pool (the annotator stays usable: it reopens on demand)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _post_once(self, body: dict[str, Any]) -> _Reply:
        import httpx

        with self._count_lock:
            self.http_requests += 1
        try:
            r = self._http().post(f"{self.base_url}/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable("timeout", f"no answer within {self.timeout_s:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable("connection", f"{type(exc).__name__}: {exc}"[:_DETAIL_CHARS]) from None
        if r.status_code == 429 or r.status_code >= 500:
            raise _Retryable(f"http_{r.status_code}", r.text[:_DETAIL_CHARS])
        if r.status_code >= 400:
            raise _Failed(f"http_{r.status_code}", r.text[:_DETAIL_CHARS])
        try:
            choice = r.json()["choices"][0]
            content = choice["message"]["content"]
            tokens = (choice.get("logprobs") or {}).get("content") or []
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Failed("bad_response", r.text[:_DETAIL_CHARS]) from None
        logprob: float | None = None
        if tokens:
            try:
                logprob = float(sum(float(t["logprob"]) for t in tokens))
            except (KeyError, TypeError, ValueError):
                logprob = None
            if logprob is not None and not math.isfinite(logprob):
                logprob = None
        return _Reply(content=content, logprob=logprob)

    def _post(self, body: dict[str, Any]) -> _Reply:
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential_jitter,
        )

        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential_jitter(initial=self.backoff_s, max=30.0, jitter=self.backoff_s),
            reraise=True,
        )
        try:
            return retrying(self._post_once, body)
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
        pending: list[tuple[int, str, dict[str, Any], list[str], list[int]]] = []
        for i, q in enumerate(queries):
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
                answers[i] = Answer(label=None, error=f"bad_query: {exc}")
                continue
            choices = [names[c] for c in ids]
            key = answer_key(model=self.cache_model, messages=messages, choices=choices, prompt_version=PROMPT_VERSION)
            hit = self.cache.get(key)
            if hit is not None and 0 <= hit.label < len(names) and names[hit.label] == hit.choice:
                answers[i] = self._accept(hit.label, hit.logprob, cached=True)
                continue
            pending.append((i, key, build_request(model=self.model, messages=messages, choices=choices), choices, ids))

        def run(item: tuple[int, str, dict[str, Any], list[str], list[int]]) -> tuple[int, str, Answer, int | None]:
            """Answer one pending query; also return the parsed label id (None: nothing to cache)."""
            i, key, body, choices, ids = item
            try:
                reply = self._post(body)
            except (_Retryable, _Failed) as exc:
                return i, key, Answer(label=None, error=f"{exc.kind}: {exc.detail}"), None
            except Exception as exc:  # never raise for one sample
                return i, key, Answer(label=None, error=f"client: {type(exc).__name__}: {exc}"[:_DETAIL_CHARS]), None
            idx = parse_choice(reply.content, choices=choices)
            if idx is None:
                return i, key, Answer(label=None, error=f"unparseable: {str(reply.content)[:_DETAIL_CHARS]!r}"), None
            return i, key, self._accept(ids[idx], reply.logprob, cached=False), ids[idx]

        new_entries: list[tuple[str, CachedAnswer]] = []
        if pending:
            self._http()  # one shared, thread-safe client, created before the threads start
            pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(pending)))
            try:
                for i, key, answer, label in pool.map(run, pending):
                    answers[i] = answer
                    # Every parsed answer is stored, even one under min_logprob: the threshold is
                    # applied on read, so changing it needs no new request. Failures are not stored.
                    if label is not None:
                        new_entries.append((key, CachedAnswer(label=label, choice=names[label], logprob=answer.logprob)))
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
        return [a if a is not None else Answer(label=None, error="internal: no answer") for a in answers]

    def __del__(self) -> None:  # best effort: free sockets when an actor drops the annotator
        try:
            self.close()
        except Exception:
            pass


# -- backend ---------------------------------------------------------------------------------


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


def _annotator_options(
    *, config: RunConfig, run_dir: str, base_url: str, model: str, cache_model: str
) -> dict[str, Any]:
    return {
        "base_url": base_url,
        "model": model,
        "cache_model": cache_model,
        "api_key_env": config.llm_api_key_env,
        "concurrency": config.llm_concurrency,
        "timeout_s": config.llm_timeout_s,
        "retries": config.llm_retries,
        "min_logprob": config.llm_min_logprob,
        "label_descriptions": dict(config.label_descriptions),
        "cache_dir": str(Path(run_dir) / CACHE_DIRNAME),
    }


@contextlib.contextmanager
def llm_backend(*, config: RunConfig, run_dir: str) -> Iterator[AnnotatorSpec]:
    """Make the configured LLM usable for the whole run; yield the annotator spec; tear down.

    With ``config.llm_endpoint``: check it answers (no deployment). Otherwise deploy
    ``config.llm_model`` (None: the packaged SmolLM2, converted once) with ``ray.serve.llm`` on the
    Ray cluster the caller connected to, wait until it runs and warm it up; on exit delete it.
    When the LLM cannot be used at all: with ``config.annotator_fallback`` set, log a warning and
    yield that annotator's spec instead; otherwise raise AnnotatorError.
    """
    deployment = None
    fallback_reason: str | None = None
    options: dict[str, Any] = {}
    try:
        if config.llm_endpoint:
            base_url = normalize_base_url(config.llm_endpoint)
            model = check_endpoint(base_url=base_url, api_key_env=config.llm_api_key_env, model=config.llm_model)
            options = _annotator_options(config=config, run_dir=run_dir, base_url=base_url, model=model, cache_model=model)
        else:
            deployment = _deploy(config)
            options = _annotator_options(
                config=config,
                run_dir=run_dir,
                base_url=deployment.base_url,
                model=deployment.model_id,
                cache_model=deployment.model_source,
            )
    except AnnotatorError as exc:
        if config.annotator_fallback in (None, "llm"):
            raise
        fallback_reason = str(exc)
    if fallback_reason is not None:
        log.warning(
            "LLM annotator unavailable (%s); falling back to the %r annotator",
            fallback_reason,
            config.annotator_fallback,
        )
        yield AnnotatorSpec(kind=str(config.annotator_fallback))
        return
    try:
        yield AnnotatorSpec(kind="llm", options=options)
    finally:
        if deployment is not None:
            from noiseal_ray.annotate.service import teardown_llm_app

            teardown_llm_app(deployment, quiet=True)


def _deploy(config: RunConfig) -> Any:
    """Deploy and warm up; every failure becomes AnnotatorError (so the fallback applies)."""
    try:
        from noiseal_ray.annotate import service
        from noiseal_ray.annotate.llm_model import resolve_llm_model
    except ImportError as exc:  # pragma: no cover - both are in this package
        raise AnnotatorError(str(exc)) from None
    try:
        import ray.serve.llm  # noqa: F401  (fails fast, with a clear message, without vLLM)
    except ImportError as exc:
        raise AnnotatorError(
            f"the LLM annotator needs vLLM (pip install 'noiseal-ray[llm-cpu]'): {exc}"
        ) from None
    try:
        source = resolve_llm_model(config.llm_model)
    except (OSError, RuntimeError, ValueError) as exc:
        raise AnnotatorError(f"cannot prepare the LLM {config.llm_model or 'SmolLM2 (packaged)'}: {exc}") from None
    try:
        deployment = service.deploy_llm_app(
            model_source=source,
            use_gpu=config.llm_use_gpu,
            min_replicas=config.llm_min_replicas,
            max_replicas=config.llm_max_replicas,
            target_ongoing_requests=config.llm_target_ongoing_requests,
            max_model_len=config.llm_max_model_len,
        )
    except Exception as exc:
        raise AnnotatorError(f"deploying the LLM {source} with Ray Serve failed: {exc}") from None
    try:
        seconds = service.warm_up(
            base_url=deployment.base_url, model_id=deployment.model_id, timeout_s=max(config.llm_timeout_s, 300.0)
        )
        log.info("LLM warm-up request took %.1f s", seconds)
    except Exception as exc:
        # The driver may not reach the proxy (e.g. a Ray Client driver); actors still can.
        log.warning("LLM warm-up request from the driver failed (%s); continuing", exc)
    return deployment
