"""A task's rows from the researcher's own data, checked before any work: ``task.data`` in a recipe.

Why: a verifier's generator is the only other source of rows, and a researcher's problems live in a file, a
``datasets.Dataset`` they saved, or a hub dataset. ``task.data.path`` takes any of them:

* a ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` file (one split, named ``train`` as `datasets` names it);
* a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (`datasets.load_from_disk`);
* any other directory of data files (`datasets.load_dataset` infers the splits from the file names,
  ``train.jsonl`` / ``test.jsonl``);
* a hub dataset id (``org/name``, with ``task.data.name`` for its configuration), for users with access.

How it plugs in: `task_verifier` returns the verifier whose ``generate`` every consumer of task rows draws from (the
harness's train/test rows, the warm start's SFT and held-out rows, ``llm-rl eval``, the variance probe): the
recipe's verifier itself, or with ``task.data.path`` a `DatasetTask`, which scores with that verifier and draws its
rows from the user's data. Nothing downstream knows the difference.

The rules, applied once when the data is loaded (every problem is a `ConfigError` naming its recipe key):

* **Splits.** ``train_split`` and ``test_split`` name the source's splits. With ``test_split: null`` (the default)
  the train split is divided by a hash of each prompt (`verifiers.split_of`, the rule every generator uses, ~20 %
  test), so the held-out rows are disjoint from the training rows by construction. With a named test split, a
  training row whose prompt is also a test prompt is dropped (no arm trains on a held-out prompt), as are repeated
  prompts within a split (the first is kept); the summary line says how many.
* **Columns.** ``columns`` maps an example field to the data's column (``{prompt: question, answer: label}``); a
  field not mapped is read from the column of its own name, and every other column is kept as it is (the verifier
  may read it). Required: ``prompt`` and ``answer``, and ``solution`` (a gold step-by-step completion, one step
  per line, ending in ``Answer: ...``) while the warm start is on, since it trains on it.
* **Values.** ``prompt`` and ``solution`` are text; ``answer`` is text (a number becomes its text); none may be
  null. A prompt that does not end with the verifier's step delimiter gets one (the arms append a completion to
  the prompt as-is, so the first step starts on a line of its own, as with generated prompts). ``num_steps``, when
  the data has no such column, counts the solution's steps (0 without a solution).
* **Rows.** ``generate(n, seed=s, split=...)`` returns the first ``n`` rows of the split in a permutation seeded by
  ``s``: prefix-stable and reproducible like a generator, but a dataset is finite, so it returns *at most* the
  split's rows. ``task.train_size`` and ``task.test_size`` are therefore upper bounds here; the summary line
  printed when the data is first loaded gives the actual counts. There are no difficulty knobs.

Departure from the generated tasks: the warm start's stopping rule measures pass@1 on test-split rows drawn with
its own seed; a generator draws fresh prompts for it, but a finite test split shares its rows with the evaluation
rows (selection on the evaluation rows by the warm start's early stop, the same for every arm). With a small test
split, prefer ``warm_start.target_pass_rate: null`` (a fixed number of SFT steps), or hold out a split of its own.
"""

from __future__ import annotations

import difflib
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets

import verifiers
from llm_rl.harness.distributed import is_main
from relabel_rl.config import ConfigError
from verifiers.base import Verifier, split_of

if TYPE_CHECKING:  # annotation only (llm_rl.config's section; the recipe module stays free of `datasets`)
    from llm_rl.config import TaskDataConfig

__all__ = ["FILE_BUILDERS", "DatasetTask", "load_user_rows", "task_verifier"]

# file suffix -> the `datasets` packaged builder that reads it
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
REQUIRED_FIELDS = ("prompt", "answer")
TEXT_FIELDS = ("prompt", "solution")  # must be strings; `answer` may be a number (it becomes its text)


# ---------------------------------------------------------------------------------------------------------------
# The verifier the rows are drawn from


def task_verifier(cfg: Any) -> Verifier:
    """The verifier whose ``generate`` gives the recipe's task rows: ``task.verifier`` itself, or, with
    ``task.data.path``, a `DatasetTask` over the user's rows (loaded and checked here, before any model loads).

    Raises:
      ConfigError: naming the recipe key at fault (``task.verifier``, ``task.data.*``, ``task.difficulty``).
    """
    try:
        verifier = verifiers.load(cfg.task.verifier)
    except Exception as e:  # registry errors, plugin import errors
        raise ConfigError(f"'task.verifier': {e}") from None
    if cfg.task.data.path is None:
        if not verifier.has_generator:
            raise ConfigError(
                f"'task.verifier': {verifier.name!r} has no task generator: give your rows with 'task.data.path' "
                "(a JSONL/Parquet/CSV file, a save_to_disk directory or a hub dataset id) and map their columns "
                "onto prompt/answer/solution with 'task.data.columns' (docs/llm_rl.md, 'Your own data')"
            )
        return verifier
    if cfg.task.difficulty:
        raise ConfigError(
            f"'task.difficulty': rows from 'task.data.path' have no difficulty knobs, got {dict(cfg.task.difficulty)}"
        )
    needs = (*REQUIRED_FIELDS, "solution") if cfg.warm_start.enabled else REQUIRED_FIELDS
    rows = load_user_rows(cfg.task.data, verifier, required=needs)
    return DatasetTask(verifier, rows, source=str(cfg.task.data.path))


