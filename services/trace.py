"""Workload traces: tasks with arrival times, written as JSON lines, replayed through a running stack.

`paper_trace` draws the simulator's own workload for a seed (the same arrivals, gang sizes and models
that `eat eval` sees for that seed), so a live run can be set beside a simulated one. `replay` submits
each task at its arrival time divided by the time scale and collects every task's terminal event.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from eat.v1 import common_pb2, tasks_pb2
from policy_models.config import SimConfig
from policy_models.workload import make_rng, sample_workload
from services.client import Client, TaskEvent

PROMPTS = (
    "a red fox in fresh snow, morning light",
    "a lighthouse on a cliff during a storm",
    "a bowl of ramen, studio photograph",
    "an astronaut riding a horse on the moon",
    "a watercolor map of an imaginary island",
    "a cyberpunk street market at night",
    "a cat wearing a tiny wizard hat",
    "an old library with floating books",
)


@dataclass(frozen=True)
class TraceTask:
    at_s: float  # arrival, model seconds after the trace starts
    task_id: str
    prompt: str
    model: str
    patches: int
    min_quality: float = 0.0
    deadline_s: float = 0.0

    def submission(self) -> tasks_pb2.TaskSubmission:
        qos = common_pb2.Qos(min_quality=self.min_quality, deadline_s=self.deadline_s)
        return tasks_pb2.TaskSubmission(
            task_id=self.task_id, prompt=self.prompt, model=self.model, patches=self.patches, qos=qos
        )


def paper_trace(cfg: SimConfig, seed: int, models: Sequence[str], prefix: str = "") -> list[TraceTask]:
    """The simulator's workload for `seed` as a trace (model ids mapped onto `models` in order)."""
    workload = sample_workload(make_rng(seed), cfg)
    prefix = prefix or f"s{seed}-{uuid.uuid4().hex[:6]}"
    return [
        TraceTask(
            at_s=float(workload.arrival_s[0, i]),
            task_id=f"{prefix}-{i:03d}",
            prompt=PROMPTS[i % len(PROMPTS)],
            model=models[(int(workload.model[0, i]) - 1) % len(models)],
            patches=int(workload.patches[0, i]),
        )
        for i in range(cfg.tasks_per_episode)
    ]


def write_trace(tasks: Iterable[TraceTask], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(t)) + "\n" for t in tasks))


def read_trace(path: Path) -> list[TraceTask]:
    tasks = [TraceTask(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return sorted(tasks, key=lambda t: t.at_s)


@dataclass(frozen=True)
class ReplayResult:
    tasks: list[TraceTask]
    terminal: dict[str, TaskEvent]  # first terminal (or rejection) event per task id
    wall_s: float

    @property
    def lost(self) -> list[str]:
        return [t.task_id for t in self.tasks if t.task_id not in self.terminal]

    def completed(self) -> list[tasks_pb2.TaskCompleted]:
        return [e.message for e in self.terminal.values() if e.kind == "completed"]

    def summary(self) -> dict[str, float | int]:
        done = self.completed()
        results = [m.result for m in done]
        return {
            "tasks": len(self.tasks),
            "completed": len(done),
            "failed": sum(e.kind == "failed" for e in self.terminal.values()),
            "rejected": sum(e.kind == "rejected" for e in self.terminal.values()),
            "lost": len(self.lost),
            "quality": _mean(r.quality for r in results),
            "response_s": _mean(r.response_s for r in results),
            "reload_rate": _mean(0.0 if r.reused else 1.0 for r in results),
            "steps": _mean(r.steps for r in results),
            "wall_s": self.wall_s,
            "tasks_per_s": len(self.tasks) / self.wall_s if self.wall_s > 0 else 0.0,
        }


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")


def replay(client: Client, tasks: Sequence[TraceTask], time_scale: float, timeout_s: float) -> ReplayResult:
    """Submit each task at at_s / time_scale (wall) and wait for every terminal event, at most
    `timeout_s` after the last submission."""
    terminal: dict[str, TaskEvent] = {}
    started = time.monotonic()

    def collect(for_s: float) -> None:
        for event in client.events(for_s):
            if event.terminal or event.kind == "rejected":
                terminal.setdefault(event.task_id, event)

    for task in sorted(tasks, key=lambda t: t.at_s):
        gap = started + task.at_s / time_scale - time.monotonic()
        if gap > 0:
            collect(gap)
        client.submit(task.submission())
    wanted = {t.task_id for t in tasks}
    terminal |= {k: v for k, v in client.wait(wanted - set(terminal), timeout_s).items()}
    return ReplayResult(list(tasks), terminal, time.monotonic() - started)


def markdown_summary(rows: dict[str, dict[str, float | int]]) -> str:
    """A markdown table of run summaries, one row per named run."""
    keys = ("tasks", "completed", "failed", "lost", "quality", "response_s", "reload_rate", "steps")
    lines = ["| run | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, summary in rows.items():
        cells = [f"{summary[k]:.3f}" if isinstance(summary[k], float) else str(summary[k]) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
