"""Settings of the online trainer, read from EAT_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from policy_models.learning.agents import ALGORITHMS
from policy_models.obs import MAX_MODELS
from policy_models.policies import is_known_policy
from policy_models.profiles import get_profile
from services.common.settings import ServiceSettings, SettingsError, env_name

PRESETS = ("cpu-fast", "paper")  # AgentConfig.cpu_fast() and AgentConfig.paper()
VALIDATION_SEED_BASE = 500  # promotion seeds 500, 501, ...: disjoint from `eat eval`'s 1000+
MAX_EVAL_SEEDS = 500  # so the validation seeds never reach the evaluation seeds


@dataclass(frozen=True)
class TrainerSettings(ServiceSettings):
    """The cluster the policy is trained for, the agent, the update schedule and the promotion rule."""

    policy_dir: Path = Path("var/policies")  # promoted checkpoints: <policy_dir>/v000003/
    nodes: int = 4
    models: tuple[str, ...] = ("sd-v1-4",)
    models_per_server: int = 2
    profile: str = "reference"
    algorithm: str = "eat"
    preset: str = "cpu-fast"
    init_checkpoint: str = ""  # start from this checkpoint dir (or training run), else fresh weights
    serving_policy: str = "reuse"  # served until the first promotion; the candidate must beat it
    buffer_capacity: int = 100_000
    batch_size: int = 128
    warmup_transitions: int = 256  # no updates before this many transitions are stored
    updates_per_transition: float = 1.0
    evaluate_every_updates: int = 500
    eval_seeds: int = 5  # validation seeds 500..500+n-1
    eval_rate: float = 0.05  # arrival rate of the simulated promotion setting (warm mode)
    min_improvement: float = 0.0  # the candidate must beat the serving utility by more than this
    seed: int = 0
    save_every_s: float = 30.0
    # Largest share of wall time spent on updates (one core): on a machine shared with the serving
    # path, training must not starve it. 1.0 = update whenever updates are owed.
    update_share: float = 0.5
    # Added to the process's nice value at start (0-19). Online training is background work: with,
    # say, 10 on a machine whose cores the serving path (aggregator, policy server, executors) shares,
    # serving gets the CPU first and the trainer catches up when there is slack. Off by default: a
    # starved trainer also takes longer to save its state at shutdown.
    nice: int = 0

    @property
    def validation_seeds(self) -> tuple[int, ...]:
        return tuple(range(VALIDATION_SEED_BASE, VALIDATION_SEED_BASE + self.eval_seeds))

    def validate(self) -> None:
        super().validate()
        self._validate_cluster()
        self._validate_learning()

    def _validate_cluster(self) -> None:
        if self.nodes < 1:
            raise SettingsError(f"{env_name('nodes')} must be >= 1, got {self.nodes}")
        if not self.models or len(self.models) > MAX_MODELS or len(set(self.models)) != len(self.models):
            raise SettingsError(f"{env_name('models')} must name 1..{MAX_MODELS} distinct models")
        if self.models_per_server < 1:
            raise SettingsError(f"{env_name('models_per_server')} must be >= 1")
        try:
            get_profile(self.profile)
        except ValueError as err:
            raise SettingsError(f"{env_name('profile')}: {err}") from err
        if not is_known_policy(self.serving_policy):
            raise SettingsError(f"{env_name('serving_policy')}: unknown policy {self.serving_policy!r}")

    def _validate_learning(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise SettingsError(
                f"{env_name('algorithm')} must be one of {ALGORITHMS}, got {self.algorithm!r}"
            )
        if self.preset not in PRESETS:
            raise SettingsError(f"{env_name('preset')} must be one of {PRESETS}, got {self.preset!r}")
        positive = {
            "buffer_capacity": self.buffer_capacity,
            "batch_size": self.batch_size,
            "warmup_transitions": self.warmup_transitions,
            "evaluate_every_updates": self.evaluate_every_updates,
            "eval_rate": self.eval_rate,
            "save_every_s": self.save_every_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise SettingsError(f"{env_name(name)} must be > 0, got {value}")
        if self.warmup_transitions > self.buffer_capacity:
            raise SettingsError(f"{env_name('warmup_transitions')} must not exceed the buffer capacity")
        if self.updates_per_transition < 0:
            raise SettingsError(f"{env_name('updates_per_transition')} must be >= 0")
        if not 0.0 < self.update_share <= 1.0:
            raise SettingsError(f"{env_name('update_share')} must lie in (0, 1], got {self.update_share}")
        if not 0 <= self.nice <= 19:
            raise SettingsError(f"{env_name('nice')} must be in 0..19, got {self.nice}")
        if not 1 <= self.eval_seeds <= MAX_EVAL_SEEDS:
            raise SettingsError(f"{env_name('eval_seeds')} must be in 1..{MAX_EVAL_SEEDS}")
