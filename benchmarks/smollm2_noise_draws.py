"""How much one SmolLM2-135M perplexity on the chip moves with the per-forward read-noise draws alone.

    python benchmarks/smollm2_noise_draws.py --threads 2 --out benchmarks/results/smollm2_noise_draws.json

A chip instance (default chip, ideal wires, t = 1 h, seed ``--seed``) is compiled once and saved; the read noise
of every forward is drawn from the stream of (seed, number of the call), so the same instance scored after a
different number of earlier forwards sees other draws. Three scores of the same token budget
(``--tokens`` WikiText-2 test tokens, ``--window`` / ``--stride``):

- ``compiled``: the compiled instance, first forward after compile;
- ``loaded``: the chip file loaded in this process, first forward after load (equal to ``compiled`` bit for bit:
  the file holds the programmed state and the call counters start again);
- ``loaded_after_one_call``: the chip file loaded again, one forward on the first ``--check-tokens`` tokens,
  then the budget (what ``smollm2_compile.py``'s evaluate phase does after its bit-identity check).

The float baseline is the publisher's Q4_1 GGUF dequantized to float32 by transformers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import configure_threads, machine_info, write_json_atomic

RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="chip instance")
    parser.add_argument("--tokens", type=int, default=256, help="WikiText-2 test tokens scored (budget)")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--check-tokens", type=int, default=32, help="tokens of the one earlier forward")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "smollm2_noise_draws.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threading = configure_threads(args.threads, "passive")
    import torch

    import crossbar
    from models import llm
    from models.llm_eval import perplexity, wikitext2_ids

    result: dict = {"settings": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(threading)}
    result["baseline_note"] = "float = the publisher's Q4_1 GGUF dequantized to float32 by transformers"
    lm = llm.load("smollm2-135m")
    ids = wikitext2_ids(lm.tokenizer, tokens=max(args.tokens, args.check_tokens))
    budget, check = ids[: args.tokens], ids[None, : args.check_tokens]

    def score(model: torch.nn.Module) -> dict:
        with torch.no_grad():
            return perplexity(model, budget, args.window, args.stride).to_dict()

    chip = crossbar.ChipConfig.preset("default").replace(wires={"r_wl": 0.0, "r_bl": 0.0})
    start = time.perf_counter()
    analog = crossbar.compile(lm, chip, seed=args.seed)
    result["compile_seconds"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "smollm2.xbar"
        crossbar.save(analog, path)
        scores = {"compiled": score(analog)}
        del analog
        scores["loaded"] = score(crossbar.load(path))
        loaded = crossbar.load(path)
        with torch.no_grad():
            loaded(check)
        scores["loaded_after_one_call"] = score(loaded)
    result["scores"] = scores
    values = {name: s["perplexity"] for name, s in scores.items()}
    result["loaded_equals_compiled"] = values["loaded"] == values["compiled"]
    result["after_one_call_over_first"] = values["loaded_after_one_call"] / values["loaded"]
    print(json.dumps(values), flush=True)
    write_json_atomic(args.out, result)


if __name__ == "__main__":
    sys.exit(main())
