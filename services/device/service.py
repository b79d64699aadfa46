"""The device's bus wiring. Its phase runs on a worker thread so heartbeats keep going; the handoff's
delivery is held until the report is confirmed, so a device that vanishes mid-phase leaves the latent
in its queue (and the coordinator, missing its heartbeats, finishes the request at the edge). There the
latent expires (its message's time to live), and a handoff that arrives past its report deadline is
dropped, so a device started later does not finish a request that was taken back."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import structlog

from eat.v1 import hybrid_pb2
from services.common import topology
from services.common.bus import Bus, Delivery, Hold, Reject
from services.common.domain import ImageInfo
from services.common.hybrid import (
    BadLatent,
    DeviceHeartbeat,
    DeviceReport,
    Handoff,
    device_report_to_proto,
    handoff_from_proto,
    heartbeat_to_proto,
)
from services.device.core import handoff_problems, handoff_stale, paced_s
from services.device.settings import DeviceSettings

log = structlog.get_logger("device")


class Finisher(Protocol):
    """Runs a handoff's remaining steps with the user's personal model and stores the image."""

    def __call__(self, handoff: Handoff) -> ImageInfo: ...


class DeviceService:
    def __init__(
        self,
        settings: DeviceSettings,
        bus: Bus,
        device_id: str,
        finish: Finisher | None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.device_id = device_id
        self.finish = finish  # None: simulated
        self.sleep = sleep
        self.holding: dict[str, Hold] = {}
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device-phase")

    @property
    def user(self) -> str:
        return self.settings.device_user

    def start(self) -> None:
        self.bus.consume(topology.device_queue(self.user), self.on_handoff)
        self.bus.every(self.settings.heartbeat_s, self.heartbeat, first_s=0.0)

    def on_handoff(self, delivery: Delivery) -> None:
        try:
            handoff = handoff_from_proto(delivery.parse(hybrid_pb2.LatentHandoff))
        except BadLatent as err:
            raise Reject(f"bad latent: {err}") from err
        problems = list(handoff_problems(handoff, self.user))
        if problems:
            raise Reject("invalid handoff: " + "; ".join(problems))
        task_id = handoff.member.task_id
        if handoff_stale(handoff, time.time()):
            log.info("stale handoff dropped: past its report deadline", task_id=task_id)
            return
        if task_id in self.holding:
            return  # a redelivery of what this device is already finishing
        self.holding[task_id] = self.bus.hold()
        self.heartbeat()  # say at once that it holds the request
        self._worker.submit(self._work, handoff)

    def _work(self, handoff: Handoff) -> None:
        """On the worker thread: finish, pace, then hand the report to the bus thread."""
        started = time.perf_counter()
        image, error = None, ""
        try:
            if self.finish is not None:
                image = self.finish(handoff)
        except Exception as err:  # reported: the coordinator takes the request back
            log.exception("device phase failed", task_id=handoff.member.task_id)
            error = repr(err)
        target = paced_s(handoff.steps - handoff.done_step, self.settings.device_speed)
        self.sleep(max(0.0, target - (time.perf_counter() - started)))
        report = DeviceReport(
            task_id=handoff.member.task_id,
            user_id=self.user,
            device_id=self.device_id,
            split_step=handoff.done_step,
            steps=handoff.steps,
            image=image,
            simulated=self.finish is None,
            error=error,
            device_s=time.perf_counter() - started,
        )
        self.bus.call_threadsafe(lambda: self._report(report))

    def _report(self, report: DeviceReport) -> None:
        hold = self.holding.pop(report.task_id, None)
        message = device_report_to_proto(report)
        self.bus.publish(topology.HYBRID.name, topology.DEVICE_REPORT_KEY, message, on_behalf=hold)
        if hold is not None:
            self.bus.release(hold)
        log.info(
            "request finished",
            task_id=report.task_id,
            split=report.split_step,
            device_s=round(report.device_s, 2),
        )

    def heartbeat(self) -> None:
        beat = DeviceHeartbeat(
            self.user, self.device_id, self.settings.device_speed, tuple(self.holding), self.finish is None
        )
        key = topology.device_heartbeat_key(self.user)
        self.bus.publish(topology.HYBRID.name, key, heartbeat_to_proto(beat), persistent=False)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
