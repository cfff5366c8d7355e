"""What the benchmarks write next to their figures: the machine they ran on, and marked sections
(``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->``) of Markdown files such as bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def machine() -> str:
    """CPU (and whether it computes bf16 natively), cores, load average (now, at the end of a run), Python,
    torch and its threads, GPU, date."""
    import datetime

    import torch

    from aldsl.backends.torch_utils import native_bf16

    load = f", load average {os.getloadavg()[0]:.1f} at the end" if hasattr(os, "getloadavg") else ""
    gpu = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only"
    bf16 = "native bf16 (AMX)" if native_bf16("cpu") else "no native bf16 (fp32)"
    return (f"{datetime.date.today()}, {platform.processor() or platform.machine()} ({bf16}), {os.cpu_count()} CPU cores{load}, "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}")


def write_section(path: Path, name: str, body: str, *, append: bool = True) -> None:
    """Replace the section ``name`` of ``path`` with ``body``; where it has none, append one (or, with
    ``append = False``, leave the file as it is)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n{body}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    elif append:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        return
    path.write_text(text, encoding="utf-8")
