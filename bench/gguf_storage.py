"""The embedded GGUF model converted into a fresh cache: file sizes (GGUF, stored conversion) and the
time of the first conversion and of a later load. Usage: python bench/gguf_storage.py"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    os.environ["ALDSL_CACHE"] = tempfile.mkdtemp(prefix="aldsl-gguf-")
    from aldsl.backends import ModelSpec, load_backend
    from aldsl.backends.registry import embedded_gguf, resolve_model

    gguf = embedded_gguf("smollm2-135m")
    start = time.perf_counter()
    resolved = resolve_model("smollm2-135m")
    converted = time.perf_counter() - start
    stored = sum(p.stat().st_size for p in Path(resolved.path).iterdir() if p.is_file())
    start = time.perf_counter()
    backend = load_backend(ModelSpec(name="smollm2-135m"))
    loaded = time.perf_counter() - start
    dtype = next(backend.model.parameters()).dtype
    print(f"gguf {gguf.stat().st_size / 2**20:.0f} MiB -> stored {stored / 2**20:.0f} MiB "
          f"({resolved.path.name}); conversion {converted:.1f} s, later load {loaded:.1f} s, compute dtype {dtype}")


if __name__ == "__main__":
    main()
