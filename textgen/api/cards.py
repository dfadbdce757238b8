"""The cards a notebook shows for a `Run` and a `Model`: a few figures, the validation curve as
inline SVG, and a short sample. Every string from a run (its name, corpus, sample) is escaped:
a card shows text, never markup from a run directory.
"""

from __future__ import annotations

import html
import math

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


def curve_svg(points: list, width: int = 240, height: int = 60) -> str:
    """The validation bpc against the step as a small inline SVG line (empty without two points)."""
    points = [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if len(points) < 2:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_span, y_span = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    pad = 4
    coords = " ".join(f"{pad + (x - min(xs)) / x_span * (width - 2 * pad):.1f},"
                      f"{pad + (max(ys) - y) / y_span * (height - 2 * pad):.1f}" for x, y in points)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="validation bits per character by step">'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{coords}"/>'
            f'<text x="{width - pad}" y="{height - pad}" font-size="10" text-anchor="end" fill="#666">'
            f'{ys[-1]:.3f} bpc</text></svg>')


def _row(label: str, value) -> str:
    return (f'<tr><td style="color:#666;padding-right:12px">{html.escape(label)}</td>'
            f"<td>{html.escape(str(value))}</td></tr>")


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
             f"<table>{''.join(rows)}</table>", curve_svg(figures.get("curve", []))]
    if sample:
        parts.append('<pre style="white-space:pre-wrap;background:#f6f6f6;padding:6px;margin:6px 0 0">'
                     f"{html.escape(sample)}</pre>")
    parts.append("</div>")
    return "".join(parts)


def model_card(name: str, checkpoint: str, figures: dict, sample: str) -> str:
    """The card of a `Model`: its run's figures at the loaded checkpoint and a short sample."""
    return card(f"textgen.Model {name}", checkpoint, figures, sample)


def run_card(name: str, stopped: str | None, figures: dict) -> str:
    """The card of a `Run`: its figures at the latest checkpoint and why it stopped."""
    return card(f"textgen.Run {name}", stopped or "", figures)


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
