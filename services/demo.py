"""`eat demo`: real diffusion end to end on CPU executors, with a report.

The demo builds the tiny Stable Diffusion pipeline (seeded random weights, services.executor.tiny),
starts the whole stack with diffusers executors on it (64 px, CPU, trainer off), submits a fixed mix of
tasks of 1, 2 and 4 patches, waits for every terminal event and writes `<out>/report.json`,
`<out>/report.html` (a table with thumbnails and PNG plots) and the images under `<out>/images/`.

The model is random, so the images are noise and the CLIP scores (from the evaluator's tiny random
CLIP) test the plumbing, not image quality. Everything is seeded: the model with MODEL_SEED, task i's
sampler with SAMPLER_SEED_BASE + i.
"""

from __future__ import annotations

import html
import json
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from eat.v1 import common_pb2, tasks_pb2
from services.client import Client, TaskEvent
from services.common import vhost
from services.stack import Stack, StackConfig
from services.trace import PROMPTS

MODEL = "tiny"
MODEL_SEED = 0  # weights of the tiny pipeline
SAMPLER_SEED_BASE = 0  # task i samples with seed SAMPLER_SEED_BASE + i
RESOLUTION = 64  # pixels, the tiny model's native size
PATCH_MIX = (1, 2, 4, 1, 2, 1, 4, 2)  # cycled over the tasks: 16 tasks = 6 x k1, 6 x k2, 4 x k4
GANG_SIZES = (1, 2, 4)
NOTE = (
    "The model is a tiny Stable Diffusion pipeline with seeded random weights, and CLIP is a tiny random "
    "one too: the images are noise and the CLIP scores test the plumbing, not image quality."
)

Printer = Callable[[str], None]


@dataclass(frozen=True)
class DemoSettings:
    out_dir: Path = Path("out/demo")
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    tasks: int = 16
    executors: int = 4
    max_steps: int = 12  # QoS bound: keeps the CPU run short without dropping tasks
    wait_s: float = 240.0  # for all terminal events, after the last submission
    start_timeout_s: float = 180.0  # eight processes importing torch share two cores

    @property
    def images_dir(self) -> Path:
        return self.out_dir / "images"


@dataclass(frozen=True)
class DemoRow:
    """One task's outcome, as printed and as written to report.json."""

    task_id: str
    prompt: str
    patches: int
    seed: int
    outcome: str  # completed, failed, rejected or lost
    gang: list[str] = field(default_factory=list)
    steps: int = 0
    reused: bool | None = None  # None: the task did not complete
    response_s: float | None = None
    wait_s: float | None = None
    init_s: float | None = None
    run_s: float | None = None
    clip_score: float | None = None
    simulated: bool | None = None
    image: str = ""  # relative to the report, e.g. images/<task>.png
    message: str = ""  # why it failed or was rejected


@dataclass
class DemoReport:
    rows: list[DemoRow]
    wall_s: float
    settings: dict[str, object]
    stop_codes: dict[str, int] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(row.outcome == outcome for row in self.rows)

    @property
    def lost(self) -> int:
        return self.count("lost")

    @property
    def failed(self) -> int:  # a rejection is a failure from the demo's point of view
        return self.count("failed") + self.count("rejected")

    def mean_latency_by_gang(self) -> dict[int, float]:
        latencies: dict[int, list[float]] = {}
        for row in self.rows:
            if row.response_s is not None:
                latencies.setdefault(row.patches, []).append(row.response_s)
        return {k: statistics.fmean(v) for k, v in sorted(latencies.items())}

    def to_json(self) -> dict[str, object]:
        return {
            "note": NOTE,
            "settings": self.settings,
            "summary": {
                "tasks": len(self.rows),
                "completed": self.count("completed"),
                "failed": self.failed,
                "lost": self.lost,
                "wall_s": self.wall_s,
                "mean_response_s_by_patches": {str(k): v for k, v in self.mean_latency_by_gang().items()},
            },
            "stop_codes": self.stop_codes,
            "plots": self.plots,
            "rows": [asdict(row) for row in self.rows],
        }


