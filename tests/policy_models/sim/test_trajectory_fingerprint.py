"""Trajectories for fixed seeds and actions stay exactly what they were before the speed work (issue 2).

Each case steps the single environment (seeds 0..3 one after the other) and the batched simulator (the
four seeds together) with the same seeded actions, and hashes every observation byte, every reward,
every end flag, the launch details and every episode's statistics (the columns that existed when the
reference was made, `FINGERPRINT_FIELDS`; later ones are held equal across the two simulators by
test_batched_equivalence). A change in any bit of a trajectory changes the digests.

The reference digests were produced by running this module as a script against the simulator as it
stood before the optimisation (commit 0625fa7): `git archive 0625fa7 policy_models | tar -x -C /tmp/ref`,
then, from outside the checkout, `PYTHONPATH=/tmp/ref:<checkout> python -m
tests.policy_models.sim.test_trajectory_fingerprint`, on a CPU where NumPy ran its AVX2 kernels (see
`kernels_above_avx2`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policy_models.config import SimConfig, paper_config, warm_config
from policy_models.sim.batched import BatchedClusterSim
from policy_models.sim.env import ClusterEnv
from policy_models.sim.stats import FINGERPRINT_FIELDS

SEEDS = (0, 1, 2, 3)
STEPS_PER_SEED = 600
ACTION_SEED = 11

CASES: dict[str, SimConfig] = {
    "paper-4": paper_config(4, 0.05),
    "paper-8": paper_config(8, 0.1),
    "warm-4": warm_config(4, 0.2),
    "warm-8": warm_config(8, 0.1),
    "paper-4-tick": paper_config(4, 0.05, tick_s=0.1, max_decisions=300),
    "paper-8-tick": paper_config(8, 0.1, tick_s=0.1, max_decisions=300),
    "warm-4-tick": warm_config(4, 0.3, tick_s=0.5, max_decisions=300),
    "warm-8-tick": warm_config(8, 0.1, tick_s=0.5, max_decisions=300),
    # Short time limits: episodes also end by truncation at the limit in event-driven mode.
    "paper-4-short": paper_config(4, 0.05, time_limit_s=150.0),
    "warm-8-short": warm_config(8, 0.1, time_limit_s=150.0),
    # Many short episodes: each environment draws several blocks of workloads.
    "paper-4-brief": paper_config(4, 0.05, max_decisions=5),
    # Clusters past the batched simulator's small-N paths (it sorts and scatters there).
    "paper-32": paper_config(32, 0.4),
    "warm-24": warm_config(24, 0.3),
    # No task waiting at t=0: every episode starts by moving to the first arrival.
    "paper-4-no-initial": paper_config(4, 0.05, initial_tasks=0),
    "warm-4-no-initial-tick": warm_config(4, 0.2, initial_tasks=0, tick_s=0.5, max_decisions=300),
}

# (single digest, batched digest) per case, from the pre-optimisation simulator (see the docstring).
REFERENCE: dict[str, tuple[str, str]] = {
    "paper-4": (
        "0fc6bd3d628786057ad44e26c32043c794d282a586e03fad75673dc241a2c349",
        "7acce7924885e032fe11f546de3a9dc5dd44a6c3596caaa0a78b01e256a99b6d",
    ),
    "paper-8": (
        "51988a357b95c6e31981466e77f323d0139f0c3e6c469c50b1919f5f39c1a71c",
        "2aae1df4df54811674b9091c048c9bcd0adf3b3a808e4beccea2913b93741715",
    ),
    "warm-4": (
        "d28009f42482bc16158aed3e7d35daf7342733bc7aef9f43b219d8f0bbf96aa6",
        "1c6d76e4706995e25149929a2347c82072b57c98f4589ca44e76c7e8280f165d",
    ),
    "warm-8": (
        "08366286d8f3c0bfc01246cfaf80fd1d727860f94c7e356ab26965f3548c089d",
        "bc1e6fde441c167f4294679d99accf6d26d6e83939c84b7d4ea0ed604dfed99f",
    ),
    "paper-4-tick": (
        "3948d92389f67f63dcc1c5676668f59a2b78e50b39ecbf1eece643bc1cb04c8c",
        "1eab802eb7dadf66d84bb5d321adc967dc0481d4bf0299970a7f9fe19652a213",
    ),
    "paper-8-tick": (
        "def047413ba747115b4b771a1f7820946bb490778836486ae44a7ebe93c43c74",
        "ac654674461ce03513d9554c03c9fe59437df0717182e1811ef39880a1d0550f",
    ),
    "warm-4-tick": (
        "b39dab9241e8218f5059f6ad802b4993705ffaa120c70823648a3a769daf33a5",
        "a8eaedf73fb06397589e84d6a4204bca1e928900925cf3f17fbf237d627d4d94",
    ),
    "warm-8-tick": (
        "ec7487316620f31d58a73d3abf9004f2306258159cdbdd4b9dcdb0d23270e981",
        "afe7c0969aa7d8b054f0a442fc2c679797555ef5418b7e4dfc7bcc99c4378ee5",
    ),
    "paper-4-short": (
        "8daf93067579b7da9811101b4fb839ef72914b27d4d2e68818f2ea3c5afbcf4a",
        "8ca79ccc6a9dd5e52f1d8b7580fa8e8883235238abd30d7f6a69fdbada047194",
    ),
    "warm-8-short": (
        "a3a8f5131f53fe84a2d938552a4e71d12abe4dace2a45a113235a735c7c5ef84",
        "93bdcc3f7100d05311e51fc88c9f93a16772b3fd232481214edca84805ca3dc0",
    ),
    "paper-4-brief": (
        "90e5bcf98eb2ac1c186974442d4358919c55f40e0ea1b07796c0640ee9f7dd71",
        "1465c73d5e9e80843da556985484dd6c4302b86ae4e9a99cb0d46eda2ec96cfe",
    ),
    "paper-32": (
        "7584cdeff1dde99e6f4d67a50e1f03719aa6464b0dab0f053cb3ef32bfa6d0f7",
        "22941c586ee875b3fc3fc9fd7f2a4e393f54385b9c7758ccbb1142ea24782bae",
    ),
    "warm-24": (
        "4f4c3fb06e44d4a53986c076ce271c6389d8c7bd8ccdf923e1457910be48ca9b",
        "90bfb15d28ff6abe433f7935a390aaa059c0d3fe37b2004036447c11df34a17f",
    ),
    "paper-4-no-initial": (
        "462278d2ab183a62b10e97e771a720d26fef1c2e71a392480566bd908e958b50",
        "0d18cee4b0192b30217e1fc2f1a17e47a6f33008e1915242873dcc0acba3aeac",
    ),
    "warm-4-no-initial-tick": (
        "ff30da1aae411ab2cb8f1dd6286eb36c8856f5f3e184ee6aabff49cb5ea6b17c",
        "5a82e22f1ba913f4a26e22cf7d29235a1ddcfeb6fbe15628716555405a972f13",
    ),
}


def actions_for(cfg: SimConfig, n_steps: int, n_envs: int) -> np.ndarray:
    """(steps, envs, action_dim) actions: uniform scores and steps, execute with probability 0.7."""
    rng = np.random.default_rng(ACTION_SEED)
    actions = rng.uniform(-1.0, 1.0, (n_steps, n_envs, cfg.action_dim))
    actions[..., 0] = np.where(rng.random((n_steps, n_envs)) < 0.7, 0.5, -0.5)
    return actions


def _add_obs(digest: hashlib._Hash, obs: dict[str, np.ndarray]) -> None:
    for key in ("servers", "tasks", "globals"):
        digest.update(np.ascontiguousarray(obs[key], dtype=np.float32).tobytes())


def _add_floats(digest: hashlib._Hash, *values: float) -> None:
    digest.update(struct.pack(f"<{len(values)}d", *values))


def single_digest(cfg: SimConfig) -> str:
    digest = hashlib.sha256()
    actions = actions_for(cfg, STEPS_PER_SEED, len(SEEDS))
    for j, seed in enumerate(SEEDS):
        env = ClusterEnv(cfg)
        obs, _ = env.reset(seed=seed)
        _add_obs(digest, obs)
        for action in actions[:, j]:
            obs, reward, terminated, truncated, info = env.step(action)
            _add_obs(digest, obs)
            _add_floats(digest, reward, terminated, truncated, env.now)
            if info["launched"]:
                _add_floats(digest, info["task"], info["steps"], info["reloaded"], *info["gang"])
            if terminated or truncated:
                stats = info["episode"].as_dict()
                _add_floats(digest, *(stats[name] for name in FINGERPRINT_FIELDS))
                obs, _ = env.reset()
                _add_obs(digest, obs)
    return digest.hexdigest()


def batched_digest(cfg: SimConfig) -> str:
    digest = hashlib.sha256()
    sim = BatchedClusterSim(cfg, list(SEEDS))
    _add_obs(digest, sim.reset())
    for action in actions_for(cfg, STEPS_PER_SEED, len(SEEDS)):
        result = sim.step(action)
        _add_obs(digest, result.obs)
        for array in (result.reward, result.terminated, result.truncated, result.launched, sim.now):
            _add_floats(digest, *np.asarray(array, dtype=np.float64).tolist())
        _add_floats(digest, *result.reloaded.astype(np.float64).tolist(), *result.steps.tolist())
        fingerprinted = result.finished_stats[:, : len(FINGERPRINT_FIELDS)]
        _add_floats(digest, *result.finished_envs.tolist(), *fingerprinted.ravel().tolist())
    return digest.hexdigest()


def kernels_above_avx2() -> list[str]:
    """NumPy's dispatch targets beyond AVX2 that this CPU has (e.g. X86_V4, AVX512_ICL).

    NumPy picks its exp/log/... kernels by CPU at run time, and the AVX-512 ones round some results
    differently in the last bit, which changes the trajectories' bytes (not their meaning). The reference
    digests were made where NumPy ran its AVX2 (X86_V3) kernels, so the digests are recomputed in a
    child interpreter told to leave the newer ones aside (NPY_DISABLE_CPU_FEATURES)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    ordered = list(__cpu_dispatch__)
    newer = ordered[ordered.index("X86_V3") + 1 :] if "X86_V3" in ordered else []
    return [name for name in newer if __cpu_features__.get(name)]


@pytest.fixture(scope="module")
def digests() -> dict[str, list[str]]:
    env = dict(os.environ)
    disabled = kernels_above_avx2()
    if disabled:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(disabled)
    done = subprocess.run(
        [sys.executable, "-m", "tests.policy_models.sim.test_trajectory_fingerprint", "--json"],
        cwd=Path(__file__).resolve().parents[3],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", list(CASES))
def test_trajectories_are_unchanged(name: str, digests: dict[str, list[str]]) -> None:
    assert tuple(digests[name]) == REFERENCE[name]


if __name__ == "__main__":  # prints the REFERENCE table (or, with --json, the digests) as it stands
    table = {case: (single_digest(config), batched_digest(config)) for case, config in CASES.items()}
    if "--json" in sys.argv:
        print(json.dumps(table))
    else:
        for case, (single, batched) in table.items():
            print(f'    "{case}": ("{single}", "{batched}"),')
