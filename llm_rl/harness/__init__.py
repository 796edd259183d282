"""The run harness: everything an arm does not define, written once for every arm.

| module | what |
|---|---|
| `run.py` | `train_arm`: one run of one arm (the entry point) |
| `session.py` | the services both drivers call: budget stop, evaluation schedule + held-out eval, resume, records |
| `loop.py` | the driver of the hand-written arms (collect/loss, epochs x minibatches, chunks across processes) |
| `trl_bridge.py` | the driver of TRL-run arms (GRPO): TRL's trainer reporting into the session |
| `budget.py`, `metering.py` | the counters, and the metered verifier / prompt batches / arm context that charge them |
| `data.py` | the task rows and the prompt order |
| `checkpoints.py` | verified, safely loaded, newest-two checkpoints |
| `evaluation.py` | held-out pass@1 / pass@k |
| `distributed.py` | multi-process semantics (chunks, gradient and counter sums, one writer) |
| `tracking.py` | ``metrics.jsonl`` + experiment trackers, the progress bar |
"""
