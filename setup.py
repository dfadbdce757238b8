"""Builds textgen's compiled sampling step (textgen/generation/_kernel.c); everything else is in pyproject.toml.

The step is built as plain shared libraries, not Python modules: `_kernel.<variant>.so` beside
the source, one per variant of the same file, loaded with ctypes by textgen/generation/kernel.py,
which picks the best variant the CPU runs when it loads (nothing is compiled for the build
machine only: a wheel built on an AVX-512 machine runs on an AVX2-only or older one). On x86-64
with gcc or clang the variants are the psABI levels x86-64 (baseline), x86-64-v3 (AVX2, FMA)
and x86-64-v4 (AVX-512); elsewhere one "generic" build. Each is stamped with a hash of the
source (TG_SOURCE_HASH), and kernel.py refuses a build whose stamp is not the hash of the
_kernel.c it ships: a stale in-place build is never used.

The build is optional: where no C compiler is found, or the compiler rejects a variant's
flags, the install goes on without it and textgen samples with its numpy step (the same numbers
within float rounding, slower: benchmarks/README_sampling.md). `textgen info` says which one
is in use.
"""

import hashlib
import os
import platform
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE = "textgen/generation/_kernel.c"
STAMP = hashlib.sha256((Path(__file__).parent / SOURCE).read_bytes()).hexdigest()[:16]  # as kernel.py's source_hash
SUFFIX = ".dll" if sys.platform == "win32" else ".so"


def variants() -> dict:
    """{variant: compiler flags}."""
    if sys.platform == "win32":
        return {"generic": []}
    flags = ["-O3", "-std=gnu11", "-ffp-contract=fast", "-pthread", "-fvisibility=hidden", "-Wno-psabi"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        return {level: [*flags, f"-march={level}"] for level in ("x86-64", "x86-64-v3", "x86-64-v4")}
    return {"generic": flags}


class BuildKernel(build_ext):
    """build_ext that names each variant `_kernel.<variant>.so` and links it as a plain library:
    the dot keeps it from being taken for a module (`import`, pkgutil), and there is no PyInit
    to export (Python's own libraries are not linked)."""

    def build_extensions(self):
        self.parallel = 0  # one variant at a time: each compiles the same source (see build_extension)
        super().build_extensions()

    def build_extension(self, ext):
        temp = self.build_temp  # each variant's object file in its own folder, not all as one _kernel.o
        self.build_temp = os.path.join(temp, getattr(ext, "variant", ""))
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = temp

    def get_ext_filename(self, fullname):
        ext = self.ext_map.get(fullname)  # setuptools maps both the full and the last name
        if ext is None or not hasattr(ext, "variant"):
            return super().get_ext_filename(fullname)
        return os.path.join(*fullname.split(".")[:-1], f"_kernel.{ext.variant}{SUFFIX}")

    def get_export_symbols(self, ext):
        return ext.export_symbols

    def get_libraries(self, ext):
        return ext.libraries


def extension(variant: str, flags: list) -> Extension:
    ext = Extension(f"textgen.generation._kernel_{variant.replace('-', '_')}", [SOURCE],
                    depends=["setup.py"],  # new flags rebuild it too
                    define_macros=[("TG_SOURCE_HASH", f'"{STAMP}"'), ("TG_VARIANT", f'"{variant}"')],
                    extra_compile_args=flags, extra_link_args=["-pthread"] if flags else [],
                    libraries=["m"] if flags else [], optional=True)
    ext.variant = variant
    return ext


setup(ext_modules=[extension(variant, flags) for variant, flags in variants().items()],
      cmdclass={"build_ext": BuildKernel})
