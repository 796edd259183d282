"""Training the policy/value net with `accelerate`, plus checkpoints a killed run resumes from.

The AlphaZero loss per position is ``CE(visit distribution, policy) + value_weight * (z − v)²`` (L2 through the
optimiser's weight decay), on samples drawn from the replay window, each under a random board symmetry. A net
with ``aux_heads`` also learns KataGo's auxiliary targets: ``ownership_weight`` × the mean over points of the
binary cross-entropy of the final owner (from the mover's view), and ``score_target_weight`` × the squared error
of the final margin / N² (KataGo predicts a score distribution; one number is enough for our score utility). The
optimiser is SGD with momentum, as in AlphaZero. ``accelerate`` places the model and optimiser (CPU, one GPU,
or several processes with ``accelerate launch``); on CPU it is a thin wrapper.

Under ``accelerate launch`` (DDP) one optimiser step's batch is cut into ``train.micro_batches`` micro-batches,
spread over the processes (:meth:`Trainer.train_step`). Where this departs from plain DDP: BatchNorm.
AlphaZero's net normalises over each device's batch (no SyncBatchNorm: it needs a GPU and costs a collective per
layer), so the forward pass depends on how the batch is cut; we make that cut a recipe knob rather than a side
effect of the process count. Every micro-batch starts from the same running statistics, which then move by the
mean of the micro-batches' updates (all-reduced, so every process holds the same statistics and DDP's broadcast
of rank 0's buffers before each forward pass changes nothing). So 1 process with ``micro_batches: 2`` and 2
processes compute the same step (to float summation order).

Checkpoints (``checkpoints/ckpt_XXXXX.pt``) hold the model, optimiser, step counter, games trained on and the
RNG state; they are written to a temp file and renamed, so a ``kill -9`` never leaves a torn checkpoint. A file
can still be damaged afterwards (a full disk, a copy cut short, tampering), so resuming verifies it
(:func:`read_checkpoint`: ``torch.load(weights_only=True)``, which refuses a pickle that would import or call
anything, and every key resuming needs) and :func:`newest_good_checkpoint` falls back past each bad one, renaming
it ``ckpt_XXXXX.pt.corrupt`` with a one-line warning naming it, as the LLM side does
(``llm_rl.harness.checkpoints``).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.nn import functional as F

from go_baseline.config import GoConfig
from go_baseline.network import NetConfig, PolicyValueNet
from go_baseline.replay import Batch
from go_baseline.symmetry import NUM_SYMMETRIES, action_permutation, transform_planes, transform_policy
from relabel_rl.environment import destroy_process_group_at_exit
from relabel_rl.rundir import newest_readable

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Trainer",
    "augment_batch",
    "az_parts",
    "latest_checkpoint",
    "list_checkpoints",
    "load_net",
    "newest_good_checkpoint",
    "per_sample_az_loss",
    "read_checkpoint",
    "split_batch",
]

PerSampleLoss = Callable[[nn.Module, Batch, torch.device], dict[str, torch.Tensor]]

_CKPT = re.compile(r"^ckpt_(\d{5})\.pt$")


def augment_batch(batch: Batch, board_size: int, rng: np.random.Generator) -> Batch:
    """A random one of the 8 symmetries per sample, applied to planes, move vectors and played moves alike."""
    ks = rng.integers(0, NUM_SYMMETRIES, size=len(batch.played))
    planes = np.stack([transform_planes(p, int(k)) for p, k in zip(batch.planes, ks)])
    policy = np.stack([transform_policy(p, board_size, int(k)) for p, k in zip(batch.policy, ks)])
    played = np.array([action_permutation(board_size, int(k))[a] for a, k in zip(batch.played, ks)])
    own = batch.ownership
    if own is not None:
        own = np.stack([transform_planes(o, int(k)) for o, k in zip(own, ks)])
    return Batch(planes, policy, played, batch.outcome, batch.game, own, batch.score, batch.aux_mask)


def per_sample_az_loss(
    net: PolicyValueNet,
    planes: torch.Tensor,
    policy: torch.Tensor,
    outcome: torch.Tensor,
    value_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, policy CE, value MSE)`` per sample, shape ``[B]`` each."""
    logits, value = net(planes)
    ce = -(policy * F.log_softmax(logits, dim=-1)).sum(-1)
    mse = (value - outcome) ** 2
    return ce + value_weight * mse, ce, mse


