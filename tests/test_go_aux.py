"""KataGo's auxiliary targets (recipe knobs `net.aux_heads`, `train.ownership_weight`, `train.score_target_weight`):
the final ownership and margin stored with every game, read back from the mover's view, moved by the same board
symmetry as the planes, and trained in the loop; the search never sees the extra heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from go_baseline.board import BLACK, WHITE, from_ascii
from go_baseline.config import GoConfig
from go_baseline.deadstones import area_ownership
from go_baseline.features import encode
from go_baseline.loop import run
from go_baseline.network import NetConfig, PolicyValueNet
from go_baseline.replay import Batch, ReplayBuffer
from go_baseline.selfplay import GameRecord
from go_baseline.train import augment_batch, az_parts
from relabel_rl.config import load_config
from relabel_rl.rundir import read_metrics

FINAL = """
.X.O.
XXOO.
.XO..
XXO..
.XO..
"""


def _record(to_play: int) -> GameRecord:
    pos = from_ascii(FINAL, to_play=to_play, komi=0.5, history=2)
    rec = GameRecord(5, 0.5)
    rec.add(pos, 2, np.full(26, 1 / 26), 0)
    rec.moves, rec.result, rec.score = [0], -1, pos.score()
    rec.ownership = area_ownership(pos.board)
    return rec


def test_targets_are_from_the_movers_view(tmp_path):
    replay = ReplayBuffer(tmp_path, 10)
    replay.add(_record(BLACK), 0)
    replay.add(_record(WHITE), 1)
    replay.add(GameRecord(5, 0.5, moves=[0], planes=[np.zeros((6, 5, 5), np.uint8)], to_play=[1],
                          played=[0], policy_targets=[np.full(26, 1 / 26)], resigned=1))  # fmt: skip
    seen = {}
    for _ in range(20):
        b = replay.sample(8, np.random.default_rng(_), aux=True)
        for g, own, score, m in zip(b.game, b.ownership, b.score, b.aux_mask):
            seen[int(g)] = (own, float(score), float(m))
    own_b, score_b, mask_b = seen[0]
    own_w, score_w, _ = seen[1]
    board = from_ascii(FINAL).board
    assert mask_b == 1.0 and np.array_equal(own_b, area_ownership(board)) and np.array_equal(own_w, -own_b)
    assert score_b == pytest.approx((10 - 14 - 0.5) / 25) and score_w == -score_b  # black 10, white 14
    assert seen[2][2] == 0.0 and not seen[2][0].any()  # a resigned game has no count: masked out
    assert replay.sample(4, np.random.default_rng(0)).ownership is None  # only when asked


def test_augmentation_moves_ownership_with_the_board():
    pos = from_ascii(FINAL, history=1)
    planes = encode(pos, 1)[None]
    own = area_ownership(pos.board).astype(np.float32)[None]
    batch = Batch(planes, np.full((1, 26), 1 / 26, np.float32), np.zeros(1, np.int64), np.zeros(1, np.float32),
                  np.zeros(1, np.int64), own, np.zeros(1, np.float32), np.ones(1, np.float32))  # fmt: skip
    for seed in range(8):
        out = augment_batch(batch, 5, np.random.default_rng(seed))
        stones = out.planes[0, 0] - out.planes[0, 1]  # black to move: own stones minus the opponent's
        assert np.array_equal(area_ownership(stones.astype(np.int8)), out.ownership[0])


def test_aux_loss_parts_and_a_net_without_heads():
    torch.manual_seed(0)
    net = PolicyValueNet(NetConfig(board_size=5, history=1, blocks=1, filters=8, aux_heads=True))
    pos = from_ascii(FINAL, history=1)
    batch = Batch(encode(pos, 1)[None], np.full((1, 26), 1 / 26, np.float32), np.zeros(1, np.int64),
                  np.ones(1, np.float32), np.zeros(1, np.int64), area_ownership(pos.board)[None].astype(np.float32),
                  np.array([0.2], np.float32), np.ones(1, np.float32))  # fmt: skip
    parts = az_parts(
        net, batch, torch.device("cpu"), value_weight=1.0, ownership_weight=1.5, score_target_weight=0.5
    )
    total = parts["policy_ce"] + parts["value_mse"] + 1.5 * parts["ownership_bce"] + 0.5 * parts["score_mse"]
    assert torch.allclose(parts["loss"], total) and parts["ownership_bce"].item() > 0
    masked = Batch(**{**batch.__dict__, "aux_mask": np.zeros(1, np.float32)})
    assert (
        az_parts(net, masked, torch.device("cpu"), value_weight=1.0, ownership_weight=1.5)["ownership_bce"]
        == 0
    )
    plain = PolicyValueNet(NetConfig(board_size=5, history=1, blocks=1, filters=8))
    assert len(plain(torch.zeros(1, 4, 5, 5))) == 2
    with pytest.raises(ValueError, match="aux_heads"):
        plain(torch.zeros(1, 4, 5, 5), aux=True)


def test_loop_trains_the_aux_heads(tmp_path):
    from test_go_loop import TINY

    data = {
        **TINY,
        "run_dir": str(tmp_path / "run"),
        "net": {**TINY["net"], "aux_heads": True},
        "eval": {**TINY["eval"], "opponents": ["random"], "every_iterations": 9},
    }
    last = run(load_config(GoConfig, data=data), progress=False)
    assert last["ownership_bce"] > 0 and last["score_mse"] >= 0 and last["step"] == 6
    game = ReplayBuffer(tmp_path / "run" / "games", 10).load(0)
    assert game["ownership"].shape in ((5, 5), (0,))  # (0,): a resigned game
    assert any(r.get("kind") == "train" for r in read_metrics(tmp_path / "run" / "metrics.jsonl"))


@pytest.mark.parametrize("name", ["5x5.yaml", "7x7.yaml", "7x7_gnugo.yaml", "9x9.yaml"])
def test_shipped_go_recipes_load(name):
    from pathlib import Path

    cfg = load_config(GoConfig, Path(__file__).resolve().parents[1] / "recipes" / "go" / name)
    assert cfg.selfplay.cleanup and cfg.eval.rules == "chinese"
    if name == "7x7_gnugo.yaml":
        assert cfg.net.aux_heads and cfg.board.komi == 9.0 and cfg.max_minutes == 90
        assert cfg.train.micro_batches == 2 and cfg.selfplay.playout_cap_fraction < 1.0
