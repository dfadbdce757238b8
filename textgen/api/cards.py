"""The cards a notebook shows for a `Run` and a `Model`: a few figures, the validation curve as
inline SVG, and a short sample. Every string from a run (its name, corpus, sample) is escaped:
a card shows text, never markup from a run directory.
"""

from __future__ import annotations

import html
import math
import re

from textgen.summary import describe

STYLE = ("font-family:system-ui,sans-serif;font-size:13px;border:1px solid #ccc;border-radius:6px;"
         "padding:8px 12px;max-width:560px")


def run_figures(info: dict, state: dict) -> dict:
    """Size, corpus, step, validation bpc and the curve [(step, val_bpc)] of a run's checkpoint state."""
    figures = describe(info, state)
    corpus = info.get("corpus") or {}
    curve = [(r["step"], r.get("val_bpc", r["val_loss"] / math.log(2)))
             for r in state.get("history", []) if isinstance(r, dict) and "val_loss" in r and "step" in r]
    return {"size": f"{figures['layers']}x{figures['units']}", "parameters": figures["parameters"],
            "corpus": corpus.get("name"), "corpus_characters": corpus.get("characters"),
            "step": state.get("step", 0), "val_bpc": figures["val_bpc"], "best_val_bpc": figures["best_val_bpc"],
            "curve": curve}


def curve_svg(points: list, width: int = 320, height: int = 84) -> str:
    """The validation bpc against the step as a small inline SVG line (empty without two points):
    a caption above, the first and last steps below, the latest value beside the line's end."""
    points = [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if len(points) < 2:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_span, y_span = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    left, right, top, bottom = 4, width - 70, 18, height - 18  # the plot area; labels outside it
    placed = [(left + (x - min(xs)) / x_span * (right - left), top + (max(ys) - y) / y_span * (bottom - top))
              for x, y in points]
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in placed)
    end_x, end_y = placed[-1]
    grey = 'font-size="10" fill="#666"'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="validation bits per character by step" style="display:block;margin-top:6px">'
            f'<text x="{left}" y="10" {grey}>validation bits per character (max {max(ys):.3f})</text>'
            f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#ddd"/>'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{coords}"/>'
            f'<circle cx="{end_x:.1f}" cy="{end_y:.1f}" r="2.5" fill="#1f77b4"/>'
            f'<text x="{end_x + 6:.1f}" y="{end_y + 4:.1f}" font-size="11" fill="#1f77b4">{ys[-1]:.3f}</text>'
            f'<text x="{left}" y="{height - 4}" {grey}>step {min(xs):,.0f}</text>'
            f'<text x="{right}" y="{height - 4}" {grey} text-anchor="end">{max(xs):,.0f}</text></svg>')


# Inline styles on every cell: Jupyter's own table styles (right-aligned cells, striped rows) lose to them.
CELL = "text-align:left;border:none;padding:1px 12px 1px 0"


def _row(label: str, value) -> str:
    return (f'<tr style="background:none"><td style="{CELL};color:#666">{html.escape(label)}</td>'
            f'<td style="{CELL}">{html.escape(str(value))}</td></tr>')


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def card(title: str, subtitle: str, figures: dict, sample: str = "") -> str:
    """An HTML card: title, figures, curve and an optional sample, all text escaped."""
    corpus = figures.get("corpus")
    if figures.get("corpus_characters"):
        corpus = f"{corpus} ({figures['corpus_characters']:,} characters)"
    rows = [_row("size", f"{figures['size']} · {_number(figures['parameters'], ',')} parameters"),
            _row("corpus", corpus), _row("step", f"{figures['step']:,}"),
            _row("val bpc", f"{_number(figures['val_bpc'], '.4f')} (best {_number(figures['best_val_bpc'], '.4f')})")]
    parts = [f'<div class="textgen-card" style="{STYLE}">',
             f"<b>{html.escape(title)}</b> <span style=\"color:#666\">{html.escape(subtitle)}</span>",
             f'<table style="border-collapse:collapse;margin:4px 0 0">{"".join(rows)}</table>',
             curve_svg(figures.get("curve", []))]
    if sample:
        parts.append('<div style="color:#666;font-size:10px;margin-top:6px">a short sample</div>'
                     '<pre style="white-space:pre-wrap;background:#f6f6f6;padding:6px;margin:2px 0 0">'
                     f"{html.escape(sample)}</pre>")
    parts.append("</div>")
    return "".join(parts)


def model_card(name: str, checkpoint: str, figures: dict, sample: str) -> str:
    """The card of a `Model`: its run's figures at the loaded checkpoint and a short sample."""
    return card(f"textgen.Model {name}", checkpoint, figures, sample)


def run_card(name: str, stopped: str | None, figures: dict) -> str:
    """The card of a `Run`: its figures at the latest checkpoint and why it stopped (without the stop
    reason's "(best <loss> at step N)": that loss is in nats, the card's figures give it in bpc)."""
    return card(f"textgen.Run {name}", re.sub(r"\s*\(best [^()]*\)$", "", stopped or ""), figures)


class ShadedText:
    """A sample with each character's log-probability under the model (temperature 1); in a
    notebook each character is shaded as the playground shades it (one step per bit of surprise).

    Example:
        >>> shaded = model.shaded("ROMEO:", length=80, seed=1)
        >>> shaded.text, shaded.logprobs[:3]
        >>> shaded   # in Jupyter: the text, the unlikely characters darker
    """

    def __init__(self, prime: str, chars: list, logprobs: list):
        self.prime = prime
        self.chars = chars
        self.logprobs = logprobs

    @property
    def text(self) -> str:
        """The generated text (without the prime)."""
        return "".join(self.chars)

    def _repr_html_(self) -> str:
        spans = []
        for char, logprob in zip(self.chars, self.logprobs):
            level = min(8, round(-logprob / math.log(2)))
            spans.append(f'<span title="p={math.exp(logprob):.3f}" style="background:rgba(224,80,60,{level / 10:.1f})">'
                         f"{html.escape(char)}</span>")
        return (f'<pre class="textgen-shaded" style="white-space:pre-wrap">{html.escape(self.prime)}'
                f"{''.join(spans)}</pre>")

    def __repr__(self) -> str:
        return f"ShadedText({self.prime + self.text!r})"