class DatasetTask(Verifier):
    """A verifier's scoring with rows from a dataset: ``score``/``check_step``/steps are the verifier's own,
    ``generate`` draws from ``rows`` (module docstring). Pickled (to a containment worker) without the rows."""

    def __init__(self, verifier: Verifier, rows: dict[str, list[dict]], *, source: str) -> None:
        self.verifier, self.source = verifier, source
        self.name, self.step_delimiter = verifier.name, verifier.step_delimiter
        self.trusted, self.deadline = verifier.trusted, verifier.deadline
        self.rows: dict[str, list[dict]] | None = rows

    def score(self, completion: str, example: dict) -> float:
        return self.verifier.score(completion, example)

    def check_step(self, previous_steps: list[str], step: str, example: dict) -> bool | None:
        return self.verifier.check_step(previous_steps, step, example)

    def split_steps(self, completion: str) -> list[str]:
        return self.verifier.split_steps(completion)

    def is_terminal_step(self, step: str) -> bool:
        return self.verifier.is_terminal_step(step)

    @property
    def has_step_checks(self) -> bool:
        return self.verifier.has_step_checks

    @property
    def has_generator(self) -> bool:
        return True

    def difficulty_knobs(self) -> dict[str, Any]:
        return {}

    def generate(self, n: int, *, seed: int, split: str = "train", **difficulty: Any) -> datasets.Dataset:
        """The first ``n`` rows (at most the split's) of ``split`` in a permutation seeded by ``seed``."""
        if difficulty:
            raise ValueError(
                f"{self.source}: unknown difficulty knob(s) {sorted(difficulty)}; rows from a dataset have none"
            )
        if self.rows is None:
            raise RuntimeError(f"{self.source}: this copy of the task was pickled without its rows")
        if split not in self.rows:
            raise ValueError(f"split must be one of {sorted(self.rows)}, got {split!r}")
        pool = self.rows[split]
        order = list(range(len(pool)))
        random.Random(f"task.data:{split}:{seed}").shuffle(order)
        return datasets.Dataset.from_list([pool[i] for i in order[: max(0, n)]])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "rows": None}

    def __repr__(self) -> str:
        return f"DatasetTask({self.verifier!r}, source={self.source!r})"


# ---------------------------------------------------------------------------------------------------------------
# Loading and checking


def load_user_rows(
    data: TaskDataConfig, verifier: Verifier, *, required: tuple[str, ...] = REQUIRED_FIELDS
) -> dict[str, list[dict]]:
    """``{"train": rows, "test": rows}`` from ``data`` (module docstring: splits, columns, values); loaded once per
    process for the same source, settings and file modification time.

    Raises:
      ConfigError: the source cannot be read or is empty, a split or column does not exist, a value is missing
        or not text; each names its ``task.data`` key.
    """
    key = (repr(data), verifier.step_delimiter, type(verifier).__qualname__, required, _stamp(str(data.path)))
    if key not in _LOADED:
        _LOADED.clear()  # one source per process at a time: the rows of a large dataset are not kept twice
        _LOADED[key] = _load_rows(data, verifier, required)
    return _LOADED[key]


_LOADED: dict[tuple, dict[str, list[dict]]] = {}


def _stamp(path: str) -> tuple[int, int] | None:
    """A local source's modification time and size (a changed file is reloaded); None for a hub id."""
    p = Path(path).expanduser()
    if not p.exists():
        return None
    newest = max(
        (q.stat() for q in [p, *p.rglob("*")] if q.is_file()), key=lambda st: st.st_mtime_ns, default=None
    )
    return None if newest is None else (newest.st_mtime_ns, newest.st_size)


