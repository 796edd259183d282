"""The policy/value ResNet (AlphaGo Zero's architecture, scaled down; blocks and filters configurable).

Stem conv → ``blocks`` residual blocks (two 3x3 convs with batch norm) → a policy head (1x1 conv, linear to the
``N * N + 1`` moves) and a value head (1x1 conv, linear, ReLU, linear, tanh). The value is from the view of the
player to move, in [−1, 1]. Illegal moves are masked in :func:`masked_policy`, not in the net, so the net sees
the same targets whatever the legality.

``aux_heads`` adds KataGo's auxiliary heads (Wu 2019, §3.2–3.3), trained only, never used by the search: an
**ownership** head (1x1 conv: a logit per point for "the player to move owns it at the end") and a **score**
head (from the value head's features: the final margin / N² from the mover's view, tanh). They give every
position ~N² extra targets where the value head gets one, which is what KataGo credits for much of its
sample efficiency on small nets; ``forward(planes, aux=True)`` returns them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["NetConfig", "PolicyValueNet", "masked_policy"]


@dataclass(frozen=True)
class NetConfig:
    """Network shape.

    Attributes:
      board_size: N.
      history: boards of history in the input (input channels ``2 * history + 2``).
      blocks: residual blocks.
      filters: channels per conv.
      value_hidden: width of the value head's hidden layer.
      aux_heads: add the ownership and score heads (auxiliary training targets; see the module docstring).
    """

    board_size: int = 5
    history: int = 4
    blocks: int = 4
    filters: int = 32
    value_hidden: int = 64
    aux_heads: bool = False

    def __post_init__(self) -> None:
        if not 5 <= self.board_size <= 19:
            raise ValueError(f"board_size must be in [5, 19], got {self.board_size}")
        for name in ("history", "blocks", "filters", "value_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class PolicyValueNet(nn.Module):
    """``forward(planes [B, C, N, N]) -> (policy_logits [B, N*N+1], value [B])``.

    With ``aux=True`` (only for ``aux_heads``): ``(policy_logits, value, ownership_logits [B, N, N], score [B])``.
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n, c = cfg.board_size, cfg.filters
        self.stem = nn.Sequential(
            nn.Conv2d(2 * cfg.history + 2, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[_Block(c) for _ in range(cfg.blocks)])
        self.policy_conv = nn.Sequential(nn.Conv2d(c, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU())
        self.policy_fc = nn.Linear(2 * n * n, n * n + 1)
        self.value_conv = nn.Sequential(nn.Conv2d(c, 1, 1, bias=False), nn.BatchNorm2d(1), nn.ReLU())
        self.value_fc = nn.Sequential(
            nn.Linear(n * n, cfg.value_hidden), nn.ReLU(), nn.Linear(cfg.value_hidden, 1)
        )
        if cfg.aux_heads:
            self.ownership_conv = nn.Conv2d(c, 1, 1)
            self.score_fc = nn.Sequential(
                nn.Linear(n * n, cfg.value_hidden), nn.ReLU(), nn.Linear(cfg.value_hidden, 1)
            )

    def forward(self, planes: torch.Tensor, aux: bool = False) -> tuple[torch.Tensor, ...]:
        h = self.blocks(self.stem(planes))
        logits = self.policy_fc(self.policy_conv(h).flatten(1))
        features = self.value_conv(h).flatten(1)
        value = torch.tanh(self.value_fc(features)).squeeze(-1)
        if not aux:
            return logits, value
        if not self.cfg.aux_heads:
            raise ValueError("forward(aux=True) needs a net built with aux_heads=True")
        ownership = self.ownership_conv(h).squeeze(1)  # [B, N, N] logits
        score = torch.tanh(self.score_fc(features)).squeeze(-1)  # [B]
        return logits, value, ownership, score

    @torch.no_grad()
    def predict(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode forward on a numpy batch: ``(logits [B, A], value [B])`` as float64 numpy arrays."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        logits, value = self(torch.from_numpy(np.ascontiguousarray(planes)).to(device))
        if was_training:
            self.train()
        return logits.double().cpu().numpy(), value.double().cpu().numpy()


def masked_policy(logits: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """Softmax of ``logits`` over the ``legal`` action indices only; returns probabilities for ``legal``."""
    z = logits[legal]
    z = z - z.max()
    p = np.exp(z)
    return p / p.sum()
