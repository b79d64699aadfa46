"""`python -m services.device`: one user's device, configured by EAT_* variables (see `eat device`)."""

from __future__ import annotations

from services.device.cli import run_device
from services.device.settings import DeviceSettings


def main() -> None:
    run_device(DeviceSettings.from_env())


if __name__ == "__main__":
    main()