def _load_rows(data: TaskDataConfig, verifier: Verifier, required: tuple[str, ...]) -> dict[str, list[dict]]:
    source = _load_source(data)
    where = str(data.path)
    for key, split in (("train_split", data.train_split), ("test_split", data.test_split)):
        if split is not None and split not in source:
            near = difflib.get_close_matches(split, list(source), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(
                f"'task.data.{key}': {where} has no split {split!r}{hint}; its splits: {', '.join(source)}"
            )
    train, repeats = _rows(source[data.train_split], data, verifier, where, required, data.train_split)
    notes = []
    if data.test_split is None:
        test = [r for r in train if split_of(r["prompt"]) == "test"]
        train = [r for r in train if split_of(r["prompt"]) == "train"]
        notes.append("split by prompt hash")
        if not test or not train:
            raise ConfigError(
                f"'task.data.test_split': splitting the {len(train) + len(test)} rows of {where} by prompt hash "
                f"left {len(train)} train and {len(test)} test rows; add rows or name a test split"
            )
    else:
        test, test_repeats = _rows(source[data.test_split], data, verifier, where, required, data.test_split)
        repeats += test_repeats
        held_out = {r["prompt"] for r in test}
        before = len(train)
        train = [r for r in train if r["prompt"] not in held_out]
        notes.append(f"splits {data.train_split!r} / {data.test_split!r}")
        if before > len(train):
            notes.append(f"{before - len(train)} train rows dropped whose prompt is a test prompt")
        if not train:
            raise ConfigError(f"'task.data.train_split': every row of {where} is also a test prompt")
    if repeats:
        notes.append(f"{repeats} repeated prompts dropped")
    if is_main():
        print(
            f"[task.data] {where}: {len(train)} train / {len(test)} test rows ({'; '.join(notes)})",
            file=sys.stderr,
        )
    return {"train": train, "test": test}


def _looks_local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or Path(path).suffix in FILE_BUILDERS or path.count("/") > 1


def _load_source(data: TaskDataConfig) -> dict[str, datasets.Dataset]:
    """The source's splits, each a ``datasets.Dataset`` (a single file or a saved ``Dataset``: ``train`` only)."""
    raw = str(data.path)
    p = Path(raw).expanduser()
    try:
        if p.is_file():
            builder = FILE_BUILDERS.get(p.suffix.lower())
            if builder is None:
                raise ConfigError(
                    f"'task.data.path': {p} is not a {'/'.join(FILE_BUILDERS)} file or a dataset directory"
                )
            if p.stat().st_size == 0:
                raise ConfigError(f"'task.data.path': {p} is empty")
            loaded: Any = datasets.load_dataset(builder, data_files=str(p))
        elif p.is_dir():
            saved = (p / "dataset_dict.json").exists() or (p / "dataset_info.json").exists()
            loaded = datasets.load_from_disk(str(p)) if saved else datasets.load_dataset(str(p))
        elif _looks_local(raw):
            raise ConfigError(f"'task.data.path': {p} does not exist")
        else:  # a hub dataset id
            loaded = datasets.load_dataset(raw, data.name)
    except ConfigError:
        raise
    except Exception as e:  # datasets' own errors: unreadable files, an unknown or inaccessible hub dataset
        cause = f" ({e.__cause__})" if e.__cause__ is not None else ""
        raise ConfigError(
            f"'task.data.path': cannot load {raw}: {type(e).__name__}: {' '.join(str(e).split())}{cause}"[
                :600
            ]
        ) from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def _rows(
    ds: datasets.Dataset,
    data: TaskDataConfig,
    verifier: Verifier,
    where: str,
    required: tuple[str, ...],
    split: str,
) -> tuple[list[dict], int]:
    """The split's rows as example dicts (columns mapped, values checked, prompts delimited) and the number of
    repeated prompts dropped."""
    if len(ds) == 0:
        raise ConfigError(f"'task.data.path': split {split!r} of {where} has no rows")
    columns = list(ds.column_names)
    mapping = {field: data.columns.get(field, field) for field in required}
    mapping.update(data.columns)
    problems = []
    for field, column in mapping.items():
        if column in columns:
            continue
        near = difflib.get_close_matches(column, columns, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        if field in data.columns:
            problems.append(f"'task.data.columns.{field}': {where} ({split}) has no column {column!r}{hint}")
        else:
            problems.append(
                f"'task.data.columns': {where} ({split}) has no {field!r} column{hint}; map one with "
                f"--task.data.columns.{field} COLUMN"
            )
    if problems:
        problems[-1] += f"; its columns: {', '.join(columns)}"
        raise ConfigError(problems=problems)
    out, seen = [], set()
    for i, record in enumerate(ds):
        row = dict(record)
        for field, column in mapping.items():
            value = record[column]
            text = field in TEXT_FIELDS
            if value is None or (text and not isinstance(value, str)):
                raise ConfigError(
                    f"'task.data.columns.{field}': row {i} of {where} ({split}): column {column!r} holds "
                    f"{value!r}, not {'text' if text else 'a value'}"
                )
            row[field] = str(value) if field == "answer" else value
        if not row["prompt"].endswith(verifier.step_delimiter):
            row["prompt"] += verifier.step_delimiter
        if "num_steps" not in row:
            row["num_steps"] = len(verifier.split_steps(row["solution"])) if row.get("solution") else 0
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            out.append(row)
    return out, len(ds) - len(out)
