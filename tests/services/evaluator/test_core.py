"""The evaluator's pure rules without a broker: routing, finding and checking images, batch scoring."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from eat.v1 import common_pb2, executor_pb2
from services.common.bus import Reject
from services.common.convert import eval_request_from_proto, quality_report_to_proto
from services.evaluator.clip_scorer import ClipScorer
from services.evaluator.core import (
    EvalRequest,
    ImageError,
    Route,
    evaluate_batch,
    image_path,
    load_image,
    pass_through,
    route,
    score_records,
)
from tests.services.evaluator.images import PROMPTS, candidate_images, store_png

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def real_request(task_id: str, prompt: str, uri: str, sha256: str = "") -> EvalRequest:
    return EvalRequest(task_id, 1, prompt, success=True, simulated=False, image_uri=uri, image_sha256=sha256)


def simulated_request() -> EvalRequest:
    return EvalRequest("s", 1, "p", success=True, simulated=True, simulated_quality=0.2, steps=20)


def test_routing_and_the_simulated_pass_through() -> None:
    failed = EvalRequest("t", 1, "p", success=False, simulated=True)
    simulated = EvalRequest("t", 2, "p", success=True, simulated=True, simulated_quality=0.21)
    real = EvalRequest("t", 1, "p", success=True, simulated=False, image_uri="file:///x.png")
    assert [route(failed), route(simulated), route(real)] == [Route.IGNORE, Route.PASS_THROUGH, Route.SCORE]
    report = quality_report_to_proto(pass_through(simulated, NOW))
    assert (report.task_id, report.attempt, report.simulated) == ("t", 2, True)
    assert report.clip_score == pytest.approx(0.21)
    assert (report.evaluator_model, report.eval_s, report.error) == ("simulator", 0.0, "")
    assert report.evaluated_at.ToDatetime(tzinfo=UTC) == NOW


def test_request_from_a_task_result() -> None:
    message = executor_pb2.TaskResult(task_id="t7", attempt=3, prompt="p", success=True)
    message.image.CopyFrom(common_pb2.ImageRef(uri="file:///r/t7/3.png", sha256="ab"))
    request = eval_request_from_proto(message)
    assert (request.task_id, request.attempt, request.image_uri, request.image_sha256) == (
        "t7",
        3,
        "file:///r/t7/3.png",
        "ab",
    )
    with pytest.raises(Reject):
        eval_request_from_proto(executor_pb2.TaskResult())


def test_image_uris_must_be_local_files_inside_the_store(tmp_path: Path) -> None:
    store = tmp_path / "results"
    inside = store / "task 1" / "1.png"
    assert image_path(inside.as_uri(), store) == inside.resolve()  # percent-encoded space decoded
    for uri in ("", "https://example.com/1.png", "file://otherhost/x.png", (tmp_path / "x.png").as_uri()):
        with pytest.raises(ImageError):
            image_path(uri, store)
    with pytest.raises(ImageError, match="outside"):
        image_path(store.as_uri() + "/../secrets.png", store)


def test_images_load_only_when_readable_decodable_and_matching(tmp_path: Path) -> None:
    uri, digest = store_png(tmp_path, "a.png", candidate_images(1)[0])
    path = image_path(uri, tmp_path)
    assert load_image(path, digest).size == (96, 80)
    assert load_image(path, digest.upper()).mode == "RGB"
    with pytest.raises(ImageError, match="SHA-256"):
        load_image(path, "0" * 64)
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(tmp_path / "junk.png")


def test_the_service_path_keeps_the_order_the_model_gives(tmp_path: Path, tiny_scorer: ClipScorer) -> None:
    """With random weights the scores mean nothing, so the fixture is true by construction: among
    candidate images and prompts, take the image whose best and worst prompts differ most under the
    model, store it as a PNG, and check that a separately built scorer, reading the file through the
    evaluator's path (URI, SHA-256, decode, preprocess, batch), ranks the two prompts the same way."""
    images = candidate_images()
    rows = [tiny_scorer.score([image] * len(PROMPTS), PROMPTS) for image in images]
    gaps = [max(row) - min(row) for row in rows]
    chosen = gaps.index(max(gaps))
    best = PROMPTS[rows[chosen].index(max(rows[chosen]))]
    worst = PROMPTS[rows[chosen].index(min(rows[chosen]))]
    uri, digest = store_png(tmp_path, "chosen/1.png", images[chosen])

    requests = [real_request("worst", worst, uri, digest), real_request("best", best, uri, digest)]
    outcomes = evaluate_batch(ClipScorer.build("tiny"), requests, tmp_path)
    assert [o.task_id for o in outcomes] == ["worst", "best"]
    assert all(o.error == "" and not o.simulated and o.eval_s > 0 for o in outcomes)
    assert outcomes[1].clip_score > outcomes[0].clip_score
    assert outcomes[1].clip_score == pytest.approx(max(rows[chosen]), abs=1e-5)
    assert outcomes[0].evaluator_model == "open_clip:tiny"


def test_a_batch_reports_every_request_errors_included(tmp_path: Path, tiny_scorer: ClipScorer) -> None:
    images = candidate_images(2)
    uri_a, sha_a = store_png(tmp_path, "a.png", images[0])
    uri_b, _ = store_png(tmp_path, "b.png", images[1])
    requests = [
        real_request("a", PROMPTS[0], uri_a, sha_a),
        real_request("missing", PROMPTS[1], (tmp_path / "gone.png").as_uri()),
        real_request("tampered", PROMPTS[2], uri_a, "f" * 64),
        real_request("b", PROMPTS[3], uri_b),
        real_request("no-image", PROMPTS[0], ""),
    ]
    outcomes = evaluate_batch(tiny_scorer, requests, tmp_path)
    assert [o.task_id for o in outcomes] == ["a", "missing", "tampered", "b", "no-image"]
    assert [bool(o.error) for o in outcomes] == [False, True, True, False, True]
    assert "SHA-256" in outcomes[2].error and "no image" in outcomes[4].error
    expected = tiny_scorer.score(images, [PROMPTS[0], PROMPTS[3]])
    assert [outcomes[0].clip_score, outcomes[3].clip_score] == pytest.approx(expected, abs=1e-5)

    # The calibration lines: only the two images scored without error, with the model and steps.
    requests = [replace(request, model="sd-tiny", steps=10 + i) for i, request in enumerate(requests)]
    lines = score_records(requests, outcomes)
    assert [(line["task_id"], line["steps"], line["model"]) for line in lines] == [
        ("a", 10, "sd-tiny"),
        ("b", 13, "sd-tiny"),
    ]
    assert [line["clip_score"] for line in lines] == [outcomes[0].clip_score, outcomes[3].clip_score]
    assert json.loads(json.dumps(lines)) == lines  # JSON lines as they are written
    assert score_records([simulated_request()], [pass_through(simulated_request(), NOW)]) == []


class FailingScorer:
    """A model that fails at scoring time (a GPU out of memory cannot be provoked on this CPU)."""

    evaluator_model = "open_clip:broken"

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        raise RuntimeError("CUDA out of memory")


def test_a_scoring_failure_becomes_error_reports(tmp_path: Path) -> None:
    uri, _ = store_png(tmp_path, "a.png", candidate_images(1)[0])
    requests = [real_request("a", "p", uri), real_request("b", "q", uri)]
    outcomes = evaluate_batch(FailingScorer(), requests, tmp_path)
    assert [o.task_id for o in outcomes] == ["a", "b"]
    assert all("CUDA out of memory" in o.error for o in outcomes)
