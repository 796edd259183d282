"""The arms: each file is one algorithm, on the contract of `base.py`; its recipe section is in `llm_rl.arm_configs`
(which the recipe module imports without importing any arm). ``ARMS`` maps a recipe's arm name to its class; a
recipe may also name any `Arm` subclass as ``module:ClassName`` (a plugin arm, e.g. one defined in your own package
or a test)."""

from __future__ import annotations

import importlib

from llm_rl.arms.base import Arm, ArmContext, Batch, TrlArm
from llm_rl.arms.grpo import GrpoArm
from llm_rl.arms.mc_value import McValueArm
from llm_rl.arms.relabel import RelabelArm
from llm_rl.arms.rft import RftArm
from llm_rl.arms.tree_grpo import TreeGrpoArm

__all__ = ["ARMS", "ARM_NAMES", "Arm", "ArmContext", "Batch", "TrlArm", "arm_class"]

ARMS: dict[str, type[Arm] | type[TrlArm]] = {
    arm.name: arm for arm in (GrpoArm, RelabelArm, McValueArm, TreeGrpoArm, RftArm)
}
ARM_NAMES: tuple[str, ...] = tuple(ARMS)


def arm_class(name: str) -> type[Arm] | type[TrlArm]:
    """The class of arm ``name``: a registered name, or ``module:ClassName`` of an `Arm`/`TrlArm` subclass.

    Raises:
      ValueError: an unknown name, a path that does not import, or a class that is not an arm.
    """
    if name in ARMS:
        return ARMS[name]
    if ":" not in name:
        raise ValueError(f"unknown arm {name!r}; choose from {', '.join(ARMS)} or give 'module:ClassName'")
    module, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"arm {name!r} cannot be loaded: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Arm | TrlArm)):
        raise ValueError(f"arm {name!r} is not a subclass of llm_rl.arms.Arm or TrlArm")
    return cls