# ----- the workload ------------------------------------------------------------------------------
def patches_for(index: int, executors: int) -> int:
    """The fixed mix, capped at the largest gang the cluster can form."""
    wanted = PATCH_MIX[index % len(PATCH_MIX)]
    return max(k for k in GANG_SIZES if k <= min(wanted, executors))


def demo_submissions(settings: DemoSettings, run_tag: str) -> list[tasks_pb2.TaskSubmission]:
    # The run tag keeps ids unique when the broker (or a state dir) remembers an earlier run's tasks.
    return [
        tasks_pb2.TaskSubmission(
            task_id=f"demo-{run_tag}-{i:02d}",
            prompt=PROMPTS[i % len(PROMPTS)],
            model=MODEL,
            patches=patches_for(i, settings.executors),
            seed=SAMPLER_SEED_BASE + i,
            qos=common_pb2.Qos(max_steps=settings.max_steps),
        )
        for i in range(settings.tasks)
    ]


# ----- the stack ---------------------------------------------------------------------------------
@contextmanager
def demo_broker(amqp_url: str | None, say: Printer = print) -> Iterator[str]:
    """The URL to run on: `amqp_url` when given, else a fresh vhost eat-demo (deleted afterwards) so an
    earlier run's durable queues cannot leak in, else the local broker's default vhost."""
    if amqp_url:
        yield amqp_url
        return
    try:
        url = vhost.create("eat-demo") if vhost.can_manage() else ""
    except (OSError, subprocess.SubprocessError):  # rabbitmqctl present but not allowed
        url = ""
    if not url:
        say("no rabbitmqctl to make a clean vhost: using the broker's default vhost")
        yield vhost.LOCAL_BROKER + "%2F"
        return
    try:
        yield url
    finally:
        vhost.delete("eat-demo")


def ensure_tiny_model(models_dir: Path) -> Path:
    """The tiny pipeline under models_dir/tiny, built (seed MODEL_SEED) only when missing."""
    target = models_dir / MODEL
    if not (target / "model_index.json").is_file():
        from services.executor.tiny import make_tiny  # torch and diffusers load only when building

        make_tiny(target, MODEL_SEED, overwrite=True)
    return target


def stack_config(settings: DemoSettings, models_dir: Path) -> StackConfig:
    executor_env = {
        "EAT_RUNNER": "diffusers",
        "EAT_MODELS_DIR": str(models_dir.resolve()),
        "EAT_RESOLUTION": str(RESOLUTION),
        "EAT_DEVICE": "cpu",
        "EAT_HOST": "127.0.0.1",
    }
    return StackConfig(
        amqp_url=settings.amqp_url,
        executors=settings.executors,
        time_scale=1.0,  # real executors: model seconds are wall seconds
        models=(MODEL,),
        work_dir=settings.out_dir / "stack",
        with_trainer=False,
        extra_env={"executor": executor_env},
    )


def run_demo(settings: DemoSettings, say: Printer = print) -> DemoReport:
    """Start the stack, run the workload, stop the stack, write the report; the report."""
    models_dir = settings.out_dir / "models"
    say(f"tiny model (seed {MODEL_SEED}): {ensure_tiny_model(models_dir)}")
    # A fresh state dir (no earlier run's tasks) and no earlier run's images beside this run's.
    for earlier in (settings.out_dir / "stack", settings.images_dir, settings.out_dir / "plots"):
        shutil.rmtree(earlier, ignore_errors=True)
    stack = Stack(stack_config(settings, models_dir))
    say(f"starting {len(stack.service_names())} services, {settings.executors} CPU executors ...")
    try:
        stack.start(timeout_s=settings.start_timeout_s)
        say("stack is up")
        rows, wall_s = run_workload(settings, stack, say)
    finally:
        codes = stack.stop()
        say("stopped: " + ", ".join(f"{name}={code}" for name, code in codes.items()))
    report = DemoReport(rows, wall_s, demo_settings_json(settings), stop_codes=codes)
    write_report(report, settings.out_dir)
    return report


def demo_settings_json(settings: DemoSettings) -> dict[str, object]:
    return {
        "tasks": settings.tasks,
        "executors": settings.executors,
        "max_steps": settings.max_steps,
        "model": MODEL,
        "model_seed": MODEL_SEED,
        "sampler_seeds": f"{SAMPLER_SEED_BASE} + task index",
        "resolution": RESOLUTION,
        "patch_mix": list(PATCH_MIX),
    }


