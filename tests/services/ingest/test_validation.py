"""Submission validation names every offending field."""

from __future__ import annotations

from eat.v1 import common_pb2, tasks_pb2
from services.ingest.validation import Limits, validate

LIMITS = Limits(
    models=("sd-a",), max_patches=8, min_steps=1, max_steps=32, max_prompt_chars=50, max_deadline_s=100
)


def good() -> tasks_pb2.TaskSubmission:
    return tasks_pb2.TaskSubmission(task_id="t-1", prompt="a cat", model="sd-a", patches=2)


def fields(submission: tasks_pb2.TaskSubmission) -> list[str]:
    return [p.field for p in validate(submission, LIMITS)]


def test_a_good_submission_passes() -> None:
    assert validate(good(), LIMITS) == []
    with_bounds = good()
    with_bounds.qos.CopyFrom(common_pb2.Qos(min_quality=0.2, deadline_s=10, min_steps=5, max_steps=20))
    assert validate(with_bounds, LIMITS) == []


def test_each_bad_field_is_named() -> None:
    bad = tasks_pb2.TaskSubmission(task_id="has space", prompt=" ", model="nope", patches=0, reply_to="a b")
    assert fields(bad) == ["task_id", "prompt", "model", "patches", "reply_to"]
    long_prompt = good()
    long_prompt.prompt = "x" * 51
    assert fields(long_prompt) == ["prompt"]
    too_many = good()
    too_many.patches = 9
    (problem,) = validate(too_many, LIMITS)
    assert problem.reason == "must be in [1, 8], got 9"


def test_qos_fields_are_checked() -> None:
    bad = good()
    bad.qos.CopyFrom(common_pb2.Qos(min_quality=2.0, deadline_s=-1, min_steps=40, max_steps=0))
    assert fields(bad) == [
        "qos.min_quality",
        "qos.deadline_s",
        "qos.min_steps",
        "qos.max_steps",
        "qos.max_steps",
    ]
    crossed = good()
    crossed.qos.CopyFrom(common_pb2.Qos(min_steps=20, max_steps=10))
    (problem,) = validate(crossed, LIMITS)
    assert problem.field == "qos.max_steps" and "qos.min_steps (20)" in problem.reason


def test_a_gang_the_cluster_cannot_form_is_refused() -> None:
    odd = good()
    odd.patches = 3  # no gang size of the timing profile: it would fail after every attempt
    (problem,) = validate(odd, LIMITS)
    assert problem.field == "patches" and problem.reason == (
        "must be a gang size of the timing profile (1, 2, 4, 8), got 3"
    )
    too_big = good()
    too_big.patches = 8  # a gang size, but the cluster has 4 servers: it would wait and fail
    (problem,) = validate(too_big, LIMITS)
    assert problem.field == "patches" and problem.reason == "needs 8 servers, the cluster has 4"


def test_reply_to_must_be_a_client_reply_queue() -> None:
    for internal in ("eat.aggregator.tasks", "eat.executor.edge-0", "amq.rabbitmq.reply-to", "amq.gen-"):
        forged = good()
        forged.reply_to = internal
        (problem,) = validate(forged, LIMITS)
        assert problem.field == "reply_to" and "client reply queue" in problem.reason
    client = good()
    client.reply_to = "amq.gen-JzTY20BRgKO-HjmUJj0wLg"
    assert validate(client, LIMITS) == []


def test_no_queue_of_the_topology_passes_for_a_client_reply_queue() -> None:
    from services.common import topology
    from services.common.events import is_client_reply_queue

    names = [q.name for q in vars(topology).values() if isinstance(q, topology.Queue)]
    assert names and not any(is_client_reply_queue(name) for name in names)
    assert not is_client_reply_queue(topology.executor_queue("amq.gen-x").name)
