"""`eat demo`: real diffusion end to end on CPU executors, with a report.

The demo runs the tiny world (`tinyworld/`) through the whole stack: diffusers executors serve the
shipped text-to-image pipeline (32 px, CPU, trainer off) and the evaluator scores with the shipped
open_clip scorer. It submits a fixed mix of tasks of 1, 2 and 4 patches whose prompts are scenes of the
world's validation split, pins each task's steps through its QoS to one of STEP_SWEEP (so one run
measures quality against steps), waits for every terminal event, asks the judge (a separate
classifier) whether each image shows its prompt, and writes `<out>/report.json`, `<out>/report.html`
(a table with thumbnails and PNG plots) and the images under `<out>/images/`.

Everything is seeded: the prompts are the first validation scenes, task i samples with
SAMPLER_SEED_BASE + i.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

from eat.v1 import common_pb2, tasks_pb2
from services.client import Client, TaskEvent
from services.common import vhost
from services.stack import Stack, StackConfig
from tinyworld.scenes import parse_caption, split_scenes
from tinyworld.weights import PIPELINE_DIR, SCORER_DIR

MODEL = "tinyworld"
SAMPLER_SEED_BASE = 0  # task i samples with seed SAMPLER_SEED_BASE + i
RESOLUTION = 32  # pixels, the tiny world's
PATCH_MIX = (1, 2, 4, 1, 2, 1, 4, 2)  # cycled over the tasks: 16 tasks = 6 x k1, 6 x k2, 4 x k4
GANG_SIZES = (1, 2, 4)
STEP_SWEEP = (1, 2, 4, 8, 12, 20)  # task i runs STEP_SWEEP[i % 6] steps (QoS min = max)
JUDGED = ("colour", "shape", "position")  # what a verdict checks
NOTE = (
    "The model is the tiny world's text-to-image pipeline, trained on CPU and shipped "
    "(tinyworld/weights/text-to-image); CLIP scores come from the tiny world's own open_clip scorer, "
    "and a separate judge reads each image's colour, shape and position back. Each task's steps are "
    "pinned through its QoS so that the run measures quality against steps."
)

Printer = Callable[[str], None]


@dataclass(frozen=True)
class DemoSettings:
    out_dir: Path = Path("out/demo")
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    tasks: int = 18
    executors: int = 4
    step_sweep: tuple[int, ...] = STEP_SWEEP
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
    judge: dict[str, bool] = field(default_factory=dict)  # attribute -> the judge read it as asked
    judge_read: str = ""  # what the judge saw, e.g. "red triangle, left"

    @property
    def matches(self) -> bool | None:
        """The judge read every judged attribute as the prompt asks (None: no image to judge)."""
        return all(self.judge.values()) if self.judge else None


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


def demo_prompts(n: int) -> list[str]:
    """The captions of the first n scenes of the tiny world's validation split."""
    return [scene.caption for scene, _ in split_scenes("validation", n)]


def demo_submissions(settings: DemoSettings, run_tag: str) -> list[tasks_pb2.TaskSubmission]:
    # The run tag keeps ids unique when the broker (or a state dir) remembers an earlier run's tasks.
    sweep = settings.step_sweep
    return [
        tasks_pb2.TaskSubmission(
            task_id=f"demo-{run_tag}-{i:02d}",
            prompt=prompt,
            model=MODEL,
            patches=patches_for(i, settings.executors),
            seed=SAMPLER_SEED_BASE + i,
            qos=common_pb2.Qos(min_steps=sweep[i % len(sweep)], max_steps=sweep[i % len(sweep)]),
        )
        for i, prompt in enumerate(demo_prompts(settings.tasks))
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


def install_model(models_dir: Path, source: Path = PIPELINE_DIR) -> Path:
    """A fresh copy of the shipped pipeline at models_dir/<MODEL>, where the executors look for it."""
    target = models_dir / MODEL
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target


def stack_config(settings: DemoSettings, models_dir: Path) -> StackConfig:
    evaluator_env = {"EAT_CLIP_MODEL": f"local-dir:{SCORER_DIR}"}
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
        extra_env={"executor": executor_env, "evaluator": evaluator_env},
    )


def run_demo(settings: DemoSettings, say: Printer = print) -> DemoReport:
    """Start the stack, run the workload, stop the stack, write the report; the report."""
    models_dir = settings.out_dir / "models"
    say(f"model {MODEL}: {install_model(models_dir)}")
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
    rows = judge_rows(rows, settings.out_dir)
    report = DemoReport(rows, wall_s, demo_settings_json(settings), stop_codes=codes)
    write_report(report, settings.out_dir)
    return report


def demo_settings_json(settings: DemoSettings) -> dict[str, object]:
    return {
        "tasks": settings.tasks,
        "executors": settings.executors,
        "step_sweep": list(settings.step_sweep),
        "model": MODEL,
        "prompts": "the first scenes of the tiny world's validation split",
        "sampler_seeds": f"{SAMPLER_SEED_BASE} + task index",
        "resolution": RESOLUTION,
        "patch_mix": list(PATCH_MIX),
    }


def run_workload(settings: DemoSettings, stack: Stack, say: Printer) -> tuple[list[DemoRow], float]:
    submissions = demo_submissions(settings, uuid.uuid4().hex[:6])
    mix = ", ".join(f"{sum(s.patches == k for s in submissions)} x k{k}" for k in GANG_SIZES)
    last_seed = SAMPLER_SEED_BASE + len(submissions) - 1
    say(f"submitting {len(submissions)} tasks ({mix}), sampler seeds {SAMPLER_SEED_BASE}..{last_seed},")
    say(f"  steps pinned to {', '.join(map(str, settings.step_sweep))} in turn")
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


