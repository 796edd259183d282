"""A `GenerationBackend` on vLLM (optional ``vllm`` extra, GPU only), with prefix caching for tree expansion.

Why vLLM for the step-wise arms: the relabeller expands a search node by sampling K next steps from the node's
prefix, and the children of that node are sampled later from prefixes that *extend* it. vLLM's automatic prefix
caching (``enable_prefix_caching=True``) keeps the KV blocks of every prefix it has seen, so a child's expansion
prefills only the new step, not the whole reasoning so far; the MC-value arm's rollouts from each step boundary
share prefixes the same way. The HF backend (`llm_rl.generation.hf.HFBackend`) prefills each distinct prefix of one
call once, but nothing across calls.

What stays the same as the HF backend, so the arms and the budget cannot tell them apart:

* **tokenisation.** Prefixes are tokenised by the policy's own tokenizer (`Policy.encode`) and sent to vLLM as
  token ids, so both backends see the very same prompt tokens.
* **exact counts.** ``generated_tokens`` += every token vLLM returned (they include the token that ended a row:
  the delimiter or EOS; vLLM returns nothing after it); ``prefill_tokens`` += the tokens of each distinct prefix
  of the call, once — the same *nominal* count the HF backend charges, even when vLLM's cache skipped some of
  that work, so budgets stay comparable across backends (the cache saves time, not budget).
* **log-probs.** ``logprobs=0`` returns the sampled token's log-prob under vLLM's default ``raw_logprobs``
  mode, i.e. the policy's own distribution at temperature 1, as `Continuation.logprob` is defined.
* **flags.** ``finish_reason == "stop"`` with ``stop_reason is None`` is EOS (``finished``); with the stop
  string as ``stop_reason`` it is the delimiter (``stopped``); ``"length"`` is neither.
* **seeding.** Each request gets ``SamplingParams(seed=...)`` drawn from the caller's ``torch.Generator``, so a
  seeded call is reproducible (vLLM's GPU kernels permitting) and does not depend on batch composition.

Weights: vLLM holds its own copy of the model. Before every call the backend checks whether any trainable
parameter of the policy changed since the last sync (torch bumps a tensor's ``_version`` on every in-place
update, which is how optimisers write) and, if so, pushes the current weights into the engine (merging a PEFT
adapter into the base weights for the push and unmerging after, as TRL does) and resets the prefix cache, whose
blocks were computed with the old weights. This is colocation: each process of an `accelerate launch` run holds
its own engine, in-process, on its own GPU (vLLM's ``external_launcher`` executor, as TRL's colocate mode).

GRPO does not use this class: TRL's `GRPOTrainer` has its own vLLM integration (``use_vllm: true`` with
``vllm_mode: colocate`` or ``server`` in ``grpo.trl``).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from llm_rl.generation.base import Continuation, GenerationBackend, Meter, check_sample_args

__all__ = ["VLLM_MISSING_MESSAGE", "VLLMBackend", "export_for_vllm", "import_vllm"]

VLLM_MISSING_MESSAGE = (
    "model.generation_backend 'vllm' needs the optional vLLM dependency (a CUDA GPU machine): "
    "pip install 'relabel-rl[vllm]' — or set model.generation_backend: hf"
)


def import_vllm() -> Any:
    """Import vLLM, or raise an `ImportError` that names the ``vllm`` extra."""
    try:
        import vllm  # lazy: an optional GPU-only extra, imported only when this backend is chosen
    except ImportError as e:
        raise ImportError(VLLM_MISSING_MESSAGE) from e
    return vllm


def export_for_vllm(policy: Any, directory: str | Path) -> Path:
    """Write the policy's LM as a plain checkpoint vLLM can load: config, tokenizer and one ``model.safetensors``
    holding the current weights (a PEFT adapter merged in; no value head, whose file vLLM would try to load)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model = policy.model
    config = model.get_base_model().config if policy.is_peft else model.config
    config.save_pretrained(out)
    policy.tokenizer.save_pretrained(out)
    with torch.no_grad():
        state = {name: t.detach().cpu().contiguous() for name, t in _named_weights(policy)}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def _named_weights(policy: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The LM's weights under the names a plain checkpoint (and vLLM) uses: a PEFT adapter merged into the base
    weights for the duration of the iteration (then unmerged, as TRL does); the value head skipped."""
    model = policy.model
    if not policy.is_peft:
        for name, param in model.named_parameters():
            yield name, param.data
        return
    model.merge_adapter()
    try:
        for name, param in model.named_parameters():
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if model.prefix in name or "original_module" in name:
                continue  # LoRA matrices (merged above) and shadowed originals do not exist in vLLM
            yield name.replace("modules_to_save.default.", ""), param.data
    finally:
        model.unmerge_adapter()


def _rank() -> int:
    """This process's rank, after setting what vLLM's ``external_launcher`` reads: a single process is rank 0 of
    1, rendezvousing on localhost at a free port (``accelerate launch`` sets all of these itself)."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "localhost")
    if os.environ.get("MASTER_PORT", "").strip().lower() in ("", "0", "auto"):
        with socket.socket() as sock:
            sock.bind(("", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    return int(os.environ["RANK"])


class VLLMBackend(GenerationBackend):
    """`GenerationBackend` on a vLLM engine colocated with the training process.

    Args:
      policy: the trained policy; its weights are pushed to the engine whenever they change.
      budget: counters to charge (None: count nothing).
      gpu_memory_utilization: the engine's share of GPU memory (the rest is left to training).
      max_model_len: the engine's context length (default: the model's ``max_position_embeddings``).
      dtype: the engine's dtype (default: the policy's).
      seed: the engine seed (requests are seeded individually as well).
      enforce_eager: skip CUDA-graph capture (faster start, slower decode; good for small runs).
      llm: an already-built ``vllm.LLM`` to use instead of building one (tests, sharing an engine); it is sent
        the policy's weights on first use.

    The engine is built from a temporary export of the policy's current LM (`export_for_vllm`), not from the
    directory the policy was loaded from: a saved `Policy` directory also holds ``value_head.safetensors``,
    which vLLM would try to load as model weights, and a PEFT policy must be merged first.
    """

    def __init__(
        self,
        policy: Any,
        budget: Meter | None = None,
        *,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        dtype: str | None = None,
        seed: int = 0,
        enforce_eager: bool = False,
        llm: Any = None,
    ) -> None:
        self._vllm = import_vllm()
        super().__init__(policy, budget)
        self._export_dir: tempfile.TemporaryDirectory | None = None
        if llm is None:
            self._export_dir = tempfile.TemporaryDirectory(prefix="relabel-rl-vllm-")
            source = str(export_for_vllm(policy, self._export_dir.name))
            llm = self._vllm.LLM(
                model=source,
                tokenizer=source,
                enable_prefix_caching=True,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len or policy.max_positions,
                dtype=dtype or str(next(policy.model.parameters()).dtype).removeprefix("torch."),
                seed=seed + _rank(),
                enforce_eager=enforce_eager,
                # The engine runs inside this process (as in TRL's colocate mode), so its model is reachable for
                # weight pushes, and under `accelerate launch` each process's engine sits on its own GPU.
                distributed_executor_backend="external_launcher",
                max_num_batched_tokens=4096,  # TRL's setting: vLLM's memory profiler misjudges the default
            )
        self.llm = llm
        # An engine built here starts from the exported current weights; one passed in is synced on first use.
        self._synced_versions: tuple[int, ...] | None = self._weight_versions() if self._export_dir else None
        self.weight_syncs = 0

    # --- weights ------------------------------------------------------------------------------------------
    def _weight_versions(self) -> tuple[int, ...]:
        """In-place update counters of the LM's trainable tensors (the value head never reaches vLLM)."""
        return tuple(p._version for p in self.policy.model.parameters() if p.requires_grad)

    def sync_weights(self, *, force: bool = False) -> bool:
        """Push the policy's current weights into the engine if they changed since the last push (or ``force``);
        returns whether it pushed."""
        versions = self._weight_versions()
        if not force and versions == self._synced_versions:
            return False
        with torch.no_grad():
            model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
            for name, tensor in _named_weights(self.policy):
                model.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self._synced_versions = self._weight_versions()
        self.weight_syncs += 1
        return True

    # --- sampling -----------------------------------------------------------------------------------------
    def sample(
        self,
        prefixes: Sequence[str],
        *,
        n: int = 1,
        max_new_tokens: int,
        temperature: float = 1.0,
        stop: str | None = "\n",
        generator: torch.Generator | None = None,
    ) -> list[list[Continuation]]:
        """``n`` continuations of every prefix (``result[i][j]``), as `HFBackend.sample` (module docstring)."""
        check_sample_args(n=n, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop)
        if not prefixes:
            return []
        self.sync_weights()
        # A prefix given m times is one request for m*n samples (one prefill, as in the HF backend).
        multiplicity: dict[str, int] = {}
        for p in prefixes:
            multiplicity[p] = multiplicity.get(p, 0) + 1
        distinct = list(multiplicity)
        encoded = self.policy.encode(distinct)
        steps = self._room(max(len(e) for e in encoded), max_new_tokens)
        # Greedy rows are all the same: ask vLLM for one (it may refuse n > 1 without sampling) and repeat it;
        # every row is still charged, as the HF backend decodes (and charges) each one.
        greedy = temperature == 0
        requests, params = [], []
        for p, ids in zip(distinct, encoded):
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            requests.append({"prompt_token_ids": list(ids)})
            params.append(
                self._vllm.SamplingParams(
                    n=1 if greedy else n * multiplicity[p],
                    max_tokens=steps,
                    temperature=temperature,
                    stop=[stop] if stop is not None else None,
                    logprobs=0,
                    seed=seed,
                    skip_special_tokens=True,
                )
            )
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        pools: dict[str, list[Continuation]] = {}
        generated = 0
        for p, request_output in zip(distinct, outputs):
            pool = [self._continuation(o, stop) for o in request_output.outputs]
            if greedy:
                pool = pool[:1] * (n * multiplicity[p])
            if len(pool) != n * multiplicity[p]:
                raise RuntimeError(
                    f"vLLM returned {len(pool)} samples for a prefix, expected {n * multiplicity[p]}"
                )
            generated += sum(c.num_tokens for c in pool)
            pools[p] = pool
        self._charge(prefill=sum(len(e) for e in encoded), generated=generated)
        taken: dict[str, int] = dict.fromkeys(distinct, 0)
        result = []
        for p in prefixes:
            start = taken[p]
            result.append(pools[p][start : start + n])
            taken[p] = start + n
        return result

    def _continuation(self, output: Any, stop: str | None) -> Continuation:
        token_ids = tuple(int(t) for t in output.token_ids)
        if output.cumulative_logprob is not None:
            logprob = float(output.cumulative_logprob)
        else:  # older vLLM: sum the per-token dicts
            logprob = float(sum(step[t].logprob for step, t in zip(output.logprobs or [], token_ids)))
        ended = output.finish_reason == "stop"
        reason = output.stop_reason
        finished = ended and reason is None  # EOS
        stopped = ended and stop is not None and reason == stop
        text = output.text
        if stopped and stop in text:  # vLLM already cut at the stop string; be robust to versions that do not
            text = text.split(stop, 1)[0]
        return Continuation(
            text=text, token_ids=token_ids, logprob=logprob, finished=finished, stopped=stopped
        )
