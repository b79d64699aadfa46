"""The live snapshot's observation on a cluster with SLO classes: the same features the simulator shows."""

from __future__ import annotations

import dataclasses

import numpy as np

from policy_models.live import (
    ModelCatalog,
    ServerInfo,
    Snapshot,
    TaskInfo,
    cluster_view,
    live_config,
    observe,
)
from policy_models.obs import T_IDX, ObservationSpec, encode_one
from policy_models.slo import class_limits
from policy_models.suites import HARD_SLO


def test_priority_tasks_are_interactive_and_show_the_time_left_to_their_deadline() -> None:
    cfg = dataclasses.replace(live_config(4, ["a", "b"]), slo_classes=HARD_SLO)
    catalog = ModelCatalog(("a", "b"))
    snapshot = Snapshot(
        now_s=50.0,
        servers=tuple(ServerInfo(f"s{i}", idle=True, resident_models=("a",)) for i in range(4)),
        queue=(
            TaskInfo("urgent", waiting_s=2.0, patches=2, model="a", priority=1),
            TaskInfo("bulk", waiting_s=9.0, patches=4, model="b", priority=0),
        ),
        total_queued=2,
    )
    view = cluster_view(snapshot, cfg, catalog)
    assert view.task_class == [0, 1]
    tasks = observe(snapshot, cfg, catalog)["tasks"][0]
    limits = class_limits(cfg)
    assert tasks[0, T_IDX["interactive"]] == 1.0 and tasks[1, T_IDX["interactive"]] == 0.0
    assert tasks[0, T_IDX["slack"]] == np.float32((limits[0, 2] - 2.0) / 100.0)
    assert tasks[1, T_IDX["slack"]] == np.float32((limits[1, 4] - 9.0) / 100.0)
    assert (tasks[2:] == 0.0).all()
    np.testing.assert_array_equal(tasks, encode_one(view, ObservationSpec.from_config(cfg))["tasks"])
