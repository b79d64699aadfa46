"""Settings from the environment: one frozen dataclass per service, read in one place.

Each field `name` of a settings class is read from `EAT_<NAME>` (upper case) and converted to the
field's annotated type; a missing variable keeps the default. Bad values fail at start-up with the
variable named, never later. Services subclass `ServiceSettings` and add their own fields.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

ENV_PREFIX = "EAT_"


class SettingsError(ValueError):
    """An environment variable that does not parse as its setting's type."""


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _parse(raw: str, kind: Any, name: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if raw == "" or raw.lower() == "none":
            return None
        return _parse(raw, options[0], name)
    if origin is tuple:
        (item,) = {k for k in typing.get_args(kind) if k is not Ellipsis}
        return tuple(_parse(part.strip(), item, name) for part in raw.split(",") if part.strip())
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}: expected a boolean (1/0, true/false), got {raw!r}")
    try:
        return Path(raw) if kind is Path else kind(raw)
    except (TypeError, ValueError) as err:
        raise SettingsError(f"{name}: expected {getattr(kind, '__name__', kind)}, got {raw!r}") from err


@dataclass(frozen=True)
class EnvSettings:
    """Reading and writing EAT_* variables; subclasses add the fields and their checks."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Defaults, then EAT_* variables, then explicit overrides (tests and the CLI)."""
        env = os.environ if env is None else env
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = env_name(f.name)
            if name in env:
                values[f.name] = _parse(env[name], hints[f.name], name)
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError naming the variable of a bad value; subclasses extend it."""

    def to_env(self) -> dict[str, str]:
        """The EAT_* variables that reproduce these settings (for starting child processes)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                text = ""
            elif isinstance(value, tuple):
                text = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                text = "1" if value else "0"
            else:
                text = str(value)
            out[env_name(f.name)] = text
        return out


@dataclass(frozen=True)
class ServiceSettings(EnvSettings):
    """What every service reads: the broker, logging, metrics and where state lives."""

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    log_format: str = "auto"  # auto: JSON unless stderr is a terminal; or "json" / "console"
    log_level: str = "info"
    metrics_port: int = 0  # Prometheus /metrics on this port; 0 = off
    # Where /metrics listens: this host only unless a deployment opens it to its scraper (0.0.0.0).
    metrics_host: str = "127.0.0.1"
    state_dir: Path = Path("var/state")  # durable service state (aggregator journal, trainer buffer)
    result_store: Path = Path("var/results")  # images, passed between services by reference
    # Simulated seconds per wall second: sim executors sleep duration / time_scale and the aggregator
    # reads its clock times time_scale, so a paper workload runs time_scale times faster.
    time_scale: float = 1.0
    reconnect_max_s: float = 5.0  # longest pause between broker reconnect attempts

    def validate(self) -> None:
        super().validate()
        if self.time_scale <= 0:
            raise SettingsError(f"{env_name('time_scale')} must be > 0, got {self.time_scale}")
        if self.log_format not in ("auto", "json", "console"):
            raise SettingsError(f"{env_name('log_format')} must be auto, json or console")