def judge_rows(rows: list[DemoRow], out_dir: Path) -> list[DemoRow]:
    """Each completed row with the judge's verdict on its image: did it read the prompt's colour, shape
    and position? The judge is a classifier apart from the evaluator's CLIP."""
    import numpy as np
    from PIL import Image

    from tinyworld.judge import Judge
    from tinyworld.weights import JUDGE_DIR

    done = [i for i, row in enumerate(rows) if row.image]
    if not done:
        return rows
    images = []
    for i in done:
        with Image.open(out_dir / rows[i].image) as image:
            images.append(np.asarray(image.convert("RGB").resize((RESOLUTION, RESOLUTION))))
    read = Judge.load(JUDGE_DIR).predict(np.stack(images))
    judged = list(rows)
    for n, i in enumerate(done):
        wanted = asdict(parse_caption(rows[i].prompt))
        verdict = {name: read[name][n] == wanted[name] for name in JUDGED}
        seen = f"{read['colour'][n]} {read['shape'][n]}, {read['position'][n]}"
        judged[i] = replace(rows[i], judge=verdict, judge_read=seen)
    return judged


# ----- text output -------------------------------------------------------------------------------
def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(rows: Iterable[DemoRow]) -> str:
    header = (
        f"{'task':<15} {'k':>1} {'gang':<27} {'steps':>5} {'model':<6} {'latency s':>9} {'CLIP':>6} "
        f"{'judge':<8} outcome"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        model = "-" if row.reused is None else ("reused" if row.reused else "loaded")
        clip = "-" if row.clip_score is None else f"{row.clip_score:.3f}"
        lines.append(
            f"{row.task_id:<15} {row.patches:>1} {','.join(row.gang) or '-':<27} {row.steps:>5} "
            f"{model:<6} {_seconds(row.response_s):>9} {clip:>6} {verdict_word(row):<8} {row.outcome}"
            + (f" ({row.message})" if row.message else "")
        )
    return "\n".join(lines)


def verdict_word(row: DemoRow) -> str:
    """'match', the attributes the judge read otherwise (e.g. 'shape'), or '-' without an image."""
    if row.matches is None:
        return "-"
    return "match" if row.matches else ",".join(name for name, ok in row.judge.items() if not ok)


def judge_agreement(rows: Iterable[DemoRow]) -> str:
    """'judge: 15/18 images show their prompt (colour 17, shape 16, position 18)'."""
    judged = [row for row in rows if row.judge]
    if not judged:
        return "judge: no images"
    per = ", ".join(f"{name} {sum(row.judge[name] for row in judged)}" for name in JUDGED)
    matched = sum(bool(row.matches) for row in judged)
    return f"judge: {matched}/{len(judged)} images show their prompt ({per})"


def summary_line(report: DemoReport) -> str:
    by_gang = ", ".join(f"k{k} {s:.2f} s" for k, s in report.mean_latency_by_gang().items()) or "-"
    return (
        f"{report.count('completed')} completed, {report.failed} failed, {report.lost} lost of "
        f"{len(report.rows)} in {report.wall_s:.1f} s wall; mean latency by gang size: {by_gang}; "
        + judge_agreement(report.rows)
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
        ("quality_vs_steps.png", _plot_quality_vs_steps),
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


def _plot_quality_vs_steps(axes, rows: list[DemoRow]) -> None:
    """Each image's CLIP score (dots by gang size), the mean per step count, and on a second axis the
    share of images the judge reads as their prompt asks."""
    for k in sorted({row.patches for row in rows}):
        chosen = [row for row in rows if row.patches == k]
        axes.scatter([r.steps for r in chosen], [r.clip_score for r in chosen], label=f"CLIP, k={k}", s=14)
    steps = sorted({row.steps for row in rows})
    at = {s: [row for row in rows if row.steps == s] for s in steps}
    axes.plot(
        steps, [statistics.fmean(r.clip_score or 0.0 for r in at[s]) for s in steps], "k-", label="mean CLIP"
    )
    axes.set(title="Quality vs steps, measured in this run", xlabel="steps", ylabel="CLIP score")
    judged = axes.twinx()
    share = [statistics.fmean(bool(r.matches) for r in at[s]) for s in steps]
    judged.plot(steps, share, "g--o", label="judge: image shows prompt")
    judged.set(ylabel="share judged right", ylim=(-0.05, 1.05))
    if rows:
        axes.legend(loc="lower right")
        judged.legend(loc="center right")


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
    cells = (
        "task",
        "prompt",
        "k",
        "gang",
        "steps",
        "model",
        "latency s",
        "CLIP",
        "judge",
        "outcome",
        "image",
    )
    head = "".join(f"<th>{c}</th>" for c in cells)
    body = "\n".join(_html_row(row) for row in report.rows)
    plots = "\n".join(f'<img src="{e(p)}" alt="{e(p)}">' for p in report.plots)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>EAT Serve demo</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}img.thumb{{width:96px;height:96px;image-rendering:pixelated}}
</style></head>
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
    judge = "-" if row.matches is None else f"{verdict_word(row)} (read {row.judge_read})"
    values += (_seconds(row.response_s), clip, judge, outcome)
    return "<tr>" + "".join(f"<td>{e(v)}</td>" for v in values) + f"<td>{image}</td></tr>"


def print_report(report: DemoReport, out_dir: Path, say: Printer = print) -> None:
    say(format_table(report.rows))
    say(summary_line(report))
    say(NOTE)
    say(f"wrote {out_dir / 'report.json'}, {out_dir / 'report.html'} and {report.count('completed')} images")
