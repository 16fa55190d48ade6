"""Build annotators from a picklable spec; start and stop their backends on the driver.

The driver enters ``annotator_backend`` once per run (it may deploy an LLM service); the spec it
yields travels to Ray Data actors, which call ``make_annotator`` there.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from noiseal_ray.annotate.base import Annotator, AnnotatorSpec
from noiseal_ray.config import RunConfig

__all__ = ["AnnotatorSpec", "annotator_backend", "make_annotator"]


def make_annotator(spec: AnnotatorSpec) -> Annotator | None:
    """Return the annotator for ``spec`` (None for kind "none": P gets no label)."""
    if spec.kind == "none":
        return None
    if spec.kind == "knn":
        from noiseal_ray.annotate.knn import KnnAnnotator

        return KnnAnnotator()
    if spec.kind == "llm":
        from noiseal_ray.annotate.llm import LLMAnnotator

        return LLMAnnotator(**spec.options)
    raise ValueError(f"unknown annotator kind {spec.kind!r}")


@contextlib.contextmanager
def annotator_backend(*, config: RunConfig, run_dir: str) -> Iterator[AnnotatorSpec]:
    """Start what the configured annotator needs for the whole run; yield its spec; stop it."""
    if config.annotator != "llm":
        yield AnnotatorSpec(kind=config.annotator)
        return
    from noiseal_ray.annotate.llm_backend import llm_backend

    with llm_backend(config=config, run_dir=run_dir) as spec:
        yield spec
