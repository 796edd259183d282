"""The harness's entry point: one run of one arm, whichever kind of arm it is.

`train_arm` builds the run's `Session` (task data, budget, metered verifier, records), loads the policy from the
warm start, and hands both to the hand-written loop (`llm_rl.harness.loop`, for an `Arm`) or to the TRL bridge
(`llm_rl.harness.trl_bridge`, for a `TrlArm`). Everything an arm does not define — budget, evaluation,
checkpoints, resume, logging, progress, processes — is the same for every arm because it happens here.
"""

from __future__ import annotations

import math
from typing import Any

from llm_rl.arms import Arm, TrlArm, arm_class
from llm_rl.harness.data import TaskData
from llm_rl.harness.distributed import process_state
from llm_rl.harness.loop import train_loop
from llm_rl.harness.session import Session
from llm_rl.harness.trl_bridge import train_with_trl
from llm_rl.model import load_policy
from relabel_rl.rundir import RunDir, seed_everything

__all__ = ["STEPS_BOUND", "train_arm"]

STEPS_BOUND = 10_000_000  # a TRL trainer's max_steps when the budget is not counted in optimizer steps


def train_arm(
    cfg: Any,
    run: RunDir,
    *,
    init_model: str,
    arm: Arm | TrlArm | None = None,
    task: TaskData | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg.arm`` (or the given ``arm`` instance) from ``init_model`` until the budget is spent, resuming
    from ``run``'s newest good checkpoint; writes ``run``'s records and ``final/``.

    Returns:
      The final evaluation record (``pass@1``, ``pass@k``, ``k``, ``mean_score``, ``step`` and the budget counters).
    """
    arm = arm if arm is not None else arm_class(cfg.arm)(cfg)
    args = None
    if isinstance(
        arm, TrlArm
    ):  # validated before anything heavy; the step bound is the budget's when it counts steps
        budget = cfg.budget
        max_steps = max(1, math.ceil(budget.limit)) if budget.axis == "optimizer_steps" else STEPS_BOUND
        args = arm.trainer_args(str(run.checkpoint_dir), max_steps=max_steps)
    process_state()  # joins the launch's process group (TRL's arguments may have already) and ends it at exit
    session = Session(cfg, run, task=task, progress=progress)
    seed_everything(cfg.seed)  # a fresh value head (a base model without one) is initialised from the seed
    lora = cfg.model.lora if cfg.model.lora.enabled else None
    policy = load_policy(
        init_model, lora=lora, dtype=cfg.model.dtype, value_head_hidden=cfg.model.value_head_hidden
    )
    if isinstance(arm, TrlArm):
        return train_with_trl(arm, session, policy, args)
    return train_loop(arm, session, policy)
