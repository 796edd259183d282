"""Generated tokens/s of the two generation backends on the same model and prefixes: `HFBackend` vs `VLLMBackend`.

What is measured: ``K`` samples of each prefix at temperature 1, ``max_new_tokens`` at most, stopping at EOS or at
the step delimiter (``--stop newline``), through the `GenerationBackend` interface the relabeller and the MC-value
arm call. The prefixes imitate a tree search: chain-arithmetic prompts, each also extended by 1..3 of its gold
steps (a node and its descendants share a prefix, which is what vLLM's prefix caching reuses across calls).
Generated tokens are counted by each backend's own `Budget` (the same rule for both); the best of ``--repeats``
timed calls after one warm-up call is reported. The vLLM row needs a CUDA GPU and ``pip install
'relabel-rl[vllm]'``; without them it is reported as skipped.

    python benchmarks/bench_backends.py                                  # tiny preset, random init, HF only on CPU
    python benchmarks/bench_backends.py --model Qwen/Qwen2.5-0.5B-Instruct --dtype bfloat16 --k 8 --prompts 64
"""

from __future__ import annotations

import argparse
import tempfile
import time


def _prefixes(n: int) -> list[str]:
    import verifiers

    rows = verifiers.load("chain_arithmetic").generate(n, seed=0, split="test", min_steps=3, max_steps=4)
    out = []
    for r in rows:
        steps = r["solution"].split("\n")
        out.append(r["prompt"])
        out += [r["prompt"] + "".join(s + "\n" for s in steps[:t]) for t in (1, 2, 3)]
    return out


def _time(backend, prefixes, k, max_new_tokens, stop, repeats) -> tuple[float, int, int]:
    import torch

    from llm_rl.harness.budget import Budget

    backend.sample(prefixes, n=k, max_new_tokens=max_new_tokens, stop=stop)  # warm-up
    best = None
    for r in range(repeats):
        backend.budget = Budget()
        start = time.perf_counter()
        backend.sample(
            prefixes,
            n=k,
            max_new_tokens=max_new_tokens,
            stop=stop,
            generator=torch.Generator().manual_seed(r),
        )
        elapsed = time.perf_counter() - start
        generated, prefill = backend.budget.generated_tokens, backend.budget.prefill_tokens
        if best is None or generated / elapsed > best[1] / best[0]:
            best = (elapsed, generated, prefill)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="tiny", help="'tiny' (built in a temp dir) or a model path / hub id"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--prompts", type=int, default=16, help="prompts; each gives 4 prefixes")
    parser.add_argument("--k", type=int, default=4, help="samples per prefix")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--stop", choices=["none", "newline"], default="newline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    args = parser.parse_args()

    import torch

    from llm_rl.generation import HFBackend
    from llm_rl.model import build_tiny_model, load_policy

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    path = build_tiny_model(f"{tmp.name}/tiny") if args.model == "tiny" else args.model
    policy = load_policy(path, dtype=args.dtype)
    if torch.cuda.is_available():
        policy.to("cuda")
    prefixes = _prefixes(args.prompts)
    stop = "\n" if args.stop == "newline" else None
    print(
        f"model {args.model} ({args.dtype}, {policy.device}), {len(prefixes)} prefixes x K={args.k}, "
        f"max_new_tokens {args.max_new_tokens}, stop {args.stop}, best of {args.repeats}"
    )
    rows = [("hf", HFBackend(policy))]
    try:
        from llm_rl.generation.vllm import VLLMBackend

        rows.append(("vllm", VLLMBackend(policy, gpu_memory_utilization=args.gpu_memory_utilization)))
    except Exception as e:  # no vLLM, no GPU: say so, measure the HF backend anyway
        print(f"vllm: skipped ({type(e).__name__}: {str(e).splitlines()[0]})")
    for name, backend in rows:
        elapsed, generated, prefill = _time(
            backend, prefixes, args.k, args.max_new_tokens, stop, args.repeats
        )
        print(
            f"{name:5s} {generated / elapsed:10.0f} generated tok/s  "
            f"({generated} generated, {prefill} prefilled, {elapsed:.3f}s)"
        )


if __name__ == "__main__":
    main()
