"""Builds textgen's compiled sampling step (textgen/generation/_kernel.c); everything else is in pyproject.toml.

The extension is optional: where no C compiler is found, or the compiler rejects the flags,
the install goes on and textgen samples with its numpy step (the same numbers within float
rounding, slower: benchmarks/README_sampling.md). `textgen info` says which one is in use.
"""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-std=gnu11", "-march=native", "-ffp-contract=fast", "-pthread"]
setup(ext_modules=[Extension("textgen.generation._kernel", ["textgen/generation/_kernel.c"], extra_compile_args=flags,
                             extra_link_args=[] if sys.platform == "win32" else ["-pthread", "-lm"], optional=True)])
