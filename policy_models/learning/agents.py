"""The four learned schedulers of the paper's ablation (Section VI, Tables IX-XI), and LAD-TS, as one
agent shape.

| algorithm | encoder          | actor          | layout   | reverse chain starts from          |
|-----------|------------------|----------------|----------|------------------------------------|
| eat       | AttentionEncoder | DiffusionActor | per-task | noise (training), 0 (evaluation)   |
| eat-a     | FlatEncoder      | DiffusionActor | flat     | noise (training), 0 (evaluation)   |
| eat-d     | AttentionEncoder | GaussianActor  | per-task | (no chain)                         |
| eat-da    | FlatEncoder      | GaussianActor  | flat     | (no chain)                         |
| lad-ts    | AttentionEncoder | DiffusionActor | per-task | the `ActionPrior` of the state     |

lad-ts is EAT's networks with LAD-TS's latent action prior (`learning.prior`): the agent also holds an
`ActionPrior`, an EMA of past mean actions per cluster-state bucket, whose buffers are saved with the
networks under the module name "prior".

Every agent also has twin critics (`TwinCritic`, same layout as the actor) and their target copy.
`AgentConfig` holds the constructor arguments and the SAC hyperparameters; it is written into every
checkpoint, so a checkpoint says how to rebuild and continue its agent.

Which encoder the critic reads: ONE encoder, shared by actor and critic and trained by the critic loss
only (the actor reads its features detached), as SAC-AE and DrQ do for learned state encoders:
- the TD regression is a dense, stable learning signal for the representation; the actor's loss runs
  through min(Q1, Q2), a moving target, and letting it shape the encoder lets the actor bend the
  features the critic judges it by;
- the per-task critic reads the same task tokens the actor scored, so both see one set of tokens;
- one encoder forward per sampled batch serves both losses, and serving keeps one encoder.
Only the critics have a target copy (the paper, V-C3: "only the critic network employs a target
network"); it reads the online encoder's features, as in DrQ-v2, so there is no target encoder.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from policy_models.learning.hints import HINTS, observation_shapes
from policy_models.learning.prior import DEFAULT_DECAY, DEFAULT_IDLE_EDGES, DEFAULT_QUEUE_EDGES, ActionPrior
from policy_models.nets import AttentionEncoder, DiffusionActor, FlatEncoder, GaussianActor, TwinCritic
from policy_models.obs import GLOBAL_FEATURES, SERVER_FEATURES, ObservationSpec

Algorithm = Literal["eat", "eat-a", "eat-d", "eat-da", "lad-ts"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
# AgentConfig fields added after checkpoints were first written: left out of `to_dict` while they hold
# their default (the paper's behaviour), so older checkpoints still compare equal on resume.
EXTENSION_FIELDS = (
    "n_step",
    "learn_alpha",
    "target_entropy_per_dim",
    "alpha_lr",
    "reward_scale",
    "bc_weight",
    "bc_score_temperature",
    "hint",
    "residual",
    "residual_deadzone",
    "q_filter",
)
# AgentConfig fields only lad-ts reads. Left out of the other algorithms' `to_dict`, so their configs
# (and the checkpoints written before lad-ts existed) compare equal on resume.
PRIOR_FIELDS = ("prior_decay", "prior_idle_edges", "prior_queue_edges")
Encoder = AttentionEncoder | FlatEncoder
Actor = DiffusionActor | GaussianActor


@dataclass(frozen=True)
class AgentConfig:
    """Networks and SAC hyperparameters. Defaults follow the paper's Tables VII-VIII and D2SAC where
    those give a value; the others are marked as our choice."""

    algorithm: Algorithm = "eat"
    # Networks (Table VII: 256-unit Mish layers, 16-dim time embedding, 10 denoising steps).
    hidden: int = 256
    time_dim: int = 16
    diffusion_steps: int = 10
    beta_min: float = 0.1  # VP schedule, D2SAC
    beta_max: float = 10.0
    score_hidden: int = 64  # per-task score networks (our choice: they run once per slot)
    d_model: int = 64  # attention width (the paper's value is not legible in our copy)
    attention_heads: int = 4
    attention_layers: int = 2
    attention_ff: int = 128
    log_std_min: float = -5.0
    log_std_max: float = 1.0
    critic_score_temperature: float = 0.1
    # SAC (Table VIII and D2SAC).
    batch_size: int = 512
    gamma: float = 0.95
    tau: float = 0.005
    alpha: float = 0.05  # fixed entropy temperature, not learned
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    weight_decay: float = 1e-4  # Table VIII lists one; its value is not legible in our copy (our choice)
    buffer_capacity: int = 1_000_000  # transitions; as D2SAC and SAC (Table VIII's value not legible)
    # Gradient updates per environment transition (B parallel envs give B transitions per batched
    # step). Our choice: CPU updates at batch 512 are far slower than simulator steps.
    updates_per_step: float = 0.0625
    max_grad_norm: float | None = None  # None: no clipping (grad norms are still logged)
    # Extensions (off by default = the paper's SAC; the "cpu-fast" preset turns them on):
    # n-step returns (D2SAC uses 3): y = sum_k gamma^k r_k + gamma^n (1 - done) V(s_n), the window
    # cut at episode ends (then done = 1 and nothing is bootstrapped).
    n_step: int = 1
    # Learned temperature (SAC v2): alpha = exp(log_alpha) is tuned so the policy's entropy tracks a
    # target of `target_entropy_per_dim` nats per counted action dimension (execute, steps and the
    # valid task slots, as log_prob counts them); `alpha` is then its starting value.
    learn_alpha: bool = False
    target_entropy_per_dim: float = -1.0
    alpha_lr: float = 3e-4
    # Rewards are multiplied by this before they reach the critic (alpha is relative to it).
    reward_scale: float = 1.0
    # Learning from a teacher (`learning.imitation`; used only when training names a teacher): the
    # Q-filtered imitation term's weight in the actor loss, relative to the batch's mean |Q|, and the
    # temperature that turns task scores into logits for its cross-entropy.
    bc_weight: float = 0.0
    bc_score_temperature: float = 0.1
    # Keep the imitation term only where the critic rates the teacher's action above the actor's (the
    # Q-filter); off: everywhere, as TD3+BC does.
    q_filter: bool = True
    # lad-ts's action prior (our choice; `learning.prior` documents the bucket key). At 64 envs, decay
    # 0.99 forgets over about 100 batched steps (6,400 transitions), so it follows the policy's drift.
    prior_decay: float = DEFAULT_DECAY
    prior_idle_edges: tuple[float, ...] = DEFAULT_IDLE_EDGES
    prior_queue_edges: tuple[float, ...] = DEFAULT_QUEUE_EDGES
    # A hinted agent (`learning.hints`, our extension): the named memoryless heuristic's action on the
    # same observation is part of the network's input. None: the paper's input.
    hint: str | None = None
    # With a hint: the actor outputs a correction to the hint's action, not the action (`learning.hints`).
    residual: bool = False
    # Residual outputs within this of 0 count as 0 (`nets.encoders.residual_to_action`): the hint's
    # decision stands unless the correction is deliberate. 0: none (checkpoints before it existed).
    residual_deadzone: float = 0.0

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, not {self.algorithm!r}")
        if self.hint is not None and self.hint not in HINTS:
            raise ValueError(f"hint must be one of {HINTS} or None, not {self.hint!r}")
        if self.residual and self.hint is None:
            raise ValueError("a residual agent corrects a hint: give hint too")
        if self.residual and self.algorithm not in ("eat", "eat-a", "lad-ts"):
            # A Gaussian actor imitates through the teacher's task choice, which a residual target
            # (zero: "keep the hint") does not carry.
            raise ValueError("residual agents need a diffusion actor (eat, eat-a, lad-ts)")
        if not 0.0 <= self.residual_deadzone < 1.0 or (self.residual_deadzone and not self.residual):
            raise ValueError("residual_deadzone must lie in [0, 1) and needs a residual agent")
        if not 0.0 <= self.prior_decay < 1.0:
            raise ValueError(f"prior_decay must lie in [0, 1), got {self.prior_decay}")
        # JSON gives lists back; tuples keep the config hashable and equal to a fresh one.
        object.__setattr__(self, "prior_idle_edges", tuple(self.prior_idle_edges))
        object.__setattr__(self, "prior_queue_edges", tuple(self.prior_queue_edges))
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.tau <= 1.0:
            raise ValueError("gamma and tau must lie in [0, 1]")
        if self.bc_weight < 0 or self.bc_score_temperature <= 0:
            raise ValueError("need bc_weight >= 0 and bc_score_temperature > 0")
        if self.n_step < 1 or self.reward_scale <= 0 or self.alpha_lr <= 0:
            raise ValueError("need n_step >= 1, reward_scale > 0 and alpha_lr > 0")
        if self.learn_alpha and self.alpha <= 0:
            raise ValueError("a learned alpha needs a positive starting alpha")
        if self.alpha < 0 or self.batch_size < 1 or self.buffer_capacity < 1 or self.updates_per_step < 0:
            raise ValueError("need alpha >= 0, batch_size >= 1, buffer_capacity >= 1, updates_per_step >= 0")

    @property
    def uses_attention(self) -> bool:
        """eat, eat-d and lad-ts read per-server/per-task tokens; the -a variants read a flat vector."""
        return self.algorithm in ("eat", "eat-d", "lad-ts")

    @property
    def uses_diffusion(self) -> bool:
        return self.algorithm in ("eat", "eat-a", "lad-ts")

    @property
    def uses_prior(self) -> bool:
        """lad-ts starts the reverse chain from an `ActionPrior` and stores priors with transitions."""
        return self.algorithm == "lad-ts"

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if not self.uses_prior:
            for name in PRIOR_FIELDS:
                del values[name]
        defaults = AgentConfig()
        for name in EXTENSION_FIELDS:
            if values[name] == getattr(defaults, name):
                del values[name]
        return values

    @classmethod
    def paper(cls, algorithm: Algorithm = "eat") -> AgentConfig:
        """The paper's settings (Tables VII-VIII, D2SAC): the defaults."""
        return cls(algorithm=algorithm)

    @classmethod
    def cpu_fast(cls, algorithm: Algorithm = "eat") -> AgentConfig:
        """A profile for training on a few CPU cores in about 30 minutes.

        Changed from the paper: batch 128 (512 costs ~400 ms an update on one core), 128-unit layers
        and a 32-wide attention encoder, 5 denoising steps (training and evaluation alike), a learned
        alpha with a target entropy, 3-step returns and more updates per environment step."""
        return cls(
            algorithm=algorithm,
            hidden=128,
            d_model=32,
            attention_ff=64,
            diffusion_steps=5,
            batch_size=128,
            updates_per_step=0.25,
            n_step=3,
            learn_alpha=True,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentConfig:
        return cls(**data)


class Temperature(nn.Module):
    """SAC's learned entropy temperature: alpha = exp(log_alpha), one parameter."""

    def __init__(self, initial_alpha: float = 0.05) -> None:
        super().__init__()
        self.initial_alpha = initial_alpha
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial_alpha)))

    def config(self) -> dict[str, Any]:
        return dict(initial_alpha=self.initial_alpha)

    def forward(self) -> torch.Tensor:
        return self.log_alpha.exp()


