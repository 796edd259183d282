"""Tokens/s of `HFBackend.sample` (K candidates per prefix, one shared prefill) vs `model.generate`.

What is measured: the same prefixes (chain-arithmetic prompts, optionally with some gold steps appended, like the
tree search's nodes), ``K`` samples each at temperature 1, ``max_new_tokens`` new tokens at most, on the same
model and thread count:

* ``HFBackend.sample(prefixes, n=K)`` — what the relabeller's tree expansion and the MC-value rollouts call;
* ``model.generate(num_return_sequences=K, do_sample=True)`` — what TRL's GRPO sampling amounts to (TRL repeats each
  prompt ``num_generations`` times in one left-padded batch and calls ``generate`` once).

Generated tokens are counted the same way for both: every token up to and including the one that ended the row
(EOS, or the step delimiter in ``--stop newline`` mode, where ``generate`` gets the newline id as an extra EOS).
Prefill tokens are reported too (the backend prefills each distinct prefix once; ``generate`` prefills every
copy). The best of ``--repeats`` timed runs after one warm-up run is reported.

    python benchmarks/bench_generation.py                      # tiny preset, random init
    python benchmarks/bench_generation.py --model runs/quickstart/warm_start/model --stop newline
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def _generate_count(model, tokenizer, prefixes, k, max_new_tokens, stop_ids):
    enc = [tokenizer(p)["input_ids"] for p in prefixes]
    width = max(map(len, enc))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        num_return_sequences=k,
        max_new_tokens=max_new_tokens,
        eos_token_id=stop_ids,
        pad_token_id=pad,
    )
    new = out[:, width:].tolist()
    generated = 0
    for row in new:
        n = len(row)
        for i, t in enumerate(row):
            if t in stop_ids:
                n = i + 1
                break
        generated += n
    return generated, int(mask.sum()) * k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a from_pretrained path (default: build the tiny preset)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--prefixes", type=int, default=8, help="distinct prefixes per call")
    ap.add_argument("--k", type=int, default=4, help="samples per prefix")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--stop", choices=["none", "newline"], default="none")
    ap.add_argument("--steps-in-prefix", type=int, default=1, help="gold steps appended to each prompt")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    import verifiers
    from llm_rl.generation import HFBackend
    from llm_rl.harness.budget import Budget
    from llm_rl.model import build_tiny_model, load_policy

    path = args.model
    if path is None:
        path = build_tiny_model(tempfile.mkdtemp() + "/tiny", hidden_size=args.hidden, num_layers=args.layers)
    torch.manual_seed(0)
    policy = load_policy(path)
    policy.eval()
    rows = verifiers.load("chain_arithmetic").generate(args.prefixes, seed=0, split="test")
    prefixes = [
        r["prompt"] + "".join(s + "\n" for s in r["solution"].split("\n")[: args.steps_in_prefix])
        for r in rows
    ]
    stop = "\n" if args.stop == "newline" else None
    newline = policy.tokenizer.convert_tokens_to_ids("\n")
    stop_ids = [policy.eos_token_id] + ([newline] if stop else [])

    def run_backend():
        budget = Budget()
        g = torch.Generator().manual_seed(0)
        HFBackend(policy, budget).sample(
            prefixes, n=args.k, max_new_tokens=args.max_new_tokens, temperature=1.0, stop=stop, generator=g
        )
        return budget.generated_tokens, budget.prefill_tokens

    def run_generate():
        with torch.inference_mode():
            return _generate_count(
                policy.model, policy.tokenizer, prefixes, args.k, args.max_new_tokens, stop_ids
            )

    print(
        f"model={path} prefixes={args.prefixes} K={args.k} max_new_tokens={args.max_new_tokens} "
        f"stop={args.stop} threads={args.threads} (best of {args.repeats} after a warm-up)"
    )
    for name, fn in (("HFBackend.sample", run_backend), ("model.generate", run_generate)):
        fn()  # warm-up
        best = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            generated, prefill = fn()
            dt = time.perf_counter() - t0
            if best is None or generated / dt > best[0]:
                best = (generated / dt, generated, prefill, dt)
        rate, generated, prefill, dt = best
        print(
            f"{name:<18} {rate:9.0f} generated tok/s   ({generated} generated, {prefill} prefilled, {dt * 1e3:.0f} ms)"
        )


if __name__ == "__main__":
    main()
