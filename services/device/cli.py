"""`eat device --user U --speed X [--simulated]`: run one user's device until Ctrl-C."""

from __future__ import annotations

import argparse

from services.common.bus import Bus
from services.common.domain import ImageInfo
from services.common.hybrid import Handoff
from services.common.runner import on_shutdown, start_service
from services.device.core import device_id
from services.device.service import DeviceService, Finisher
from services.device.settings import DeviceSettings


def add_device(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "device", help="a user's device: finish handed-over latents with the personal model"
    )
    p.add_argument("--user", required=True, help="the user (its adapter is <users dir>/<user>)")
    p.add_argument("--speed", type=float, required=True, help="steps per second the device keeps")
    p.add_argument(
        "--simulated", action="store_true", help="skip the model: sleep the phase's time, no image"
    )
    p.add_argument("--amqp-url", help="RabbitMQ URL (default: EAT_AMQP_URL)")
    p.set_defaults(handler=_run_from_args)


def _run_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    overrides: dict[str, object] = dict(
        device_user=args.user, device_speed=args.speed, device_simulated=args.simulated
    )
    if args.amqp_url:
        overrides["amqp_url"] = args.amqp_url
    run_device(DeviceSettings.from_env(**overrides))
    return 0


def make_finisher(settings: DeviceSettings) -> Finisher:
    """The user's personal model, loaded now; torch loads only for a real device."""
    import torch

    from services.edge.models import PersonalModels

    torch.set_num_threads(settings.torch_threads)
    user = settings.device_user
    models = PersonalModels(settings.pipeline_dir, settings.users_dir, [user], settings.resolution)

    def finish(handoff: Handoff) -> ImageInfo:
        phase = models.late_phase(handoff.member, handoff.steps, handoff.done_step, handoff.latent, user)
        (image,) = models.store(phase, [handoff.member.task_id], settings.result_store, "device")
        return image

    return finish


def run_device(settings: DeviceSettings) -> None:
    log = start_service("device", settings)
    finish = None if settings.device_simulated else make_finisher(settings)
    # One request at a time: a phone finishes one image before it starts the next.
    bus = Bus(settings.amqp_url, prefetch=1, reconnect_max_s=settings.reconnect_max_s)
    service = DeviceService(settings, bus, device_id(settings.device_user), finish)
    service.start()
    on_shutdown(bus.stop)
    log.info(
        "device ready",
        user=settings.device_user,
        steps_per_s=settings.device_speed,
        simulated=settings.device_simulated,
    )
    bus.run()
    service.close()
    log.info("device stopped")
