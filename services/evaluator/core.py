"""The evaluator's pure rules, free of the bus and protobuf: what to do with a result, how to find and
check its image, and how a batch of real images becomes quality outcomes (one per request, errors
included: a result is never dropped)."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from PIL import Image

SIMULATOR_MODEL = "simulator"


@dataclass(frozen=True)
class EvalRequest:
    """What the evaluator needs from a TaskResult."""

    task_id: str
    attempt: int
    prompt: str
    success: bool
    simulated: bool
    simulated_quality: float = 0.0
    image_uri: str = ""
    image_sha256: str = ""
    model: str = ""  # model that made the image, and its denoising steps: kept for `eat calibrate`
    steps: int = 0


@dataclass(frozen=True)
class QualityOutcome:
    """One QualityReport as plain data; `error` non-empty when the image could not be scored."""

    task_id: str
    attempt: int
    clip_score: float
    simulated: bool
    evaluator_model: str
    eval_s: float
    evaluated_at: datetime
    error: str = ""


class Route(Enum):
    IGNORE = "ignore"  # a failed attempt: the aggregator handles failures
    PASS_THROUGH = "pass_through"  # simulated: the simulator's quality is the score
    SCORE = "score"  # a real image to score with CLIP


def route(request: EvalRequest) -> Route:
    if not request.success:
        return Route.IGNORE
    return Route.PASS_THROUGH if request.simulated else Route.SCORE


def pass_through(request: EvalRequest, now: datetime) -> QualityOutcome:
    return QualityOutcome(
        task_id=request.task_id,
        attempt=request.attempt,
        clip_score=request.simulated_quality,
        simulated=True,
        evaluator_model=SIMULATOR_MODEL,
        eval_s=0.0,
        evaluated_at=now,
    )


class ImageError(Exception):
    """The image of a result cannot be found, read, trusted or decoded."""


def image_path(uri: str, result_store: Path) -> Path:
    """The local file a `file://` URI names, which must lie inside the result store."""
    if not uri:
        raise ImageError("the result has no image URI")
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ImageError(f"only local file:// image URIs are supported, got {uri!r}")
    path = Path(unquote(parsed.path)).resolve()
    store = result_store.resolve()
    if not path.is_relative_to(store):
        # Keeps a crafted result from making the evaluator read arbitrary files.
        raise ImageError(f"{path} is outside the result store {store}")
    return path


def load_image(path: Path, sha256: str = "") -> Image.Image:
    """Read and decode the image, checking its SHA-256 when the result carries one."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"cannot read {path}: {err.strerror or err}") from err
    if sha256 and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise ImageError(f"{path}: SHA-256 does not match the result's")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"cannot decode {path}: {err}") from err


class Scorer(Protocol):
    @property
    def evaluator_model(self) -> str: ...

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class _Loaded:
    index: int
    image: Image.Image
    load_s: float


def evaluate_batch(
    scorer: Scorer,
    requests: Sequence[EvalRequest],
    result_store: Path,
    *,
    clock: Callable[[], float] = time.perf_counter,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[QualityOutcome]:
    """Score real images in one pass; one outcome per request, in order. eval_s is the image's own
    load time plus its share of the batch's embedding time."""
    outcomes: list[QualityOutcome | None] = [None] * len(requests)
    loaded: list[_Loaded] = []
    for index, request in enumerate(requests):
        started = clock()
        try:
            image = load_image(image_path(request.image_uri, result_store), request.image_sha256)
        except ImageError as err:
            outcomes[index] = _failed(scorer, request, str(err), clock() - started, now())
            continue
        loaded.append(_Loaded(index, image, clock() - started))
    for index, outcome in _score_loaded(scorer, requests, loaded, clock, now):
        outcomes[index] = outcome
    return [o for o in outcomes if o is not None]


def _score_loaded(
    scorer: Scorer,
    requests: Sequence[EvalRequest],
    loaded: list[_Loaded],
    clock: Callable[[], float],
    now: Callable[[], datetime],
) -> list[tuple[int, QualityOutcome]]:
    if not loaded:
        return []
    batch = [requests[item.index] for item in loaded]
    started = clock()
    try:
        scores = scorer.score([item.image for item in loaded], [request.prompt for request in batch])
    except Exception as err:  # a model failure fails this batch's reports, not the service
        share = (clock() - started) / len(loaded)
        message = f"scoring failed: {err!r}"
        return [
            (item.index, _failed(scorer, request, message, item.load_s + share, now()))
            for item, request in zip(loaded, batch, strict=True)
        ]
    share = (clock() - started) / len(loaded)
    evaluated_at = now()
    return [
        (item.index, _scored(scorer, request, score, item.load_s + share, evaluated_at))
        for item, request, score in zip(loaded, batch, scores, strict=True)
    ]


def _scored(
    scorer: Scorer, request: EvalRequest, score: float, eval_s: float, evaluated_at: datetime
) -> QualityOutcome:
    return QualityOutcome(
        task_id=request.task_id,
        attempt=request.attempt,
        clip_score=score,
        simulated=False,
        evaluator_model=scorer.evaluator_model,
        eval_s=eval_s,
        evaluated_at=evaluated_at,
    )


def _failed(
    scorer: Scorer, request: EvalRequest, error: str, eval_s: float, evaluated_at: datetime
) -> QualityOutcome:
    return QualityOutcome(
        task_id=request.task_id,
        attempt=request.attempt,
        clip_score=0.0,
        simulated=False,
        evaluator_model=scorer.evaluator_model,
        eval_s=eval_s,
        evaluated_at=evaluated_at,
        error=error,
    )


def score_records(
    requests: Sequence[EvalRequest], outcomes: Sequence[QualityOutcome]
) -> list[dict[str, object]]:
    """Lines of `evaluator-scores.jsonl` for a batch (requests and outcomes in the same order), one per
    real image scored without error: `eat calibrate` fits the quality-vs-steps curve to them."""
    return [
        {
            "task_id": outcome.task_id,
            "attempt": outcome.attempt,
            "model": request.model,
            "steps": request.steps,
            "clip_score": outcome.clip_score,
            "evaluator_model": outcome.evaluator_model,
            "evaluated_at": outcome.evaluated_at.isoformat(),
        }
        for request, outcome in zip(requests, outcomes, strict=True)
        if not outcome.error and not outcome.simulated
    ]