def run_workload(settings: DemoSettings, stack: Stack, say: Printer) -> tuple[list[DemoRow], float]:
    submissions = demo_submissions(settings, uuid.uuid4().hex[:6])
    mix = ", ".join(f"{sum(s.patches == k for s in submissions)} x k{k}" for k in GANG_SIZES)
    last_seed = SAMPLER_SEED_BASE + len(submissions) - 1
    say(f"submitting {len(submissions)} tasks ({mix}), sampler seeds {SAMPLER_SEED_BASE}..{last_seed},")
    say(f"  at most {settings.max_steps} steps each")
    started = time.monotonic()
    client = Client(settings.amqp_url)
    try:
        client.submit_many(submissions)
        events = client.wait({s.task_id for s in submissions}, settings.wait_s)
    finally:
        client.close()
    wall_s = time.monotonic() - started
    results_dir = (stack.config.work_dir / "results").resolve()
    rows = [task_row(s, events.get(s.task_id), results_dir, settings.images_dir) for s in submissions]
    return rows, wall_s


# ----- rows --------------------------------------------------------------------------------------
def task_row(
    submission: tasks_pb2.TaskSubmission, event: TaskEvent | None, results_dir: Path, images_dir: Path
) -> DemoRow:
    base = {"task_id": submission.task_id, "prompt": submission.prompt}
    base |= {"patches": submission.patches, "seed": submission.seed}
    if event is None:
        return DemoRow(**base, outcome="lost", message="no terminal event in time")
    if event.kind == "rejected":
        errors = "; ".join(f"{e.field}: {e.message}" for e in event.message.errors)
        return DemoRow(**base, outcome="rejected", message=errors)
    if event.kind == "failed":
        return DemoRow(**base, outcome="failed", message=event.message.message)
    result = event.message.result
    image = copy_image(result.image.uri, results_dir, images_dir, submission.task_id)
    return DemoRow(
        **base,
        outcome="completed",
        gang=list(result.gang),
        steps=result.steps,
        reused=result.reused,
        response_s=result.response_s,
        wait_s=result.wait_s,
        init_s=result.init_s,
        run_s=result.run_s,
        clip_score=float(result.quality),
        simulated=result.simulated,
        image=image,
    )


def copy_image(uri: str, results_dir: Path, images_dir: Path, task_id: str) -> str:
    """Copy a result-store image into images_dir; its path relative to the report ("" if none)."""
    source = Path(urlparse(uri).path).resolve()
    # Only files inside this stack's result store: the URI comes off the wire.
    if not uri.startswith("file://") or not source.is_relative_to(results_dir) or not source.is_file():
        return ""
    images_dir.mkdir(parents=True, exist_ok=True)
    target = images_dir / f"{task_id}{source.suffix or '.png'}"
    shutil.copyfile(source, target)
    return f"{images_dir.name}/{target.name}"


