"""Settings from the environment: types, defaults, overrides and clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.settings import ServiceSettings, SettingsError


@dataclass(frozen=True)
class Example(ServiceSettings):
    workers: int = 2
    ratio: float = 0.5
    names: tuple[str, ...] = ("a",)
    enabled: bool = False
    target: str | None = None


def test_defaults_environment_and_overrides() -> None:
    env = {"EAT_WORKERS": "7", "EAT_NAMES": "x, y,z", "EAT_ENABLED": "yes", "EAT_STATE_DIR": "/tmp/s"}
    settings = Example.from_env(env, ratio=0.25)
    assert settings.workers == 7 and settings.names == ("x", "y", "z") and settings.enabled
    assert settings.ratio == 0.25 and settings.state_dir == Path("/tmp/s") and settings.target is None
    assert Example.from_env({}) == Example()


def test_round_trip_through_the_environment() -> None:
    settings = Example.from_env({}, workers=3, names=("p", "q"), enabled=True, target="h:1")
    assert Example.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EAT_WORKERS": "many"}, "EAT_WORKERS: expected int"),
        ({"EAT_ENABLED": "perhaps"}, "EAT_ENABLED: expected a boolean"),
        ({"EAT_TIME_SCALE": "0"}, "EAT_TIME_SCALE must be > 0"),
        ({"EAT_LOG_FORMAT": "xml"}, "EAT_LOG_FORMAT must be auto, json or console"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Example.from_env(env)
