"""Validation loss per unit of wall-clock: textgen against the two reference recipes.

Usage:
  python benchmarks/quality.py --budget 300 [--budget 1800] [--skip-anchors]
         [--textgen "--layers 2 --units 256" ...]

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

HERE = Path(__file__).resolve().parent
ANCHORS = HERE.parents[1] / "shared" / "benchmarks" / "anchors.py"
VAL_CHARS = 100_000


def run_textgen(budget: float, options: str, checkpoints: Path) -> dict:
    name = f"q{int(budget)}-" + "".join(c if c.isalnum() else "_" for c in options)[:60]
    out = textgen("train", "shakespeare", "--run", name, "--checkpoints", checkpoints, "--time-limit", budget,
                  "--eval-chars", VAL_CHARS, "--json", *shlex.split(options))
    if out.returncode != 0:
        return {"approach": f"textgen {options}", "error": out.stderr.strip().splitlines()[-1:]}
    s = json.loads(out.stdout)
    state = json.loads((checkpoints / name / "run.json").read_text())
    curve = [(r["chars_seen"], round(r["val_loss"], 4)) for r in
             json.loads(sorted((checkpoints / name).glob("ckpt-*/state.json"))[-1].read_text())["history"]]
    return {"approach": f"textgen {options or '(defaults)'}", "budget_s": budget, "val_nats": s["val_loss"],
            "val_bpc": s["val_bpc"], "chars_seen": s["chars_seen"], "chars_per_s": s["chars_per_second"],
            "params": s["parameters"], "model": state["model"], "curve": curve}


def run_anchor(approach: str, budget: float, corpus: Path) -> dict:
    cmd = [sys.executable, str(ANCHORS), "train", approach, str(corpus), "--budget", str(budget),
           "--val-chars", str(VAL_CHARS)]
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
    a = ap.parse_args()
    budgets = a.budget or [300.0, 1800.0]
    options = a.textgen or [""]
    sys.path.insert(0, str(HERE.parent))
    from textgen.named import resolve

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


if __name__ == "__main__":
    main()