# ----- text output -------------------------------------------------------------------------------
def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(rows: Iterable[DemoRow]) -> str:
    header = (
        f"{'task':<15} {'k':>1} {'gang':<27} {'steps':>5} {'model':<6} {'latency s':>9} {'CLIP':>6}  outcome"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        model = "-" if row.reused is None else ("reused" if row.reused else "loaded")
        clip = "-" if row.clip_score is None else f"{row.clip_score:.3f}"
        lines.append(
            f"{row.task_id:<15} {row.patches:>1} {','.join(row.gang) or '-':<27} {row.steps:>5} "
            f"{model:<6} {_seconds(row.response_s):>9} {clip:>6}  {row.outcome}"
            + (f" ({row.message})" if row.message else "")
        )
    return "\n".join(lines)


def summary_line(report: DemoReport) -> str:
    by_gang = ", ".join(f"k{k} {s:.2f} s" for k, s in report.mean_latency_by_gang().items()) or "-"
    return (
        f"{report.count('completed')} completed, {report.failed} failed, {report.lost} lost of "
        f"{len(report.rows)} in {report.wall_s:.1f} s wall; mean latency by gang size: {by_gang}"
    )


# ----- files -------------------------------------------------------------------------------------
def write_report(report: DemoReport, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    report.plots = write_plots(report.rows, out_dir / "plots")
    report.plots = [f"plots/{Path(p).name}" for p in report.plots]
    (out_dir / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    (out_dir / "report.html").write_text(render_html(report))


def write_plots(rows: list[DemoRow], plots_dir: Path) -> list[str]:
    """Latency by gang size, CLIP score vs steps, and each task's wait/init/run; the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    done = [row for row in rows if row.outcome == "completed"]
    paths = []
    for name, draw in (
        ("latency_by_gang.png", _plot_latency_by_gang),
        ("clip_vs_steps.png", _plot_clip_vs_steps),
        ("time_breakdown.png", _plot_time_breakdown),
    ):
        figure, axes = plt.subplots(figsize=(6.4, 4.0))
        draw(axes, done)
        figure.tight_layout()
        figure.savefig(plots_dir / name, dpi=100)
        plt.close(figure)
        paths.append(str(plots_dir / name))
    return paths


def _plot_latency_by_gang(axes, rows: list[DemoRow]) -> None:
    sizes = sorted({row.patches for row in rows})
    data = [[row.response_s for row in rows if row.patches == k] for k in sizes]
    if sizes:
        axes.boxplot(data, tick_labels=[f"k={k}" for k in sizes])
    axes.set(title="Latency by gang size", xlabel="patches (gang size)", ylabel="response time (s)")


def _plot_clip_vs_steps(axes, rows: list[DemoRow]) -> None:
    for k in sorted({row.patches for row in rows}):
        chosen = [row for row in rows if row.patches == k]
        axes.scatter([r.steps for r in chosen], [r.clip_score for r in chosen], label=f"k={k}")
    axes.set(title="CLIP score vs steps (random model: plumbing only)", xlabel="steps", ylabel="CLIP")
    if rows:
        axes.legend()


def _plot_time_breakdown(axes, rows: list[DemoRow]) -> None:
    labels = [row.task_id.rsplit("-", 1)[-1] for row in rows]
    bottom = [0.0] * len(rows)
    for phase in ("wait_s", "init_s", "run_s"):
        heights = [getattr(row, phase) or 0.0 for row in rows]
        axes.bar(labels, heights, bottom=bottom, label=phase.removesuffix("_s"))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.set(title="Wait, init and run per task", xlabel="task", ylabel="seconds")
    if rows:
        axes.legend()


def render_html(report: DemoReport) -> str:
    e = html.escape
    cells = ("task", "prompt", "k", "gang", "steps", "model", "latency s", "CLIP", "outcome", "image")
    head = "".join(f"<th>{c}</th>" for c in cells)
    body = "\n".join(_html_row(row) for row in report.rows)
    plots = "\n".join(f'<img src="{e(p)}" alt="{e(p)}">' for p in report.plots)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>EAT Serve demo</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}img.thumb{{width:64px;height:64px}}</style></head>
<body><h1>EAT Serve demo</h1>
<p><strong>{e(NOTE)}</strong></p>
<p>{e(summary_line(report))}</p>
<p>Settings: {e(json.dumps(report.settings))}</p>
<table><tr>{head}</tr>
{body}
</table>
<h2>Plots</h2>
{plots}
</body></html>
"""


def _html_row(row: DemoRow) -> str:
    e = html.escape
    model = "-" if row.reused is None else ("reused" if row.reused else "loaded")
    clip = "-" if row.clip_score is None else f"{row.clip_score:.3f}"
    image = (
        f'<a href="{e(row.image)}"><img class="thumb" src="{e(row.image)}" alt=""></a>' if row.image else ""
    )
    outcome = row.outcome + (f": {row.message}" if row.message else "")
    values = (row.task_id, row.prompt, str(row.patches), ", ".join(row.gang), str(row.steps), model)
    values += (_seconds(row.response_s), clip, outcome)
    return "<tr>" + "".join(f"<td>{e(v)}</td>" for v in values) + f"<td>{image}</td></tr>"


def print_report(report: DemoReport, out_dir: Path, say: Printer = print) -> None:
    say(format_table(report.rows))
    say(summary_line(report))
    say(NOTE)
    say(f"wrote {out_dir / 'report.json'}, {out_dir / 'report.html'} and {report.count('completed')} images")