def az_parts(
    net: nn.Module,
    batch: Batch,
    device: torch.device,
    *,
    value_weight: float,
    ownership_weight: float = 0.0,
    score_target_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Per-sample AlphaZero loss (``loss``, optimised) and its parts (logged), for :meth:`Trainer.train_step`.

    With auxiliary targets in ``batch`` (``batch.ownership`` not None) the net's aux heads are trained too.
    """

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(device)

    if batch.ownership is None:
        total, ce, mse = per_sample_az_loss(
            net, t(batch.planes), t(batch.policy), t(batch.outcome), value_weight
        )
        return {"loss": total, "policy_ce": ce, "value_mse": mse}
    logits, value, own_logits, score = net(t(batch.planes), aux=True)
    ce = -(t(batch.policy) * F.log_softmax(logits, dim=-1)).sum(-1)
    mse = (value - t(batch.outcome)) ** 2
    mask = t(batch.aux_mask)
    own = F.binary_cross_entropy_with_logits(own_logits, (1 + t(batch.ownership)) / 2, reduction="none")
    own = own.flatten(1).mean(-1) * mask
    score_mse = (score - t(batch.score)) ** 2 * mask
    total = ce + value_weight * mse + ownership_weight * own + score_target_weight * score_mse
    return {"loss": total, "policy_ce": ce, "value_mse": mse, "ownership_bce": own, "score_mse": score_mse}


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """``batch`` cut into ``parts`` contiguous micro-batches of (nearly) equal size.

    Raises:
      ValueError: when the batch has fewer samples than ``parts`` (a micro-batch would be empty).
    """
    n = len(batch.played)
    if n < parts:
        raise ValueError(
            f"a batch of {n} positions cannot be cut into {parts} micro-batches (train.micro_batches)"
        )
    return [batch.take(i) for i in np.array_split(np.arange(n), parts)]


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds (see :meth:`Trainer.save`)."""

    path: Path
    iteration: int
    step: int
    games: int


def list_checkpoints(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _CKPT.match(p.name))


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and what is wrong with it."""


# what `Trainer.load` reads (`board`, `algo`, `search` are for `load_net`'s callers and may be absent)
_RESUME_KEYS = ("model", "optimizer", "net_config", "iteration", "step", "games", "rng", "torch_rng")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint read without unpickling code (``weights_only=True``), checked to hold every key
    resuming needs.

    Raises:
      CheckpointError: naming the file: unreadable, truncated, unsafe to unpickle, or missing keys.
    """
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for unsafe content; OSError/RuntimeError/EOFError for damage
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{path} does not load safely ({type(e).__name__}: {first})") from None
    missing = [k for k in _RESUME_KEYS if k not in blob] if isinstance(blob, dict) else list(_RESUME_KEYS)
    if missing:
        raise CheckpointError(f"{path} is not a go-baseline training checkpoint (lacks {', '.join(missing)})")
    return blob


def newest_good_checkpoint(
    directory: str | Path, *, warn: Callable[[str], None] = print
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint under ``directory`` that :func:`read_checkpoint` accepts, with its contents; None
    when none does. Each rejected one is renamed ``<name>.corrupt`` (kept for inspection, never picked again)
    and reported by ``warn`` in one line naming the file and what the run falls back to."""
    return newest_readable(
        list_checkpoints(directory)[::-1], read_checkpoint, errors=CheckpointError, warn=warn
    )


def load_net(path: str | Path, device: str = "cpu") -> tuple[PolicyValueNet, dict]:
    """A network from a checkpoint file (in eval mode), and the checkpoint's metadata.

    Loaded with ``weights_only=True``: a checkpoint is tensors and plain data, never code to unpickle.

    Raises:
      FileNotFoundError: no such file. ValueError: the file is not a readable go-baseline checkpoint.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(Path(path), map_location=device, weights_only=True)
        cfg = NetConfig(**blob["net_config"])
    except Exception as e:  # a torn, foreign or tampered file: say which, in one line
        raise ValueError(
            f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from e
    net = PolicyValueNet(cfg).to(device)
    net.load_state_dict(blob["model"])
    net.eval()
    return net, {k: blob[k] for k in ("iteration", "step", "games", "board", "algo", "search") if k in blob}


class Trainer:
    """The network, its optimiser and step counter, placed by ``accelerate``."""

    def __init__(self, cfg: GoConfig) -> None:
        self.cfg = cfg
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        destroy_process_group_at_exit()  # under `accelerate launch`: see relabel_rl.environment
        self.net_config = cfg.net.net_config(cfg.board.size)
        net = PolicyValueNet(self.net_config)
        opt = torch.optim.SGD(
            net.parameters(),
            lr=cfg.train.lr,
            momentum=cfg.train.momentum,
            weight_decay=cfg.train.weight_decay,
        )
        self.net, self.optimizer = self.accelerator.prepare(net, opt)
        self.step = 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def micro_batches(self) -> int:
        """``train.micro_batches``, or one per process.

        Raises:
          ValueError: when it is not a multiple of the number of processes.
        """
        m = self.cfg.train.micro_batches or self.num_processes
        if m % self.num_processes:
            raise ValueError(
                f"'train.micro_batches' ({m}) must be a multiple of the number of processes ({self.num_processes})"
            )
        return m

    @property
    def model(self) -> PolicyValueNet:
        """The bare network (for self-play and evaluation)."""
        return self.accelerator.unwrap_model(self.net)

    def _batchnorm_buffers(self) -> list[torch.Tensor]:
        return [
            b
            for m in self.model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var, m.num_batches_tracked)
            if b is not None
        ]

    def train_step(self, micro_batches: Sequence[Batch], loss_fn: PerSampleLoss) -> dict[str, float]:
        """One optimiser step on a global batch given as its micro-batches (every process passes the same list).

        Process ``r`` of ``W`` takes micro-batches ``r, r + W, …``. ``loss_fn(net, micro_batch, device)`` returns
        per-sample tensors: ``loss`` is optimised, every entry is logged. The step minimises the mean of ``loss``
        over all samples of all micro-batches (DDP averages gradients over processes, hence the ``W / total``
        scale). Returns those means, global over processes, and the gradient norm.
        """
        world, rank = self.num_processes, self.accelerator.process_index
        if len(micro_batches) % world:
            raise ValueError(f"{len(micro_batches)} micro-batches cannot be shared by {world} processes")
        total = sum(len(b.played) for b in micro_batches)
        mine = micro_batches[rank::world]
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        buffers = self._batchnorm_buffers()
        start = [b.clone() for b in buffers]
        moved = [torch.zeros_like(b, dtype=torch.float64) for b in buffers]
        sums: dict[str, torch.Tensor] = {}
        for i, mb in enumerate(mine):
            # gradient accumulation: DDP all-reduces once, on the last micro-batch's backward
            sync = contextlib.nullcontext() if i == len(mine) - 1 else self.accelerator.no_sync(self.net)
            with sync:
                parts = loss_fn(self.net, mb, self.device)
                self.accelerator.backward(parts["loss"].sum() * (world / total))
            with torch.no_grad():  # this micro-batch's BatchNorm update, then back to the step's start
                for acc, b, s in zip(moved, buffers, start):
                    acc += b
                    b.copy_(s)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.detach().double().sum()
        with (
            torch.no_grad()
        ):  # running statistics: the mean of the micro-batches' updates, over all processes
            for b, acc in zip(
                buffers, moved
            ):  # (num_batches_tracked: every term is start + 1; the mean is exact)
                b.copy_(self.accelerator.reduce(acc, reduction="sum") / len(micro_batches))
        grad_norm = self.accelerator.clip_grad_norm_(self.net.parameters(), self.cfg.train.max_grad_norm)
        self.optimizer.step()
        self.step += 1
        keys = sorted(sums)
        means = self.accelerator.reduce(torch.stack([sums[k] for k in keys]), reduction="sum") / total
        return {**{k: float(v) for k, v in zip(keys, means)}, "grad_norm": float(grad_norm)}

    def train_az(self, sample: Any, steps: int, rng: np.random.Generator) -> dict:
        """``steps`` AlphaZero steps on batches from ``sample(batch_size, rng)``; returns mean losses.

        Every process draws the same global batch (the same ``rng`` state) and trains on its micro-batches.
        """
        logs: list[dict] = []
        parts = self.micro_batches()
        tc = self.cfg.train
        aux = self.net_config.aux_heads
        loss = functools.partial(
            az_parts,
            value_weight=tc.value_weight,
            ownership_weight=tc.ownership_weight,
            score_target_weight=tc.score_target_weight,
        )
        for _ in range(steps):
            batch = sample(tc.batch_size, rng, aux=True) if aux else sample(tc.batch_size, rng)
            if tc.augment:
                batch = augment_batch(batch, self.cfg.board.size, rng)
            logs.append(self.train_step(split_batch(batch, parts), loss))
        return {k: float(np.mean([d[k] for d in logs])) for k in logs[0]} if logs else {}

    def save(self, directory: str | Path, *, iteration: int, games: int, rng: np.random.Generator) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        target = d / f"ckpt_{iteration:05d}.pt"
        tmp = d / f".ckpt_{iteration:05d}.pt.tmp"
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "net_config": self.net_config.__dict__,
                "iteration": iteration,
                "step": self.step,
                "games": games,
                "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "board": {"size": self.cfg.board.size, "komi": self.cfg.board.komi},
                "algo": self.cfg.train.algo,
                "search": {
                    "search": self.cfg.selfplay.search,
                    "max_considered": self.cfg.selfplay.max_considered,
                    "score_weight": self.cfg.selfplay.score_weight,
                },
            },
            tmp,
        )
        tmp.replace(target)
        return target

    def load(
        self, path: str | Path, rng: np.random.Generator, blob: dict[str, Any] | None = None
    ) -> Checkpoint:
        """Resume from ``path`` (``blob``: its contents, when :func:`read_checkpoint` has read them already).

        Raises:
          CheckpointError: the file is unreadable or unsafe (:func:`read_checkpoint`).
        """
        if blob is None:
            blob = read_checkpoint(path)  # on the CPU; load_state_dict places it
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.step = int(blob["step"])
        rng.bit_generator.state = blob["rng"]
        torch.set_rng_state(blob["torch_rng"])
        return Checkpoint(Path(path), int(blob["iteration"]), self.step, int(blob["games"]))
