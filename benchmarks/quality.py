"""Validation loss per unit of wall-clock: textgen against the two reference recipes.

Usage:
  python benchmarks/quality.py --budget 300 [--budget 1800] [--skip-anchors]
         [--textgen "--layers 2 --units 256" ...]
  python benchmarks/quality.py --suite [--budget 300] [--only plays-1m ...] [--suite-quick]

--suite trains on every corpus of `suite.py` (plays slices, the whole plays, Russian, Python
source; built from installed packages, never downloaded) and prints one table: textgen's
defaults against the better reference recipe, the ratio, and whether the target (15% lower)
is met. --suite-quick shrinks every corpus to 20,000 characters (a smoke test of the script).

Runs, one after another in this process' machine, `textgen train shakespeare --time-limit B`
(each --textgen option set is one row) and `anchors.py train keras_example|tf_tutorial
CORPUS --budget B`. Everyone is scored on the same text: the first 100,000 characters of
the validation split (the last 10% of the corpus, nanoGPT's shakespeare_char convention).
Prints one table: validation nats/char and bpc, characters seen, training chars/s.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from common import textgen
from suite import SUITE, TARGET, build_suite, suite_table

HERE = Path(__file__).resolve().parent
ANCHORS = HERE.parents[1] / "shared" / "benchmarks" / "anchors.py"
VAL_CHARS = 100_000


def run_textgen(budget: float, options: str, checkpoints: Path, corpus: str | Path = "shakespeare",
                prefix: str = "", val_chars: int = VAL_CHARS) -> dict:
    name = f"{prefix}q{int(budget)}-" + "".join(c if c.isalnum() else "_" for c in options)[:60]
    out = textgen("train", corpus, "--run", name, "--checkpoints", checkpoints, "--time-limit", budget,
                  "--eval-chars", val_chars, "--json", *shlex.split(options))
    if out.returncode != 0:
        return {"approach": f"textgen {options}", "error": out.stderr.strip().splitlines()[-1:]}
    s = json.loads(out.stdout)
    state = json.loads((checkpoints / name / "run.json").read_text())
    summary = {k: s.get(k) for k in ("stopped", "stop_reason", "step", "epoch", "best_val_loss")}
    curve = [(r["chars_seen"], round(r["val_loss"], 4)) for r in
             json.loads(sorted((checkpoints / name).glob("ckpt-*/state.json"))[-1].read_text())["history"]]
    return {"approach": f"textgen {options or '(defaults)'}", "budget_s": budget, "val_nats": s["val_loss"],
            "val_bpc": s["val_bpc"], "chars_seen": s["chars_seen"], "chars_per_s": s["chars_per_second"],
            "params": s["parameters"], "model": state["model"], "chosen": state.get("chosen"),
            "summary": summary, "curve": curve}


def run_anchor(approach: str, budget: float, corpus: Path, val_chars: int = VAL_CHARS) -> dict:
    cmd = [sys.executable, str(ANCHORS), "train", approach, str(corpus), "--budget", str(budget),
           "--val-chars", str(val_chars)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"approach": approach, "error": out.stderr.strip().splitlines()[-1:]}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"approach": approach, "budget_s": budget, "val_nats": r["val_nats"], "val_bpc": r["val_bpc"],
            "chars_seen": None, "chars_per_s": None, "wall_s": r["wall_s"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, action="append")
    ap.add_argument("--textgen", action="append", help="extra textgen train options for one row")
    ap.add_argument("--skip-anchors", action="store_true")
    ap.add_argument("--checkpoints", default=None)
    ap.add_argument("--suite", action="store_true", help="every corpus of the suite at one --budget (default 300)")
    ap.add_argument("--only", action="append", choices=list(SUITE), help="with --suite: only these corpora")
    ap.add_argument("--suite-quick", action="store_true", help="with --suite: 20,000-character corpora (smoke test)")
    ap.add_argument("--workdir", default=None, help="with --suite: where the corpora and runs go")
    a = ap.parse_args()
    if a.suite:
        return run_suite(a)
    budgets = a.budget or [300.0, 1800.0]
    options = a.textgen or [""]
    sys.path.insert(0, str(HERE.parent))
    from textgen.catalog import resolve

    corpus = resolve("shakespeare")[0]
    checkpoints = Path(a.checkpoints or tempfile.mkdtemp(prefix="quality-"))
    rows = []
    for budget in budgets:
        for opt in options:
            rows.append(run_textgen(budget, opt, checkpoints))
            print(json.dumps(rows[-1]), flush=True)
        if not a.skip_anchors:
            for approach in ("keras_example", "tf_tutorial"):
                rows.append(run_anchor(approach, budget, corpus))
                print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"{'budget':>7}  {'approach':<44}{'val nats':>9}{'val bpc':>9}{'chars seen':>12}{'chars/s':>9}")
    for r in rows:
        if "error" in r:
            print(f"{'':>7}  {r['approach']:<44} error: {r['error']}")
            continue
        seen = f"{r['chars_seen']:,}" if r.get("chars_seen") else "-"
        cps = f"{r['chars_per_s']:,.0f}" if r.get("chars_per_s") else "-"
        print(f"{r['budget_s']:>6.0f}s  {r['approach']:<44}{r['val_nats']:>9.4f}{r['val_bpc']:>9.4f}{seen:>12}{cps:>9}")
    for budget in budgets:
        ours = [r for r in rows if r.get("budget_s") == budget and r["approach"].startswith("textgen") and "val_nats" in r]
        refs = [r for r in rows if r.get("budget_s") == budget and not r["approach"].startswith("textgen") and "val_nats" in r]
        if ours and refs:
            best_ref = min(refs, key=lambda r: r["val_nats"])
            best = min(ours, key=lambda r: r["val_nats"])
            print(f"{budget:.0f}s: best textgen {best['val_nats']:.4f} vs best recipe {best_ref['approach']} "
                  f"{best_ref['val_nats']:.4f}: {100 * (1 - best['val_nats'] / best_ref['val_nats']):.1f}% lower")


def run_suite(a) -> None:
    budget = (a.budget or [300.0])[0]
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="quality-suite-"))
    corpora = build_suite(workdir / "corpora", a.only or list(SUITE), quick=a.suite_quick)
    rows = []
    for name, info in corpora.items():
        print(json.dumps({"corpus": name, **{k: v for k, v in info.items() if k != "path"}}), flush=True)
        # Everyone scores the same characters: at most VAL_CHARS of the validation tail, a whole
        # number of the tf_tutorial recipe's 101-character windows (it reshapes them exactly).
        val_chars = min(VAL_CHARS, (info["chars"] - int(info["chars"] * 0.9)) // 101 * 101)
        ours = run_textgen(budget, " ".join(a.textgen or []), workdir / "checkpoints", info["path"], f"{name}-",
                           val_chars)
        print(json.dumps(ours), flush=True)
        refs = [] if a.skip_anchors else [run_anchor(approach, budget, info["path"], val_chars)
                                          for approach in ("keras_example", "tf_tutorial")]
        for ref in refs:
            print(json.dumps(ref), flush=True)
        rows.append({"corpus": name, "chars": info["chars"], "val_chars": val_chars, "textgen": ours, "recipes": refs})
    print()
    print(f"budget {budget:g} s per run; validation = at most the first {VAL_CHARS:,} characters of each "
          f"corpus' last 10%; target: textgen at least {TARGET:.0%} lower (nats/char) than the better recipe")
    print(suite_table(rows))
    (workdir / "suite.json").write_text(json.dumps({"budget_s": budget, "rows": rows}, indent=1))
    print(f"\nrows and curves: {workdir / 'suite.json'}")


if __name__ == "__main__":
    main()
