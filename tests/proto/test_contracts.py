"""Contract tests for the protobuf/gRPC messages in proto/ and their generated code in eat/v1/."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.timestamp_pb2 import Timestamp

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto" / "eat" / "v1"
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import gen_proto  # noqa: E402

from eat.v1 import (  # noqa: E402
    cluster_pb2,
    common_pb2,
    executor_pb2,
    hybrid_pb2,
    learning_pb2,
    policy_service_pb2,
    policy_service_pb2_grpc,
    quality_pb2,
    tasks_pb2,
)

MODULES = ["cluster", "common", "executor", "hybrid", "learning", "policy_service", "quality", "tasks"]

# Every message named in DESIGN section 4, plus the messages the contracts add around them.
REQUIRED_MESSAGES = [
    # DESIGN section 4 flow
    "TaskSubmission",
    "TaskAccepted",
    "ExecutorStatus",
    "DecideRequest",
    "DecideResponse",
    "GangDispatch",
    "TaskResult",
    "QualityReport",
    "TaskCompleted",
    "TaskFailed",
    "Experience",
    "PolicyUpdated",
    # supporting messages
    "TaskRejected",
    "FieldError",
    "ExecutorHeartbeat",
    "Qos",
    "ImageRef",
    "Timings",
    "Error",
    "Gang",
    "Rendezvous",
    "ResultSummary",
    "ClusterSnapshot",
    "ServerState",
    "QueuedTask",
    "EvaluationSummary",
    "GetVersionRequest",
    "PolicyVersion",
    # hybrid execution of personal requests
    "PersonalRequest",
    "DeviceProfile",
    "EdgeBatch",
    "LatentHandoff",
    "EdgeReport",
    "DeviceReport",
    "DeviceHeartbeat",
    "HybridCompleted",
    "HybridFailed",
]


def _ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def _snapshot(now_s: float) -> cluster_pb2.ClusterSnapshot:
    return cluster_pb2.ClusterSnapshot(
        now_s=now_s,
        servers=[
            cluster_pb2.ServerState(
                server_id="edge-00",
                idle=True,
                resident_models=["sd-v1-4"],
                group_id=3,
                group_size=2,
                speed_factor=1.0,
            ),
            cluster_pb2.ServerState(server_id="edge-01", idle=False, remaining_s=4.5, speed_factor=1.25),
        ],
        queue=[
            cluster_pb2.QueuedTask(
                task_id="t-1",
                waiting_s=2.25,
                patches=2,
                model="sd-v1-4",
                qos=common_pb2.Qos(min_quality=0.2, deadline_s=60.0, max_steps=30),
            )
        ],
        total_queued=7,
        taken_at=_ts(1_700_000_000, 5),
    )


def _roundtrip(msg):
    data = msg.SerializeToString(deterministic=True)
    parsed = type(msg).FromString(data)
    assert parsed == msg
    assert parsed.SerializeToString(deterministic=True) == data
    return parsed


def test_regeneration_changes_nothing():
    differing = gen_proto.check()
    assert differing == [], f"run scripts/gen_proto.py; differing files: {differing}"


def test_gen_proto_check_cli_exit_code():
    assert gen_proto.main(["--check"]) == 0


@pytest.mark.parametrize("name", REQUIRED_MESSAGES)
def test_required_message_exists(name):
    desc = descriptor_pool.Default().FindMessageTypeByName(f"eat.v1.{name}")
    assert desc.full_name == f"eat.v1.{name}"


def test_every_module_imports():
    for mod in MODULES:
        importlib.import_module(f"eat.v1.{mod}_pb2")
        importlib.import_module(f"eat.v1.{mod}_pb2_grpc")


def test_roundtrip_task_submission():
    msg = tasks_pb2.TaskSubmission(
        task_id="client-42:0001",
        prompt="a lighthouse at dusk, oil painting",
        model="sd-v1-4",
        patches=4,
        qos=common_pb2.Qos(min_quality=0.22, deadline_s=120.0, priority=2, max_steps=32, min_steps=5),
        submitted_at=_ts(1_700_000_000, 123_000_000),
        seed=2**63 + 7,
        reply_to="client-42.events",
        correlation_id="req-9",
    )
    parsed = _roundtrip(msg)
    assert parsed.HasField("seed") and parsed.seed == 2**63 + 7
    assert parsed.qos.HasField("min_steps") and parsed.qos.min_steps == 5
    assert not tasks_pb2.TaskSubmission().HasField("seed")


def test_roundtrip_gang_dispatch():
    members = ["edge-02", "edge-05", "edge-07"]
    msg = executor_pb2.GangDispatch(
        task_id="t-1",
        attempt=2,
        prompt="a cat",
        model="sd-v1-4",
        steps=20,
        seed=11,
        gang=executor_pb2.Gang(members=members, group_id=17),
        rank=members.index("edge-05"),
        rendezvous=executor_pb2.Rendezvous(
            host="10.0.0.2", port=29500, group_name="g17-e3", epoch=3, timeout_s=30.0
        ),
        expect_reload=True,
        deadline=_ts(1_700_000_100),
        dispatched_at=_ts(1_700_000_001),
        policy_version=5,
    )
    parsed = _roundtrip(msg)
    assert list(parsed.gang.members) == members
    assert parsed.rank == 1


def test_roundtrip_experience():
    msg = learning_pb2.Experience(
        episode_id="live-2024-01-01",
        step_index=12,
        observation=_snapshot(10.0),
        action=[0.5, -0.25, 0.875, -1.0],
        reward=7.5,
        next_observation=_snapshot(12.5),
        done=False,
        truncated=True,
        policy_version=3,
        obs_spec_version=1,
        executed=True,
        task_id="t-1",
        steps=20,
        source="live",
        created_at=_ts(1_700_000_010),
    )
    parsed = _roundtrip(msg)
    assert list(parsed.action) == [0.5, -0.25, 0.875, -1.0]
    assert parsed.observation.servers[0].resident_models == ["sd-v1-4"]


def test_roundtrip_decide_response():
    msg = policy_service_pb2.DecideResponse(
        request_id="r-1",
        execute=True,
        task_id="t-1",
        steps=24,
        action=[0.75, 0.5, 1.0],
        policy_version=9,
        policy_name="eat",
        decide_latency_us=850,
    )
    _roundtrip(msg)
    request = policy_service_pb2.DecideRequest(request_id="r-1", snapshot=_snapshot(1.0))
    _roundtrip(request)


def test_other_messages_construct():
    _roundtrip(
        tasks_pb2.TaskRejected(
            task_id="x", errors=[common_pb2.FieldError(field="patches", reason="must be >= 1, got 0")]
        )
    )
    _roundtrip(
        tasks_pb2.TaskFailed(
            task_id="x", reason=common_pb2.FAILURE_REASON_GANG_MEMBER_LOST, message="edge-03", attempts=3
        )
    )
    _roundtrip(
        executor_pb2.ExecutorStatus(
            executor_id="edge-01", state=executor_pb2.EXECUTOR_STATE_BUSY, resident_models=["a", "b"]
        )
    )
    _roundtrip(quality_pb2.QualityReport(task_id="x", attempt=1, clip_score=0.27, simulated=True))


def test_policy_service_methods():
    service = policy_service_pb2.DESCRIPTOR.services_by_name["PolicyService"]
    methods = {m.name: m for m in service.methods}
    assert set(methods) == {"Decide", "GetVersion", "DecideOffload"}
    assert methods["Decide"].input_type.full_name == "eat.v1.DecideRequest"
    assert methods["DecideOffload"].input_type.full_name == "eat.v1.OffloadRequest"
    assert methods["DecideOffload"].output_type.full_name == "eat.v1.OffloadPlan"
    assert methods["Decide"].output_type.full_name == "eat.v1.DecideResponse"
    assert methods["GetVersion"].input_type.full_name == "eat.v1.GetVersionRequest"
    assert methods["GetVersion"].output_type.full_name == "eat.v1.PolicyVersion"
    servicer = policy_service_pb2_grpc.PolicyServiceServicer
    assert callable(servicer.Decide) and callable(servicer.GetVersion) and callable(servicer.DecideOffload)
    assert callable(policy_service_pb2_grpc.add_PolicyServiceServicer_to_server)
    stub_src = Path(policy_service_pb2_grpc.__file__).read_text()
    assert "/eat.v1.PolicyService/Decide" in stub_src
    assert "/eat.v1.PolicyService/GetVersion" in stub_src


# A field (or enum value) line: optional label, type, name, "=", number, ";" (and maybe a comment).
_FIELD_RE = re.compile(
    r"^\s*(?:(?:optional|repeated)\s+)?(?:map\s*<[^>]+>|[A-Za-z_][\w.]*)\s+[A-Za-z_]\w*\s*=\s*\d+\s*(?:\[.*\])?\s*;"
)
_ENUM_VALUE_RE = re.compile(r"^\s*[A-Z][A-Z0-9_]*\s*=\s*-?\d+\s*;")
_DECL_RE = re.compile(r"^\s*(message|enum|service|rpc)\s+\w+")


def _uncommented_lines(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        is_field = _FIELD_RE.match(line) or _ENUM_VALUE_RE.match(line)
        is_decl = _DECL_RE.match(line)
        if not (is_field or is_decl):
            continue
        trailing = "//" in line
        preceded = i > 0 and lines[i - 1].strip().startswith("//")
        if not (trailing or preceded):
            missing.append(f"{path.name}:{i + 1}: {line.strip()}")
    return missing


def test_proto_files_present():
    names = sorted(p.name for p in PROTO_DIR.glob("*.proto"))
    assert names == sorted(f"{m}.proto" for m in MODULES)


def test_field_regex_sanity():
    assert _FIELD_RE.match("  optional uint64 seed = 7;")
    assert _FIELD_RE.match("  repeated eat.v1.FieldError errors = 2;")
    assert _FIELD_RE.match("  map<string, string> labels = 3;")
    assert _FIELD_RE.match("  google.protobuf.Timestamp at = 4; // when")
    assert not _FIELD_RE.match('syntax = "proto3";')


@pytest.mark.parametrize("proto", sorted(p.name for p in PROTO_DIR.glob("*.proto")))
def test_every_field_is_commented(proto):
    path = PROTO_DIR / proto
    assert path.read_text().count("=") > 0
    missing = _uncommented_lines(path)
    assert missing == [], "fields/declarations without a comment:\n" + "\n".join(missing)


def test_comment_check_counts_all_descriptor_fields():
    """The text check sees every field the descriptors define (guards the regex against misses)."""
    text_fields = 0
    for path in PROTO_DIR.glob("*.proto"):
        text_fields += sum(1 for line in path.read_text().splitlines() if _FIELD_RE.match(line))
    descriptor_fields = 0
    for mod in MODULES:
        fd = importlib.import_module(f"eat.v1.{mod}_pb2").DESCRIPTOR

        def count(msg):
            return len(msg.fields) + sum(count(n) for n in msg.nested_types)

        descriptor_fields += sum(count(m) for m in fd.message_types_by_name.values())
    assert text_fields == descriptor_fields


def test_roundtrip_latent_handoff():
    shape = [1, 4, 2, 2]
    latent = bytes(range(64))  # 16 float32 values
    msg = hybrid_pb2.LatentHandoff(
        task_id="t-1",
        user_id="ana",
        prompt="a red circle",
        seed=7,
        steps=6,
        done_step=2,
        latent=latent,
        shape=shape,
    )
    back = hybrid_pb2.LatentHandoff.FromString(msg.SerializeToString())
    assert back.latent == latent and list(back.shape) == shape and back.done_step == 2


def test_an_edge_batch_of_one_names_its_adapter():
    batch = hybrid_pb2.EdgeBatch(
        batch_id="b-1",
        server_id="edge-0",
        steps=6,
        split_step=6,
        members=[hybrid_pb2.EdgeMember(task_id="t-1", user_id="ana")],
        adapter_user="ana",
    )
    back = hybrid_pb2.EdgeBatch.FromString(batch.SerializeToString())
    assert back.adapter_user == "ana" and [m.user_id for m in back.members] == ["ana"]
