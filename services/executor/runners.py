"""How an attempt runs, behind one small interface so a real diffusers runner fits beside the simulator.

The service calls `Runner.start` on the bus thread for a dispatch that passed its checks. The runner
either raises `AttemptFailed` at once, or returns the expected duration (simulated seconds) and later
calls `done` exactly once, on the bus thread, with a `RunReport` or a `Failure`. `SimRunner` waits
with the bus's timer; `DiffusersRunner` (diffusers_runner.py) works on its own thread and hands `done`
back through `bus.call_threadsafe`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from policy_models.profiles import TimingProfile, get_profile, profile_quality
from services.executor.core import Dispatch, Failure, ResidentModels, RunReport, plan_sim_attempt
from services.executor.settings import ExecutorSettings

DoneCallback = Callable[[RunReport | Failure], None]
# Run a function on the bus thread after a delay in wall seconds (bus.call_later).
Scheduler = Callable[[float, Callable[[], None]], object]
# Run a function on the bus thread, from any thread (bus.call_threadsafe).
CallThreadsafe = Callable[[Callable[[], None]], object]


class Runner(Protocol):
    def start(self, dispatch: Dispatch, done: DoneCallback) -> float:
        """Begin the attempt; returns its expected duration in simulated seconds."""
        ...

    def resident_models(self) -> tuple[str, ...]:
        """Models held in memory, most recently used first."""
        ...

    def close(self) -> None:
        """Release what the runner holds (threads, models) once the bus has stopped."""
        ...


class SimRunner:
    """Runs nothing: holds the resident-model LRU and waits the profile's time, scaled to the wall."""

    def __init__(
        self,
        profile: TimingProfile,
        *,
        speed_factor: float,
        max_resident_models: int,
        time_scale: float,
        schedule: Scheduler,
    ) -> None:
        self.profile = profile
        self.speed_factor = speed_factor
        self.time_scale = time_scale
        self._schedule = schedule
        self._resident = ResidentModels(max_resident_models)
        # A calibrated profile's own quality curve, else the paper's (as the simulators use).
        self._quality = profile_quality(profile.name)

    def start(self, dispatch: Dispatch, done: DoneCallback) -> float:
        plan = plan_sim_attempt(
            self.profile,
            dispatch.gang_size,
            dispatch.steps,
            self.speed_factor,
            resident=dispatch.model in self._resident,
            expect_reload=dispatch.expect_reload,
        )
        # The model is loaded (or touched) as the attempt starts, so the next status already shows it.
        self._resident.use(dispatch.model)
        report = RunReport(
            timings=plan.timings(),
            model_reused=plan.model_reused,
            simulated=True,
            simulated_quality=self._quality(dispatch.steps),
        )
        self._schedule(plan.total_s / self.time_scale, lambda: done(report))
        return plan.total_s

    def resident_models(self) -> tuple[str, ...]:
        return self._resident.most_recent_first()

    def close(self) -> None:
        """Nothing to release: pending timers die with the bus loop."""


def build_runner(settings: ExecutorSettings, schedule: Scheduler, call_threadsafe: CallThreadsafe) -> Runner:
    """The runner named by `settings.runner` (settings validation already rejected unknown names)."""
    if settings.runner == "diffusers":
        # Imported here so that simulated executors never import torch and diffusers.
        from services.executor.diffusers_runner import build_diffusers_runner

        return build_diffusers_runner(settings, call_threadsafe)
    if settings.runner == "sim":
        return SimRunner(
            get_profile(settings.profile),
            speed_factor=settings.speed_factor,
            max_resident_models=settings.max_resident_models,
            time_scale=settings.time_scale,
            schedule=schedule,
        )
    raise ValueError(f"unknown runner {settings.runner!r}")
