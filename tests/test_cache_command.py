"""`aldsl cache info` and `aldsl cache prune` on a real cache folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

from aldsl.cli import main


def _item(path: Path, size: int, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix:  # a file
        path.write_bytes(b"x" * size)
        files = [path]
    else:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"x" * size)
        files = [path / "model.safetensors", path]
    stamp = time.time() - age_days * 86400
    for f in files:
        os.utime(f, (stamp, stamp))
    return path


def test_info_and_prune(isolated_cache, capsys):
    old_model = _item(isolated_cache / "models" / "old-model", 3000, 40)
    checkpoint = _item(isolated_cache / "artifacts" / "finetune" / "abc", 2000, 10)
    reward = _item(isolated_cache / "artifacts" / "reward" / "def", 1000, 1)
    generations = _item(isolated_cache / "generations.sqlite", 500, 60)
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    for kind in ("models", "artifacts/finetune", "artifacts/reward", "generations"):
        assert kind in out
    assert main(["cache", "prune", "--older-than", "30d", "--dry-run"]) == 0
    assert old_model.exists() and "would remove 1 item(s)" in capsys.readouterr().out
    assert main(["cache", "prune", "--older-than", "30d"]) == 0
    assert not old_model.exists() and generations.exists()  # the generation cache goes only when asked
    assert main(["cache", "prune", "--max-size", "2K"]) == 0  # 3500 bytes left: the oldest goes first
    assert not checkpoint.exists() and reward.exists()
    assert main(["cache", "prune", "--max-size", "0", "--generations"]) == 0
    assert not generations.exists() and not reward.exists()
    assert main(["cache", "prune"]) == 2 and main(["cache", "prune", "--older-than", "soon"]) == 2


def test_prune_unreferenced_checkpoints(isolated_cache, tmp_path, capsys):
    import json

    used = _item(isolated_cache / "artifacts" / "finetune" / "used", 100, 0)
    stale = _item(isolated_cache / "artifacts" / "finetune" / "stale", 100, 0)
    reward = _item(isolated_cache / "artifacts" / "reward" / "r1", 100, 0)
    report = tmp_path / "build" / "prog" / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"artifacts": ["finetune/used", "reward/r1"]}))
    assert main(["cache", "prune", "--unreferenced", str(tmp_path / "build")]) == 0
    assert used.exists() and reward.exists() and not stale.exists()
    assert "removed 1 item(s)" in capsys.readouterr().out
    assert main(["cache", "prune", "--unreferenced", str(tmp_path / "nowhere")]) == 2
