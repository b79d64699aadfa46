# ruff: noqa: E501 - rows transcribed as the paper prints them, one table row per line
"""The EAT paper's published Tables IX (quality), X (response time, s) and XI (reload rate).

Values per algorithm in the order of `config.PAPER_SETTINGS` (N=4: rates 0.01-0.09, N=8: 0.06-0.14,
N=12: 0.11-0.19). These are the paper's figures, shown beside ours in docs/results.md; a test reads them
back out of ../shared/papers/eat-paper.txt. N=4 came from the paper's real 4-GPU cluster, N=8 and 12
from its simulator.
"""

from __future__ import annotations

# Our policy name -> the paper's row name.
PAPER_NAMES = {
    "eat": "EAT",
    "eat-a": "EAT-A",
    "eat-d": "EAT-D",
    "eat-da": "EAT-DA",
    "ppo": "PPO",
    "genetic": "Genetic",
    "harmony": "Harmony",
    "random": "Random",
    "greedy": "Greedy",
}


def _row(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split())


# fmt: off
QUALITY: dict[str, tuple[float, ...]] = {
    "EAT": _row("0.256 0.264 0.262 0.262 0.262 0.260 0.261 0.261 0.261 0.262 0.264 0.262 0.260 0.260 0.262"),
    "EAT-A": _row("0.259 0.262 0.265 0.265 0.264 0.261 0.261 0.262 0.265 0.264 0.265 0.265 0.265 0.265 0.265"),
    "EAT-D": _row("0.255 0.255 0.249 0.243 0.245 0.255 0.254 0.253 0.251 0.250 0.261 0.265 0.264 0.262 0.262"),
    "EAT-DA": _row("0.260 0.261 0.263 0.264 0.263 0.270 0.269 0.270 0.269 0.270 0.269 0.269 0.270 0.269 0.270"),
    "PPO": _row("0.228 0.228 0.228 0.228 0.228 0.228 0.228 0.228 0.228 0.228 0.228 0.228 0.228 0.228 0.228"),
    "Genetic": _row("0.202 0.216 0.188 0.189 0.203 0.201 0.224 0.224 0.219 0.219 0.199 0.224 0.222 0.223 0.223"),
    "Harmony": _row("0.214 0.214 0.204 0.198 0.203 0.185 0.196 0.196 0.202 0.202 0.211 0.183 0.177 0.177 0.211"),
    "Random": _row("0.197 0.193 0.192 0.194 0.195 0.193 0.192 0.190 0.200 0.187 0.189 0.190 0.197 0.190 0.186"),
    "Greedy": _row("0.270 0.270 0.270 0.270 0.270 0.270 0.270 0.270 0.270 0.270 0.270 0.270 0.270 0.270 0.270"),
}

RESPONSE_S: dict[str, tuple[float, ...]] = {
    "EAT": _row("30.3 21.4 39.7 52.5 100.9 50.0 56.9 76.1 84.0 91.1 27.2 36.5 38.7 36.7 41.5"),
    "EAT-A": _row("32.8 21.0 55.7 79.8 101.1 49.6 73.3 89.9 100.0 102.9 36.0 41.0 41.0 55.4 43.0"),
    "EAT-D": _row("72.8 64.2 111.1 135.5 158.4 70.9 69.0 101.0 122.3 121.7 42.8 43.0 43.1 49.9 48.6"),
    "EAT-DA": _row("57.0 39.1 95.0 133.0 170.3 74.3 79.7 96.0 110.0 131.2 46.0 46.3 46.1 50.3 47.2"),
    "PPO": _row("65.0 71.7 127.3 147.1 155.9 80.0 84.2 105.0 96.8 96.8 45.4 44.3 42.7 49.4 49.4"),
    "Genetic": _row("36.5 36.4 43.4 46.5 70.5 35.5 37.0 37.0 40.5 40.5 25.6 24.7 24.6 26.6 25.9"),
    "Harmony": _row("41.3 39.4 51.6 58.4 78.7 41.1 33.7 33.7 39.2 39.2 29.9 24.8 23.2 26.1 29.3"),
    "Random": _row("47.9 48.7 56.1 57.9 62.4 49.0 51.5 52.5 53.4 59.3 30.2 35.1 34.7 33.6 37.9"),
    "Greedy": _row("64.1 86.6 154.2 176.1 182.8 91.7 105.6 117.2 128.6 131.1 51.4 53.5 53.9 59.9 56.3"),
}

RELOAD_RATE: dict[str, tuple[float, ...]] = {
    "EAT": _row("0.605 0.547 0.633 0.594 0.625 0.761 0.634 0.604 0.570 0.651 0.375 0.430 0.328 0.411 0.430"),
    "EAT-A": _row("0.629 0.573 0.667 0.636 0.605 0.719 0.653 0.695 0.617 0.581 0.473 0.430 0.386 0.419 0.460"),
    "EAT-D": _row("0.673 0.717 0.673 0.791 0.639 0.844 0.756 0.706 0.694 0.713 0.556 0.537 0.506 0.531 0.534"),
    "EAT-DA": _row("0.734 0.675 0.700 0.700 0.794 0.774 0.750 0.719 0.719 0.833 0.533 0.519 0.566 0.512 0.591"),
    "PPO": _row("0.723 0.675 0.655 0.736 0.697 0.812 0.750 0.688 0.734 0.713 0.625 0.531 0.487 0.531 0.562"),
    "Genetic": _row("0.761 0.813 0.850 0.654 0.767 0.769 0.846 0.846 0.897 0.917 0.635 0.521 0.521 0.593 0.614"),
    "Harmony": _row("0.739 0.819 0.726 0.717 0.873 0.917 0.846 0.806 0.844 0.814 0.700 0.557 0.545 0.614 0.700"),
    "Random": _row("0.775 0.868 0.802 0.786 0.905 0.887 0.909 0.870 0.843 0.854 0.648 0.626 0.586 0.564 0.602"),
    "Greedy": _row("0.551 0.542 0.586 0.504 0.516 0.594 0.578 0.578 0.527 0.550 0.468 0.411 0.398 0.403 0.448"),
}
# fmt: on

TABLES = {"quality": QUALITY, "response_s": RESPONSE_S, "reload_rate": RELOAD_RATE}


def paper_value(metric: str, policy: str, setting_index: int) -> float | None:
    """The paper's figure for our policy name at a setting (index in PAPER_SETTINGS order), if any."""
    name = PAPER_NAMES.get(policy)
    return TABLES[metric][name][setting_index] if name is not None else None
