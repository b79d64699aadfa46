"""The trainer's bus shell: Experience in, SAC updates on a timer, PolicyUpdated out.

Threads: the bus thread handles messages, runs the updates owed from a timer (a bounded number per
turn, so messages never wait long), saves, and publishes. An evaluation runs on a worker thread on a
frozen copy of the agent; updates pause meanwhile, so only one thread at a time does heavy torch work
(the machines are small and torch runs at one thread), while transitions keep being stored. The
result comes back to the bus thread through `call_threadsafe`, where promotion and publishing happen.

Durability: a message is acked once its transition is in the in-memory replay buffer; the state is
saved every save_every_s and at shutdown. A crash therefore loses at most the transitions acked since
the last save (at-least-once delivery covers only the ones not yet acked).
"""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path

import structlog

from eat.v1 import learning_pb2
from services.common.bus import Bus, Delivery, Reject
from services.common.convert import policy_updated_to_proto, transition_from_proto
from services.common.topology import LEARNING, POLICY_UPDATED_KEY, TRAINER_EXPERIENCE, Queue
from services.trainer import metrics
from services.trainer.core import Candidate, EvaluationResult, OnlineTrainer, Promotion

log = structlog.get_logger("trainer")
TICK_S = 0.05  # the update timer's period
UPDATES_PER_TICK = 8
TICK_BUDGET_S = 0.04  # stop a turn's updates after this long (one cpu-fast update takes ~0.1 s)


class TrainerService:
    def __init__(
        self,
        trainer: OnlineTrainer,
        bus: Bus,
        state_dir: Path,
        *,
        save_every_s: float = 30.0,
        queue: Queue = TRAINER_EXPERIENCE,
        tick_s: float = TICK_S,
        updates_per_tick: int = UPDATES_PER_TICK,
        tick_budget_s: float = TICK_BUDGET_S,
        update_share: float = 1.0,
    ) -> None:
        self.trainer, self.bus, self.state_dir = trainer, bus, state_dir
        self.updates_per_tick, self.tick_budget_s = updates_per_tick, tick_budget_s
        if not 0.0 < update_share <= 1.0:
            raise ValueError(f"update_share must lie in (0, 1], got {update_share}")
        self.update_share, self.rest_until = update_share, 0.0
        self.evaluating: Candidate | None = None
        self.unannounced: list[Promotion] = []
        pending = trainer.unannounced()  # promoted before a crash, perhaps never published
        if pending is not None:
            self.unannounced.append(pending)
        bus.consume(queue, self.on_experience)
        bus.every(tick_s, self.on_tick)
        bus.every(save_every_s, self.save)
        self._update_gauges()

    # ----- messages --------------------------------------------------------------------------------
    def on_experience(self, delivery: Delivery) -> None:
        # Returning acks the message: the transition is then only in memory until the next save, so a
        # crash loses at most the transitions acked since the last save.
        try:
            stored = self.trainer.add_transition(
                transition_from_proto(delivery.parse(learning_pb2.Experience))
            )
        except (Reject, ValueError) as err:  # InvalidTransition is a ValueError
            metrics.TRANSITIONS.labels("rejected").inc()
            raise Reject(str(err)) from err
        metrics.TRANSITIONS.labels("stored" if stored else "duplicate").inc()
        self._update_gauges()

    # ----- the update timer ------------------------------------------------------------------------
    def on_tick(self) -> None:
        self.announce()
        if self.evaluating is not None:
            return  # updates pause while an evaluation runs (module docstring)
        if time.monotonic() < self.rest_until:
            return
        started = time.monotonic()
        done = self.trainer.maybe_update(self.updates_per_tick, self.tick_budget_s)
        # Duty cycle: rest in proportion to the time spent, so training takes at most `update_share`
        # of a core and the services it shares a machine with keep the rest.
        spent = time.monotonic() - started
        self.rest_until = started + spent / self.update_share
        if done.updates:
            metrics.UPDATES.inc(done.updates)
            self._update_gauges()
        if self.trainer.evaluation_due:
            self.start_evaluation()

    def start_evaluation(self) -> None:
        candidate = self.trainer.candidate()
        self.evaluating = candidate
        log.info("evaluating a candidate", updates=candidate.updates, transitions=candidate.transitions)
        threading.Thread(target=self._evaluate, args=(candidate,), name="trainer-eval", daemon=True).start()

    def _evaluate(self, candidate: Candidate) -> None:
        """Worker thread: the simulator runs, then the result goes back to the bus thread."""
        started = time.perf_counter()
        result: EvaluationResult | None = None
        try:
            result = self.trainer.evaluate(candidate)
        except Exception:
            log.exception("evaluation failed")
        metrics.EVALUATION_SECONDS.observe(time.perf_counter() - started)
        self.bus.call_threadsafe(partial(self.evaluation_done, candidate, result))

    def evaluation_done(self, candidate: Candidate, result: EvaluationResult | None) -> None:
        """Bus thread. May run twice when publishing hits a broker loss: the second run only
        publishes what is still unannounced."""
        if self.evaluating is candidate:
            self.evaluating = None
            promotion = self._record(candidate, result)
            if promotion is not None:
                self.unannounced.append(promotion)
        self.announce()

    def _record(self, candidate: Candidate, result: EvaluationResult | None) -> Promotion | None:
        if result is None:
            self.trainer.evaluation_failed(candidate)
            return None
        promotion = self.trainer.finish_evaluation(candidate, result)
        metrics.EVALUATIONS.inc()
        metrics.CANDIDATE_UTILITY.set(result.candidate_utility)
        metrics.SERVING_UTILITY.set(result.serving_utility)
        log.info(
            "evaluated",
            candidate_utility=round(result.candidate_utility, 4),
            serving_utility=round(result.serving_utility, 4),
            diff_ci95=round(result.diff_ci95, 4),
            serving_version=result.serving_version,
            serving_policy=result.serving_policy,
            updates=result.updates,
            promoted=promotion is not None,
            settings=result.settings,
        )
        if promotion is not None:
            metrics.PROMOTIONS.inc()
            self._update_gauges()
        return promotion

    def announce(self) -> None:
        """Publish the PolicyUpdated of every promotion not yet announced, oldest first."""
        while self.unannounced:
            promotion = self.unannounced[0]
            self.bus.publish(LEARNING.name, POLICY_UPDATED_KEY, policy_updated_to_proto(promotion))
            self.trainer.announced(promotion)
            self.unannounced.pop(0)
            log.info("policy promoted", version=promotion.version, checkpoint=str(promotion.directory))

    # ----- persistence -----------------------------------------------------------------------------
    def save(self) -> None:
        started = time.perf_counter()
        directory = self.trainer.save(self.state_dir)
        log.info(
            "saved state",
            directory=str(directory),
            transitions=len(self.trainer.buffer),
            updates=self.trainer.counters.updates,
            seconds=round(time.perf_counter() - started, 3),
        )

    def close(self) -> None:
        """After the bus loop has stopped: save (an evaluation still running is abandoned)."""
        self.save()

    def _update_gauges(self) -> None:
        metrics.BUFFER_SIZE.set(len(self.trainer.buffer))
        metrics.UPDATES_OWED.set(self.trainer.updates_owed)
        metrics.SERVING_VERSION.set(self.trainer.serving.version)
