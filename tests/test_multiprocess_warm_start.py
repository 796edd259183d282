"""``accelerate launch --num_processes 2 -m llm_rl.train`` from an empty output directory: the tiny base model is
built once (by the main process, the other waits for it), the warm start trains under DDP with
``warm_start.batch_size`` as the *global* batch and is written once, and the arm then trains from it.

Both processes used to save the warm-started model into the same directory at once (one deleting it while the
other wrote): `recipes/llm/tiny_ddp_cpu.yaml` failed with ``FileNotFoundError`` on the second process. That race
depends on timing and this small launch does not reliably lose it; what the test pins down is the 2-process
path from an empty directory end to end, the global batch (``processes`` in the record) and the single report.
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from _procs import REPO, launch_env  # tests/ is on sys.path (pytest's default import mode)


def test_two_processes_build_the_base_and_warm_start_once(tmp_path):
    recipe = {
        "output_dir": str(tmp_path / "out"),
        "arm": "mc_value",
        "model": {"name_or_path": "tiny", "tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2},
        "task": {
            "verifier": "chain_arithmetic",
            "train_size": 16,
            "test_size": 4,
            "difficulty": {"min_steps": 1, "max_steps": 2},
            "max_steps": 3,
            "max_step_tokens": 8,
            "max_completion_tokens": 24,
        },
        "warm_start": {"max_steps": 4, "eval_every": 2, "batch_size": 8, "eval_examples": 4},
        "budget": {"axis": "optimizer_steps", "limit": 2, "eval_every": 2},
        "eval": {"num_examples": 2, "pass_k": 2},
        "optim": {"prompts_per_step": 2, "checkpoint_every": 1},
        "mc_value": {"num_samples": 2, "num_rollouts": 1},
        "compare": {"arms": ["mc_value"], "seeds": [0], "probe_variance": False},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "recipes/accelerate/cpu_ddp.yaml",
        "--main_process_port", "0", "-m", "llm_rl.train", "--config", str(path),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    out = tmp_path / "out"
    record = json.loads((out / "warm_start" / "warm_start.json").read_text())
    assert record["processes"] == 2 and record["steps"] == 4
    assert (out / "warm_start" / "model" / "value_head.json").exists()
    assert not (out / "warm_start" / "trainer").exists()
    final = json.loads((out / "runs" / "mc_value-seed0" / "final_metrics.json").read_text())
    assert final["optimizer_steps"] == 2
    assert done.stdout.count("run directory:") == 1  # reported once, by the main process
    assert done.stderr.count("[llm-rl train]") == 1

    # `compare` of the same recipe reuses the warm start and the finished run; it reports once too
    cmd[cmd.index("llm_rl.train")] = "llm_rl.compare"
    done = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert done.stdout.count("report:") == 1 and done.stdout.count("\n- ") == len(
        json.loads((out / "summary.json").read_text())["sentences"]
    )
    assert done.stderr.count("warm start(s) ready") == 1 and done.stderr.count("mc_value seed 0: pass@1") == 1
