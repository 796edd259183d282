"""Dead stones, the two counts, and the cleanup rule, on ASCII boards: Benson's pass-alive chains, the playout
judge (against GnuGo's where installed), Tromp–Taylor vs Chinese counting, and an engine that will not pass
while dead stones make the counts disagree against it — in the arena, in GTP and in self-play."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from go_baseline.arena import NetPlayer
from go_baseline.board import BLACK, WHITE, action_to_vertex, from_ascii, play_moves, vertex_to_action
from go_baseline.deadstones import GnuGoJudge, PlayoutJudge, area_ownership, pass_alive
from go_baseline.gnugo import find_gnugo
from go_baseline.gtp import GtpEngine
from go_baseline.network import NetConfig, PolicyValueNet
from go_baseline.rules import counted_score, pass_alternatives, replace_premature_pass
from go_baseline.selfplay import apply_cleanup

needs_gnugo = pytest.mark.skipif(find_gnugo() is None, reason="gnugo not installed (apt-get install gnugo)")

# White's C5 is dead in black's area. Tromp–Taylor: the top two rows touch both colours and count for nobody,
# C5 counts for white: black 5, white 11 -> W+6.5 at komi 0.5. With C5 removed: black 15, white 10 -> B+4.5.
DEAD_C5 = """
..O..
.....
XXXXX
OOOOO
.....
"""


def _vertices(mask_or_actions) -> set[str]:
    arr = np.asarray(mask_or_actions)
    actions = np.flatnonzero(arr.reshape(-1)) if arr.dtype == bool else arr
    return {action_to_vertex(int(a), 5) for a in actions}


def _white_to_move_after_black_passed():
    """DEAD_C5 with white to move, black having just passed (white's pass would end the game)."""
    pos = from_ascii(DEAD_C5.replace("..O..", "....."), to_play=WHITE, komi=0.5)
    pos = play_moves(pos, ["C5", "pass"])
    assert pos.to_play == WHITE and pos.state.history()[-1] == pos.pass_action
    return pos


def _pass_loving_net(board_size: int = 5) -> PolicyValueNet:
    """A random net whose policy puts nearly all its mass on passing."""
    torch.manual_seed(0)
    net = PolicyValueNet(NetConfig(board_size=board_size, history=2, blocks=1, filters=8)).eval()
    with torch.no_grad():
        net.policy_fc.weight.mul_(0.01)
        net.policy_fc.bias.zero_()
        net.policy_fc.bias[board_size * board_size] = 20.0
    return net


# ---------------------------------------------------------------------------------------------------------------
# Dead stones


def test_benson_pass_alive_chains_and_their_safe_regions():
    pos = from_ascii(
        """
        .X.X.
        XXXXX
        ..O..
        XXXXX
        .X.X.
        """
    )
    alive, safe = pass_alive(pos.board, BLACK)
    assert alive[pos.board == BLACK].all()  # each wall has two one-point eyes
    assert _vertices(safe) >= {"A5", "C5", "E5", "A1", "C1", "E1"}
    white_alive, _ = pass_alive(pos.board, WHITE)
    assert not white_alive.any()
    # a lone group with one eye is not pass-alive
    one_eye = from_ascii(
        """
        .X...
        XX...
        .....
        .....
        .....
        """
    )
    assert not pass_alive(one_eye.board, BLACK)[0].any()


def test_playout_judge_finds_the_dead_and_spares_the_living():
    judge = PlayoutJudge()
    pos = from_ascii(DEAD_C5, komi=0.5)
    assert _vertices(judge.dead_stones(pos)) == {"C5"}
    assert np.array_equal(judge.dead_stones(pos), judge.dead_stones(pos))  # deterministic (and cached)
    alive = from_ascii(
        """
        .X.O.
        XXOO.
        .XO..
        XXO..
        .XO..
        """
    )
    assert not judge.dead_stones(alive).any()  # two living groups, nothing dead
    assert area_ownership(alive.board)[4, 0] == BLACK and area_ownership(alive.board)[0, 4] == WHITE


@needs_gnugo
def test_playout_judge_agrees_with_gnugo_on_settled_boards():
    boards = [
        DEAD_C5,
        """
        .XOOO
        XXO.O
        .XXXX
        X.X.X
        .X.X.
        """,
        """
        ..X..
        .X.X.
        XXOX.
        .XXX.
        .....
        """,
    ]
    gnugo = GnuGoJudge()
    try:
        for pic in boards:
            pos = from_ascii(pic, komi=7.5)
            assert _vertices(PlayoutJudge().dead_stones(pos)) == _vertices(gnugo.dead_stones(pos)), pic
    finally:
        gnugo.close()


# ---------------------------------------------------------------------------------------------------------------
# The two counts and the cleanup rule


def test_tromp_taylor_and_chinese_counts():
    pos = from_ascii(DEAD_C5, komi=0.5)
    assert counted_score(pos, "tromp-taylor") == -6.5
    assert counted_score(pos, "chinese", PlayoutJudge()) == 4.5
    with pytest.raises(ValueError, match="rules"):
        counted_score(pos, "japanese")  # type: ignore[arg-type]


def test_cleanup_alternatives_are_the_liberties_of_the_dead():
    pos = from_ascii(DEAD_C5, to_play=BLACK, komi=0.5)
    reason, moves = pass_alternatives(pos, PlayoutJudge())
    assert reason == "cleanup" and _vertices(moves) == {"B5", "C4", "D5"}


def test_counted_loss_alternatives_and_a_pass_that_stands():
    reason, moves = pass_alternatives(_white_to_move_after_black_passed(), PlayoutJudge())
    assert reason == "counted loss" and {"B5", "D5", "A1"} <= _vertices(moves)
    # everything settled for black (Benson): white has nothing left to try, so its pass stands
    settled = from_ascii(
        """
        .XOOO
        XXO.O
        .XXXX
        X.X.X
        .X.X.
        """.replace(".XOOO", ".XOO."),
        to_play=WHITE,
        komi=17.5,
    )
    settled = play_moves(settled, ["E5", "pass"])
    assert counted_score(settled, "tromp-taylor") < 0 < counted_score(settled, "chinese", PlayoutJudge())
    assert pass_alternatives(settled, PlayoutJudge()) is None


def test_engine_does_not_pass_when_passing_wins_only_under_tromp_taylor():
    """The acceptance board: white's pass would end the game W+6.5 by Tromp–Taylor, B+4.5 with C5 removed."""
    pos = _white_to_move_after_black_passed()
    assert counted_score(pos, "tromp-taylor") < 0 < counted_score(pos, "chinese", PlayoutJudge())
    net = _pass_loving_net()
    plain = NetPlayer(net, history=2, num_simulations=8, cleanup=False)
    assert plain.genmove(pos) == pos.pass_action  # a Tromp–Taylor search passes: it sees a won game
    player = NetPlayer(net, history=2, num_simulations=8)
    move = player.genmove(pos)
    assert move != pos.pass_action and pos.is_legal(move)
    # the same through GTP, the game sent as moves
    engine = GtpEngine(net, num_simulations=8, komi=0.5)
    for i, a in enumerate(pos.state.history()):
        assert engine.handle(f"play {'bw'[i % 2]} {action_to_vertex(a, 5)}") == "=\n\n"
    assert engine.handle("final_score") == "= B+4.5\n\n"  # chinese rules: C5 removed
    reply = engine.handle("genmove w")
    assert reply.startswith("= ") and reply.strip()[2:].lower() != "pass", reply


def test_engine_captures_dead_stones_before_passing():
    pos = from_ascii(DEAD_C5, to_play=BLACK, komi=0.5)
    net = _pass_loving_net()
    assert NetPlayer(net, history=2, num_simulations=0, cleanup=False).genmove(pos) == pos.pass_action
    move = NetPlayer(net, history=2, num_simulations=0).genmove(pos)
    assert action_to_vertex(move, 5) in {"B5", "C4", "D5"}


def test_selfplay_cleanup_takes_the_pass_out_of_the_target():
    pos = from_ascii(DEAD_C5, to_play=BLACK, komi=0.5)
    actions = (vertex_to_action("B5", 5), vertex_to_action("A1", 5), pos.pass_action)
    policy = np.array([0.2, 0.3, 0.5])
    index, target = apply_cleanup(pos, actions, 2, policy, PlayoutJudge())
    assert actions[index] == vertex_to_action("B5", 5)  # A1 ranks higher but does not attack C5
    assert target[2] == 0.0 and np.isclose(target.sum(), 1.0) and np.isclose(target[0], 0.4)
    assert apply_cleanup(pos, actions, 2, policy, None) == (2, policy)  # rule off
    assert replace_premature_pass(pos, actions, policy, 1, PlayoutJudge()) == 1  # not a pass: untouched


def test_pg_arm_resamples_a_premature_pass_from_the_alternatives():
    from go_baseline.pg import _cleanup_moves, _sample

    pos = from_ascii(DEAD_C5, to_play=BLACK, komi=0.5)
    moves = _cleanup_moves(pos, PlayoutJudge())
    assert _vertices(moves) == {"B5", "C4", "D5"} and _cleanup_moves(pos, None) is None
    logits = np.zeros(26)
    logits[pos.pass_action] = 50.0
    rng = np.random.default_rng(0)
    assert {_sample(logits, moves, 1.0, rng) for _ in range(30)} == set(moves.tolist())


@needs_gnugo
def test_gnugo_judge_falls_back_to_playouts_when_gnugo_fails():
    judge = GnuGoJudge()
    judge.engine.close()  # GnuGo is gone: the verdict must still come
    pos = from_ascii(DEAD_C5, komi=0.5)
    assert _vertices(judge.dead_stones(pos)) == {"C5"} and judge.fallbacks == 1
