"""`--format html`: one self-contained page that samples from the run in plain JavaScript.

The page is page/template.html with page/style.css, page/model.js and page/ui.js inlined,
the metadata as JSON and the weights as one base64 blob: no library, no CDN, no network.
Its Content-Security-Policy forbids any fetch and lets run only the page's own script and
style, named by their SHA-256 (no 'unsafe-inline': nothing injected into the page could run).
Blob layout: the tensors one after another, each starting on a 4-byte boundary, as described
by `meta["tensors"]` (name, shape, dtype, offset, and for int8 the offset of its float32
scales, one per row).
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import json
import re
from pathlib import Path

import numpy as np

from textgen.export.model_arrays import ModelArrays, quantise

PAGE = Path(__file__).with_name("page")


def _blob(arrays: ModelArrays, precision: str) -> tuple[bytes, list]:
    stored, _ = quantise(arrays, precision)
    pieces, entries, offset = [], [], 0

    def add(raw: bytes) -> int:
        nonlocal offset
        at = offset
        padding = (-len(raw)) % 4
        pieces.append(raw + b"\0" * padding)
        offset += len(raw) + padding
        return at

    biases = {f"bias_{i}": arrays.biases[i] for i in range(arrays.num_layers)}
    biases["out_bias"] = arrays.out_bias
    for name, quantised in stored.items():
        data = np.ascontiguousarray(quantised.data)
        entry = {"name": name, "shape": list(data.shape), "dtype": data.dtype.name,
                 "offset": add(data.astype(data.dtype.newbyteorder("<")).tobytes())}
        if quantised.scales is not None:
            entry["scales_offset"] = add(np.ascontiguousarray(quantised.scales, "<f4").tobytes())
        entries.append(entry)
    for name, bias in biases.items():
        entries.append({"name": name, "shape": list(bias.shape), "dtype": "float32",
                        "offset": add(np.ascontiguousarray(bias, "<f4").tobytes())})
    return b"".join(pieces), entries


def page(arrays: ModelArrays, precision: str = "float32", step: int = 0) -> str:
    """The whole HTML page for `arrays` with weights stored in `precision`."""
    blob, entries = _blob(arrays, precision)
    meta = dict(arrays.metadata(), precision=precision, embedding_dim=int(arrays.embedding.shape[1]),
                tensors=entries, weights_bytes=len(blob), step=int(step))
    meta_json = json.dumps(meta, ensure_ascii=False).replace("<", "\\u003c").replace("&", "\\u0026")
    # Exactly the text the browser will hash: no "</script" inside, line ends as the parser leaves them.
    script = "\n".join((PAGE / name).read_text(encoding="utf-8") for name in ("model.js", "ui.js"))
    script = script.replace("\r\n", "\n").replace("</script", "<\\/script")
    style = (PAGE / "style.css").read_text(encoding="utf-8").replace("\r\n", "\n").replace("</style", "<\\/style")
    parts = {
        "__TITLE__": html_lib.escape(arrays.run),
        "__CSP__": csp(script, style),
        "__STYLE__": style,
        "__SCRIPT__": script,
        "__META__": meta_json,
        "__WEIGHTS__": base64.b64encode(blob).decode("ascii"),
    }
    text = (PAGE / "template.html").read_text(encoding="utf-8")
    # One pass over the template, so a marker inside an inserted part is never replaced.
    return re.sub("|".join(parts), lambda m: parts[m.group(0)], text)


def csp(script: str, style: str) -> str:
    """The page's policy: no network, and only this `script` and `style` (the elements' exact text) run."""
    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"

    return (f"default-src 'none'; script-src {digest(script)}; style-src {digest(style)}; img-src data:; "
            "base-uri 'none'; form-action 'none'")