@dataclass
class Agent:
    """The modules of one learned scheduler. `encoder` + `actor` are the policy; the rest learn it."""

    config: AgentConfig
    encoder: Encoder
    actor: Actor
    critic: TwinCritic
    target_critic: TwinCritic
    prior: ActionPrior | None = None  # lad-ts only
    temperature: Temperature | None = None  # learn_alpha only

    @property
    def alpha(self) -> float:
        """The entropy temperature now: learned, or the config's fixed value."""
        return self.config.alpha if self.temperature is None else float(self.temperature().detach())

    def modules(self) -> dict[str, nn.Module]:
        """Every module by its checkpoint name (the prior's buffers too, so checkpoints keep it)."""
        modules: dict[str, nn.Module] = {
            "encoder": self.encoder,
            "actor": self.actor,
            "critic": self.critic,
            "target_critic": self.target_critic,
        }
        if self.prior is not None:
            modules["prior"] = self.prior
        if self.temperature is not None:
            modules["temperature"] = self.temperature
        return modules

    def train(self, mode: bool = True) -> None:
        for module in self.modules().values():
            module.train(mode)


def build_agent(config: AgentConfig, obs_spec: ObservationSpec, seed: int = 0) -> Agent:
    """Fresh modules for `config`; weights initialised from `seed` without touching torch's global RNG.

    `obs_spec` sizes the flat encoder and the flat action; per-task agents fit any N and Q."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = _build_encoder(config, obs_spec)
        layout = _layout(config, obs_spec, encoder.out_dim)
        actor = _build_actor(config, encoder.out_dim, layout)
        if config.residual:
            start_as_the_hint(actor)
        critic = TwinCritic(
            encoder.out_dim,
            hidden=config.hidden,
            score_temperature=config.critic_score_temperature,
            residual=config.residual,
            residual_deadzone=config.residual_deadzone,
            **layout,
        )
    prior = build_prior(config) if config.uses_prior else None
    temperature = Temperature(config.alpha) if config.learn_alpha else None
    return Agent(config, encoder, actor, critic, _frozen_copy(critic), prior, temperature)


def build_prior(config: AgentConfig) -> ActionPrior:
    """lad-ts's prior: every table starts at 0, the deterministic chain start of EAT."""
    return ActionPrior(
        decay=config.prior_decay, idle_edges=config.prior_idle_edges, queue_edges=config.prior_queue_edges
    )


