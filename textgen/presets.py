"""Model size presets for `textgen train --size` (the one place their numbers live).

Tests and benchmarks read `PRESETS` rather than repeating the numbers, so changing a preset
here changes what they check and measure.
"""

from __future__ import annotations

PRESETS: dict = {
    "small": dict(num_layers=1, units=256, embedding_dim=64),
    "medium": dict(num_layers=2, units=256, embedding_dim=64),
    "large": dict(num_layers=2, units=512, embedding_dim=64),
}


def preset(name: str) -> dict:
    """The model options of preset `name` (a copy), or a ConfigError naming the choices."""
    if name not in PRESETS:
        from textgen.errors import ConfigError

        raise ConfigError(f"size must be one of {', '.join(PRESETS)}. Received: size={name!r}")
    return dict(PRESETS[name])
