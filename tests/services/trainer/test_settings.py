"""TrainerSettings from EAT_* variables, and the core config built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_models.learning.agents import AgentConfig
from services.common.settings import SettingsError
from services.trainer.__main__ import trainer_config
from services.trainer.settings import TrainerSettings


def test_defaults_and_environment_values() -> None:
    defaults = TrainerSettings.from_env({})
    assert defaults.validation_seeds == (500, 501, 502, 503, 504)
    assert defaults.policy_dir == Path("var/policies") and defaults.preset == "cpu-fast"

    settings = TrainerSettings.from_env(
        {
            "EAT_MODELS": "sd-v1-4, sdxl",
            "EAT_POLICY_DIR": "/tmp/p",
            "EAT_MIN_IMPROVEMENT": "-1e9",
            "EAT_EVAL_SEEDS": "3",
            "EAT_UPDATES_PER_TRANSITION": "0.5",
        }
    )
    assert settings.models == ("sd-v1-4", "sdxl") and settings.policy_dir == Path("/tmp/p")
    assert settings.min_improvement == -1e9 and settings.validation_seeds == (500, 501, 502)
    assert settings.updates_per_transition == 0.5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EAT_ALGORITHM", "ppo"),
        ("EAT_PRESET", "huge"),
        ("EAT_EVAL_SEEDS", "0"),
        ("EAT_EVAL_SEEDS", "501"),  # would reach the evaluation seeds 1000+
        ("EAT_SERVING_POLICY", "nope"),
        ("EAT_BATCH_SIZE", "0"),
        ("EAT_NODES", "0"),
        ("EAT_PROFILE", "no-such-profile"),
        ("EAT_UPDATES_PER_TRANSITION", "-1"),
        ("EAT_NICE", "20"),
        ("EAT_WARMUP_TRANSITIONS", "200000"),  # more than the buffer holds: never an update
    ],
)
def test_bad_values_fail_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        TrainerSettings.from_env({variable: value})


def test_the_core_config_follows_the_settings() -> None:
    settings = TrainerSettings.from_env({}, nodes=8, batch_size=32, buffer_capacity=1000, eval_rate=0.1)
    config = trainer_config(settings)
    assert config.sim.n_servers == config.eval_sim.n_servers == 8 and config.eval_sim.mode == "warm"
    assert config.eval_sim.arrival_rate == 0.1 and config.sim.action_dim == config.eval_sim.action_dim
    fast = AgentConfig.cpu_fast()
    assert config.agent.hidden == fast.hidden and config.agent.learn_alpha
    assert (config.agent.batch_size, config.agent.buffer_capacity, config.agent.n_step) == (32, 1000, 1)
    assert config.eval_seeds == settings.validation_seeds and config.init_checkpoint is None
