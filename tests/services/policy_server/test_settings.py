"""PolicySettings from EAT_* variables, and the values it refuses at start-up."""

from __future__ import annotations

import pytest

from services.common.settings import SettingsError
from services.policy_server.settings import PolicySettings


def test_settings_are_read_from_the_environment() -> None:
    env = {
        "EAT_GRPC_PORT": "6000",
        "EAT_POLICY": "checkpoint:/runs/eat-n8",
        "EAT_NODES": "8",
        "EAT_MODELS": "sd-v1-4, sd-v2-1",
        "EAT_MODELS_PER_SERVER": "3",
        "EAT_SEED": "7",
        "EAT_HOT_SWAP": "0",
        "EAT_OFFLOAD_POLICY": "greedy-social",
    }
    settings = PolicySettings.from_env(env)
    assert (settings.grpc_port, settings.policy, settings.nodes) == (6000, "checkpoint:/runs/eat-n8", 8)
    assert (settings.models, settings.models_per_server, settings.seed) == (("sd-v1-4", "sd-v2-1"), 3, 7)
    assert not settings.hot_swap and settings.grpc_host == "127.0.0.1" and settings.profile == "reference"
    assert settings.offload_policy == "greedy-social"
    assert PolicySettings.from_env({}).offload_policy == "drl-convex"
    assert PolicySettings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EAT_POLICY", "no-such-policy", "unknown policy"),
        ("EAT_OFFLOAD_POLICY", "eat", "EAT_OFFLOAD_POLICY: unknown offloading policy 'eat'"),
        ("EAT_NODES", "0", "EAT_NODES must be >= 1"),
        ("EAT_MODELS", "a,a", "distinct"),
        ("EAT_MODELS_PER_SERVER", "0", "EAT_MODELS_PER_SERVER"),
        ("EAT_PROFILE", "no-such-profile", "unknown timing profile"),
        ("EAT_GRPC_PORT", "70000", "0..65535"),
        ("EAT_GRPC_PORT", "http", "expected int"),
    ],
)
def test_bad_values_fail_at_start_up_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        PolicySettings.from_env({name: value})
