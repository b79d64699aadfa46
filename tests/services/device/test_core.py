"""Which handoffs a device takes, and its pace."""

from __future__ import annotations

from services.common.hybrid import Handoff, Member
from services.device.core import handoff_problems, handoff_stale, paced_s
from services.device.settings import DeviceSettings


def test_a_device_takes_only_its_users_unfinished_requests() -> None:
    ok = Handoff(Member("t1", "ana", "p", 1), 6, 2, None)
    assert list(handoff_problems(ok, "ana")) == []
    assert "not this device's user" in " ".join(handoff_problems(ok, "ben"))
    done = Handoff(Member("t1", "ana", "p", 1), 6, 6, None)
    assert "done_step" in " ".join(handoff_problems(done, "ana"))


def test_a_slow_device_is_slow() -> None:
    assert paced_s(4, 0.5) == 8.0 and paced_s(0, 2.0) == 0.0


def test_the_cli_flags_become_settings() -> None:
    settings = DeviceSettings.from_env(env={}, device_user="ana", device_speed=2.5, device_simulated=True)
    assert (settings.device_user, settings.device_speed, settings.device_simulated) == ("ana", 2.5, True)


def test_a_handoff_past_its_report_deadline_is_stale() -> None:
    handoff = Handoff(Member("t1", "ana", "p", 1), 6, 0, None, report_by=100.0)
    assert not handoff_stale(handoff, 99.0) and handoff_stale(handoff, 100.5)
    assert not handoff_stale(Handoff(Member("t1", "ana", "p", 1), 6, 2, None), 1e12)  # no deadline given