def _build_encoder(config: AgentConfig, obs_spec: ObservationSpec) -> Encoder:
    if config.uses_attention:
        return AttentionEncoder(
            len(SERVER_FEATURES),
            obs_spec.task_width,
            len(GLOBAL_FEATURES),
            d_model=config.d_model,
            heads=config.attention_heads,
            layers=config.attention_layers,
            ff_dim=config.attention_ff,
            hint=config.hint is not None,
        )
    return FlatEncoder(observation_shapes(obs_spec, hinted=config.hint is not None), hidden=config.hidden)


def _layout(config: AgentConfig, obs_spec: ObservationSpec, feature_dim: int) -> dict[str, int]:
    """Per-task layout (token_dim) with attention; flat layout (action_dim = 2 + Q) without."""
    if config.uses_attention:
        return {"token_dim": feature_dim}
    return {"action_dim": 2 + obs_spec.visible_queue}


def _build_actor(config: AgentConfig, state_dim: int, layout: dict[str, int]) -> Actor:
    common = dict(
        hidden=config.hidden,
        score_hidden=config.score_hidden,
        log_std_min=config.log_std_min,
        log_std_max=config.log_std_max,
    )
    if config.uses_diffusion:
        return DiffusionActor(
            state_dim,
            time_dim=config.time_dim,
            steps=config.diffusion_steps,
            beta_min=config.beta_min,
            beta_max=config.beta_max,
            **layout,
            **common,
        )
    return GaussianActor(state_dim, **layout, **common)


