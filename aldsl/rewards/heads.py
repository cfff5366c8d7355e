"""Small reward heads on fixed features: trained full-batch with AdamW, deterministic given a seed.

A :class:`Head` standardises its input features (mean and scale of the training set, stored with
the weights) and maps them to one reward value r on a logit scale, through a linear layer or a
one-hidden-layer MLP. Two objectives train it:

- pointwise BCE on labels in [0, 1] (ORM, PRM, discriminator: r = logit D, Eq. 5-9);
- Bradley-Terry on pairs (Eq. 4): ``-log sigmoid(r+ - r- - margin) + centering * (r+ + r-)^2``.

Plus the metrics the families report (AUC, pairwise accuracy).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

WEIGHTS = "head.pt"
CONFIG = "head.json"


@dataclass(frozen=True)
class HeadConfig:
    """Architecture and optimisation of a head (``hidden = 0``: a linear head)."""

    epochs: int = 200
    lr: float = 1e-3
    hidden: int = 64
    weight_decay: float = 1e-2
    dropout: float = 0.1
    seed: int = 0


class Head(nn.Module):
    """r(features): standardise, then linear or a one-hidden-layer MLP, to one logit."""

    def __init__(self, dim: int, hidden: int = 64, dropout: float = 0.0):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(),
                                                nn.Dropout(dropout), nn.Linear(hidden, 1))
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, 1))

    def output_bias(self) -> torch.Tensor:
        return self.net[-1].bias

    def fit_scaler(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.scale.copy_(x.std(0, unbiased=False).clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.scale).squeeze(-1)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Rewards r (logits) of a batch of feature rows, float64."""
        if len(features) == 0:
            return np.zeros(0)
        self.eval()
        with torch.inference_mode():
            return self(torch.as_tensor(np.asarray(features), dtype=torch.float32)).double().numpy()


def bt_loss(r_pos: torch.Tensor, r_neg: torch.Tensor, margin: float = 0.0, centering: float = 0.0) -> torch.Tensor:
    """Mean Bradley-Terry loss of pairs: -log sigmoid(r+ - r- - margin) + centering * (r+ + r-)^2."""
    loss = -nn.functional.logsigmoid(r_pos - r_neg - margin)
    if centering:
        loss = loss + centering * (r_pos + r_neg) ** 2
    return loss.mean()


def _new_head(dim: int, config: HeadConfig) -> Head:
    torch.manual_seed(config.seed)
    return Head(dim, config.hidden, config.dropout)


def _optimise(head: Head, config: HeadConfig, loss_fn) -> list[float]:  # loss_fn: () -> scalar tensor
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    head.train()
    for _ in range(config.epochs):
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    head.eval()
    return losses


def train_pointwise(features: np.ndarray, labels: Sequence[float], config: HeadConfig) -> tuple[Head, list[float]]:
    """A head fitted by class-balanced BCE to labels in [0, 1] (>= 0.5 is the positive class).

    Balancing lets rare positives shape the head; afterwards the output bias is shifted by the
    log of the balancing ratio, so sigmoid(r) estimates P(positive) under the data's own prior.
    """
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    positive = min(max(float((y >= 0.5).float().mean()) if len(y) else 0.5, 1e-3), 1 - 1e-3)
    w = torch.where(y >= 0.5, 0.5 / positive, 0.5 / (1 - positive))
    with torch.random.fork_rng(devices=[]):
        head = _new_head(x.shape[1], config)
        head.fit_scaler(x)
        losses = _optimise(head, config, lambda: (nn.functional.binary_cross_entropy_with_logits(
            head(x), y, reduction="none") * w).sum() / w.sum())
    with torch.no_grad():  # the balanced optimum is logit P + log((1 - p) / p)
        head.output_bias().sub_(math.log((1 - positive) / positive))
    return head, losses


def train_pairwise(chosen: np.ndarray, rejected: np.ndarray, config: HeadConfig, margin: float = 0.0,
                   centering: float = 0.0) -> tuple[Head, list[float]]:
    """A head fitted by the Bradley-Terry loss to pairs (row i of ``chosen`` preferred to row i of ``rejected``)."""
    pos = torch.as_tensor(chosen, dtype=torch.float32)
    neg = torch.as_tensor(rejected, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        head = _new_head(pos.shape[1], config)
        head.fit_scaler(torch.cat([pos, neg]))
        losses = _optimise(head, config, lambda: bt_loss(head(pos), head(neg), margin, centering))
    return head, losses


# ---------------------------------------------------------------- persistence
def save_head(head: Head, folder: Path) -> None:
    torch.save(head.state_dict(), folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps({"dim": head.dim, "hidden": head.hidden}), encoding="utf-8")


def load_head(folder: Path) -> Head:
    """The head saved in ``folder``; raises on a missing, truncated or mismatched file."""
    shape = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    head = Head(int(shape["dim"]), int(shape["hidden"]))
    head.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    head.eval()
    return head


# ---------------------------------------------------------------- metrics
def auc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """ROC AUC of scores against binary labels (>= 0.5 is positive); NaN when one class is missing."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64) >= 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks of ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pairwise_accuracy(r_chosen: Sequence[float], r_rejected: Sequence[float]) -> float:
    """Fraction of pairs whose chosen response gets the higher reward (ties count half)."""
    a, b = np.asarray(r_chosen, dtype=np.float64), np.asarray(r_rejected, dtype=np.float64)
    if len(a) == 0:
        return float("nan")
    return float(((a > b) + 0.5 * (a == b)).mean())
