"""Go rules on ASCII boards: captures, ko, suicide, scoring, vertices; and the symmetry augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from go_baseline.board import (
    BLACK,
    WHITE,
    action_to_vertex,
    area_score,
    board_to_ascii,
    format_score,
    from_ascii,
    new_position,
    play_moves,
    vertex_to_action,
)
from go_baseline.features import encode, num_planes
from go_baseline.symmetry import NUM_SYMMETRIES, action_permutation, transform_planes, transform_policy


def test_ascii_round_trip_and_side_to_move():
    pic = """
    .....
    .XO..
    ..X..
    .O...
    X...O
    """
    for to_play in (BLACK, WHITE):
        pos = from_ascii(pic, to_play=to_play)
        assert pos.to_play == to_play
        assert board_to_ascii(pos.board) == "\n".join(ln.strip() for ln in pic.strip().splitlines())


def test_single_stone_capture():
    pos = from_ascii(
        """
        .....
        ..X..
        .XO..
        ..X..
        .....
        """,
        to_play=BLACK,
    )
    after = play_moves(pos, ["D3"])
    assert board_to_ascii(after.board).splitlines()[2] == ".X.X."


def test_group_capture_in_corner():
    pos = from_ascii(
        """
        .....
        .....
        X....
        OX...
        O.X..
        """,
        to_play=BLACK,
    )
    after = play_moves(pos, ["B1"])
    assert after.board[0, 0] == 0 and after.board[1, 0] == 0  # A1, A2 captured
    assert after.board[0, 1] == BLACK


def test_simple_ko_forbids_immediate_recapture():
    pos = from_ascii(
        """
        .....
        .....
        .XO..
        XO.O.
        .XO..
        """,
        to_play=BLACK,
    )
    pos = play_moves(pos, ["C2"])  # black captures at C2, taking B2
    assert pos.board[1, 1] == 0
    b2 = vertex_to_action("B2", 5)
    assert not pos.is_legal(b2)  # white may not retake at once
    pos = play_moves(pos, ["E5", "E4"])  # a ko threat exchange elsewhere
    assert pos.is_legal(b2)


def test_suicide_is_illegal():
    pos = from_ascii(
        """
        .....
        .....
        .....
        O....
        .O...
        """,
        to_play=BLACK,
    )
    assert not pos.is_legal(vertex_to_action("A1", 5))


def test_illegal_picture_is_rejected():
    with pytest.raises(ValueError, match="not legal"):
        from_ascii(
            """
            .....
            .....
            .....
            X....
            OX...
            """
        )


def test_area_scoring_counts_stones_and_territory():
    board = from_ascii(
        """
        .X.O.
        .X.O.
        .X.O.
        .X.O.
        .X.O.
        """
    ).board
    # black: 5 stones + 5 (column A) = 10; white: 5 stones + 5 (column E) = 10; column C is dame
    assert area_score(board, 0.5) == -0.5
    assert area_score(np.full((5, 5), 0, np.int8), 7.5) == -7.5
    lone = from_ascii(
        """
        .....
        .....
        ..X..
        .....
        .....
        """
    ).board
    assert area_score(lone, 7.5) == 17.5  # a lone stone owns the whole empty board
    assert format_score(17.5) == "B+17.5" and format_score(-2.5) == "W+2.5"


def test_area_score_agrees_with_openspiel_winner():
    rng = np.random.default_rng(0)
    for _ in range(10):
        pos = new_position(5, 2.5)
        while not pos.is_terminal:
            pos = pos.play(int(rng.choice(pos.legal_actions())))
        returns = pos.state.returns()
        assert (returns[0] > 0) == (pos.score() > 0)


def test_vertices():
    assert vertex_to_action("A1", 9) == 0
    assert vertex_to_action("j1", 9) == 8  # columns skip I
    assert vertex_to_action("J9", 9) == 80
    assert vertex_to_action("PASS", 9) == 81
    assert action_to_vertex(12, 5) == "C3"
    for bad in ("I1", "A0", "F1", "Z9", "", "A", "1A", "A-1"):
        with pytest.raises(ValueError):
            vertex_to_action(bad, 5)


def test_symmetries_map_moves_consistently():
    n = 5
    rng = np.random.default_rng(1)
    for k in range(NUM_SYMMETRIES):
        perm = action_permutation(n, k)
        assert sorted(perm.tolist()) == list(range(n * n + 1)) and perm[n * n] == n * n
        for a in rng.choice(n * n, size=5, replace=False):
            plane = np.zeros((n, n), np.float32)
            plane.reshape(-1)[a] = 1.0
            moved = transform_planes(plane, k)
            assert moved.reshape(-1)[perm[a]] == 1.0
            onehot = np.zeros(n * n + 1)
            onehot[a] = 1.0
            assert transform_policy(onehot, n, k)[perm[a]] == 1.0
    # C3 is the centre: fixed by all; A1 goes to the 4 corners
    assert {int(action_permutation(n, k)[12]) for k in range(8)} == {12}
    assert {int(action_permutation(n, k)[0]) for k in range(8)} == {0, 4, 20, 24}
    # the 8 maps of an asymmetric point are distinct
    assert len({int(action_permutation(n, k)[1]) for k in range(8)}) == 8


def test_features_are_from_the_movers_view():
    pos = play_moves(new_position(5, 7.5, history=2), ["C3", "B2"])
    x = encode(pos, 2)
    assert x.shape == (num_planes(2), 5, 5)
    assert x[0].reshape(-1)[12] == 1 and x[1].reshape(-1)[6] == 1  # black to move: own C3, opponent B2
    assert x[2].reshape(-1)[12] == 1 and x[3].sum() == 0  # previous board: only C3
    assert x[-2].sum() == 25 and x[-1].sum() == 25


def test_score_aware_utility_ranks_every_win_above_every_loss():
    from go_baseline.selfplay import game_utility

    assert game_utility(1, 2.5, 5, 0.0) == 1.0 and game_utility(-1, -30.0, 5, 0.0) == -1.0
    wins = [game_utility(1, s, 5, 0.5) for s in (0.5, 2.5, 17.5)]
    losses = [game_utility(-1, s, 5, 0.5) for s in (-0.5, -7.5, -25.0)]
    assert min(wins) > max(losses) and wins == sorted(wins) and losses == sorted(losses, reverse=True)
    assert game_utility(1, 17.5, 5, 0.5) == 0.5 + 0.5 * 17.5 / 25
    assert game_utility(-1, float("nan"), 5, 0.5) == -1.0  # resignation: no score