RESIDUAL_INITIAL_STD = 0.1  # exploration std of a fresh residual agent, in output units (x2 in actions)


def start_as_the_hint(actor: Actor) -> None:
    """A residual agent starts as its hint (residual policy learning's zero-initialised correction).

    With the noise networks' output layers at zero, the deterministic chain from 0 stays at 0: "keep
    the hint" everywhere, so imitation starts where it should end. The Gaussian head starts at a small
    constant std: imitation does not train it, and at the usual initialisation (std about 1, i.e. 2 in
    action units) SAC's first rollouts would be nearly random decisions."""
    if not isinstance(actor, DiffusionActor):
        raise TypeError("residual agents have a diffusion actor")
    for denoiser in (actor.denoiser, actor.score_denoiser):
        if denoiser is not None:
            nn.init.zeros_(denoiser.output.weight)
            nn.init.zeros_(denoiser.output.bias)
    head = actor.log_std_head
    for layer in (head.decision, head.score):
        if layer is not None:
            nn.init.zeros_(layer.weight)
            nn.init.constant_(layer.bias, math.log(RESIDUAL_INITIAL_STD))


def _frozen_copy(critic: TwinCritic) -> TwinCritic:
    """A target network: same weights, no gradients (it only moves by soft updates)."""
    target = copy.deepcopy(critic)
    target.requires_grad_(False)
    return target


# ----- rebuilding modules from a checkpoint's JSON --------------------------------------------------
MODULE_CLASSES: dict[str, type[nn.Module]] = {
    cls.__qualname__: cls
    for cls in (
        AttentionEncoder,
        FlatEncoder,
        DiffusionActor,
        GaussianActor,
        TwinCritic,
        ActionPrior,
        Temperature,
    )
}


def module_from_description(description: dict[str, Any]) -> nn.Module:
    """A fresh module from `checkpoints.describe_module` output: {"class": name, "config": kwargs}."""
    name = description.get("class")
    if name not in MODULE_CLASSES:
        raise ValueError(
            f"checkpoint names an unknown module class {name!r}; known: {sorted(MODULE_CLASSES)}"
        )
    return MODULE_CLASSES[name](**description.get("config", {}))


# ----- where a training run keeps its checkpoints ---------------------------------------------------
CHECKPOINTS_DIR = "checkpoints"  # checkpoints/step_000012345/: full, resumable
BEST_DIR = "best"  # best/: the policy with the best evaluation utility so far
STEP_PREFIX = "step_"
CONFIG_FILE = "config.json"


def step_checkpoints(run_dir: Path) -> list[Path]:
    """Complete periodic checkpoints of a run, oldest first (a complete one has its config.json)."""
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(STEP_PREFIX) and (p / CONFIG_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def resolve_checkpoint(path: str | os.PathLike[str], prefer_best: bool) -> Path:
    """A checkpoint directory from a checkpoint directory or a run directory.

    In a run directory: its best/ when `prefer_best` (serving a policy), else its latest step
    checkpoint (resuming), falling back to the other."""
    directory = Path(path)
    if (directory / CONFIG_FILE).is_file():
        return directory
    steps = step_checkpoints(directory)
    best = directory / BEST_DIR
    candidates = [best] if (best / CONFIG_FILE).is_file() else []
    candidates = candidates + steps[-1:] if prefer_best else steps[-1:] + candidates
    if not candidates:
        raise FileNotFoundError(f"{directory}: neither a checkpoint nor a training run with checkpoints")
    return candidates[0]


def checkpoint_algorithm(path: str | os.PathLike[str]) -> str:
    """The algorithm a checkpoint (or run directory) was trained with: "ppo" or a SAC-family name."""
    saved = json.loads((resolve_checkpoint(path, prefer_best=False) / CONFIG_FILE).read_text())
    return saved.get("algorithm") or saved["agent"]["algorithm"]
