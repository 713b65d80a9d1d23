"""SmolLM2-135M compiled at scale: compile time, peak memory of compile and of evaluation, chip file size and
load time, and the cost of IR drop, each phase in a fresh process so that its peak resident memory is its own.

    python benchmarks/smollm2_compile.py                     # all phases (about 10 minutes on a quiet machine)
    python benchmarks/smollm2_compile.py --phases float,irdrop_block

Phases (each a subprocess of this script, ``--phase``; the parent writes ``--out`` after each one):

- ``float``: load the model (transformers, from the GGUF) and score the token budget (``--tokens`` WikiText-2
  test tokens, ``--window`` / ``--stride``): the float model's process peak, the baseline of the ratios;
- ``compile``: load, compile the whole model on the default chip with ideal wires (PCM programming and drift),
  save the chip file, run the first ``--check-tokens`` tokens; the time spent in aihwkit's programming
  (``crossbar.device.ProgrammingStream.program``) is measured by wrapping it;
- ``evaluate``: a fresh process loads the chip file (no float model, no programming), checks that its logits
  equal the compiling process's bit for bit, and scores the token budget: the peak of evaluation;
- ``irdrop_block``: compile block 0 (78 tiles, 156 arrays) on the default chip with IR drop; the time of the
  IR-drop solves (``crossbar.irdrop.effective_conductance``) per array, and the whole model's IR-drop compile
  extrapolated from it (arrays x seconds per array + the measured ideal-wire compile);
- ``irdrop_model``: the whole model compiled on the default chip with IR drop (not in the default phases):
  wall time, the IR-drop solves' time summed over the ``--threads`` threads compile runs them on, peak memory
  of compile, then the token budget's perplexity with IR drop (instance 0, t = 1 h).

The float baseline is the publisher's Q4_1 GGUF dequantized to float32 by transformers. Peak memory is the
process's maximum resident set size (``ru_maxrss``); it includes Python, torch, transformers and the tokenizer
(``rss_after_imports``), which the ratios to the float model's bytes count too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import configure_threads, machine_info, write_json_atomic

RESULTS = Path(__file__).parent / "results"
PHASES = ("float", "compile", "evaluate", "irdrop_block", "irdrop_model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--phases",
        default=",".join(PHASES[:4]),
        help=f"comma-separated, of {', '.join(PHASES)} (default: all but the last)",
    )
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # run one phase in this process
    parser.add_argument("--tokens", type=int, default=256, help="WikiText-2 test tokens scored (budget)")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--check-tokens", type=int, default=32, help="tokens of the bit-identity check")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where the chip file goes (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS / "smollm2_compile.json")
    args = parser.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase {sorted(unknown)[0]!r}; phases are {', '.join(PHASES)}")
    if "evaluate" in args.phases and "compile" not in args.phases and args.workdir is None:
        parser.error("the evaluate phase reads the compile phase's chip file: run both, or pass --workdir")
    return args


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Stopwatch:
    """Wraps a function (by module and attribute name) and sums the seconds spent in it."""

    def __init__(self, module: object, name: str) -> None:
        self.seconds, self.calls, original = 0.0, 0, getattr(module, name)

        def timed(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        setattr(module, name, timed)


def run_phase(args: argparse.Namespace) -> dict:  # noqa: C901 (one section per phase)
    import numpy as np
    import torch

    import crossbar
    from crossbar import device, irdrop
    from models import llm
    from models.llm_eval import perplexity, wikitext2_ids

    out: dict = {"rss_after_imports": rss_bytes()}
    chip_file = args.workdir / "smollm2.xbar"
    logits_file = args.workdir / "check_logits.npy"
    no_wires = {"r_wl": 0.0, "r_bl": 0.0}

    def tokens(model: llm.CausalLM) -> tuple[torch.Tensor, torch.Tensor]:
        """The budget and the check sequence, cut by the tokenizer the (float or compiled) model holds."""
        ids = wikitext2_ids(model.tokenizer, tokens=max(args.tokens, args.check_tokens))
        return ids[: args.tokens], ids[None, : args.check_tokens]

    def score(model: torch.nn.Module, budget: torch.Tensor) -> dict:
        start = time.perf_counter()
        with torch.no_grad():
            result = perplexity(model, budget, args.window, args.stride).to_dict()
        return {**result, "seconds": time.perf_counter() - start}

    if args.phase == "evaluate":
        start = time.perf_counter()
        analog = crossbar.load(chip_file)  # the compiled model holds its tokenizer
        out["chip_file_load_seconds"] = time.perf_counter() - start
        out["rss_after_load"] = rss_bytes()
        budget, check = tokens(analog)
        with torch.no_grad():
            out["identical_to_compiled"] = bool(np.array_equal(analog(check).numpy(), np.load(logits_file)))
        out["budget"] = score(analog, budget)
        out["peak_rss"] = peak_rss_bytes()
        return out

    start = time.perf_counter()
    lm = llm.load("smollm2-135m")
    out["model_load_seconds"] = time.perf_counter() - start
    out["rss_after_load"] = rss_bytes()
    out["peak_rss_after_load"] = peak_rss_bytes()
    out["float_model_bytes"] = sum(p.numel() * p.element_size() for p in lm.parameters())
    budget, check = tokens(lm)

    if args.phase == "float":
        out["budget"] = score(lm, budget)
    elif args.phase == "compile":
        programming = Stopwatch(device.ProgrammingStream, "program")
        chip = crossbar.ChipConfig.preset("default").replace(wires=no_wires)
        start = time.perf_counter()
        analog = crossbar.compile(lm, chip, seed=0)
        out["compile_seconds"] = time.perf_counter() - start
        out["programming_seconds"] = programming.seconds
        out["programming_parts"] = programming.calls
        out["rss_after_compile"] = rss_bytes()
        out["peak_rss_after_compile"] = peak_rss_bytes()
        report = crossbar.report(analog).to_dict()
        out["analog_tiles"] = report["analog_tiles"]
        start = time.perf_counter()
        header = crossbar.save(analog, chip_file)
        out["chip_file_save_seconds"] = time.perf_counter() - start
        out["chip_file_bytes"] = chip_file.stat().st_size
        out["chip_file_payload_bytes"] = header["payload_bytes"]
        out["peak_rss_after_save"] = peak_rss_bytes()
        with torch.no_grad():
            np.save(logits_file, analog(check).numpy())
    else:  # irdrop_block, irdrop_model: block 0 or the whole model on the default chip, IR drop included
        solves = Stopwatch(irdrop, "effective_conductance")
        programming = Stopwatch(device.ProgrammingStream, "program")
        whole = args.phase == "irdrop_model"
        start = time.perf_counter()
        model = lm if whole else lm.model.model.layers[0]
        compiled = crossbar.compile(model, crossbar.ChipConfig.preset("default"), seed=0)
        out["compile_seconds" if whole else "block_compile_seconds"] = time.perf_counter() - start
        out["irdrop_seconds"] = solves.seconds  # summed over the threads compile runs the solves on
        out["irdrop_arrays"] = solves.calls
        out["programming_seconds"] = programming.seconds
        out["analog_tiles"] = crossbar.report(compiled).to_dict()["analog_tiles"]
        out["threads"] = args.threads
        if whole:  # the first forwards after compile: the budget's perplexity with IR drop
            out["peak_rss_after_compile"] = peak_rss_bytes()
            out["budget"] = score(compiled, budget)
    out["peak_rss"] = peak_rss_bytes()
    return out


def child(args: argparse.Namespace, phase: str) -> dict:
    """Run one phase in a fresh process; its JSON comes back on the last line of its standard output."""
    command = [sys.executable, __file__, "--phase", phase, "--workdir", str(args.workdir), "--threads",
               str(args.threads), "--tokens", str(args.tokens), "--window", str(args.window), "--stride",
               str(args.stride), "--check-tokens", str(args.check_tokens)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall_seconds": time.perf_counter() - start, "loadavg_end": os.getloadavg()}


def summarise(result: dict) -> dict:
    """Ratios against the float model (its bytes, and its process peak) and the extrapolated IR-drop compile."""
    phases, summary = result["phases"], {}
    float_bytes = next((p["float_model_bytes"] for p in phases.values() if "float_model_bytes" in p), None)
    float_peak = phases.get("float", {}).get("peak_rss_after_load")
    if "float" in phases:
        float_peak = max(phases["float"]["peak_rss"], float_peak)
        summary["float_process_peak_bytes"] = float_peak
    for name in ("compile", "evaluate"):
        if name in phases and float_bytes:
            peak = phases[name]["peak_rss"]
            summary[f"{name}_peak_over_float_bytes"] = peak / float_bytes
            summary[f"{name}_peak_minus_imports_over_float_bytes"] = (
                peak - phases[name]["rss_after_imports"]
            ) / float_bytes
            if float_peak:
                summary[f"{name}_peak_over_float_process_peak"] = peak / float_peak
    if "irdrop_block" in phases and "compile" in phases:
        block, whole = phases["irdrop_block"], phases["compile"]
        per_array = block["irdrop_seconds"] / block["irdrop_arrays"]
        arrays = 2 * whole["analog_tiles"]  # a differential pair: one array per device
        summary["irdrop_seconds_per_array"] = per_array
        summary["irdrop_share_of_block_compile"] = block["irdrop_seconds"] / block["block_compile_seconds"]
        summary["whole_model_arrays"] = arrays
        summary["whole_model_irdrop_compile_seconds_extrapolated"] = whole["compile_seconds"] + per_array * arrays
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threading = configure_threads(args.threads, "passive")
    if args.phase is not None:
        print(json.dumps(run_phase(args)), flush=True)
        return 0
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result["machine"] = machine_info(threading)
    result["baseline_note"] = "float = the publisher's Q4_1 GGUF dequantized to float32 by transformers"
    result.setdefault("phases", {})
    with tempfile.TemporaryDirectory() as folder:
        args.workdir = args.workdir or Path(folder)
        for phase in PHASES:
            if phase in args.phases:
                result["phases"][phase] = child(args, phase)
                result["summary"] = summarise(result)
                print(phase, json.dumps(result["phases"][phase]), flush=True)
                write_json_atomic(args.out, result)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
