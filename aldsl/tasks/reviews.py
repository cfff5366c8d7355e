"""Seeded "write a positive review" prompts; the evaluator is ``sentiment`` (VADER)."""

from __future__ import annotations

import itertools
import random
from typing import Any

BRANDS = (
    "Acme", "Northwind", "Bluebird", "Summit", "Evergreen", "Nimbus", "Harbor", "Pioneer",
    "Maple", "Orbit", "Cedar", "Lumen", "Kestrel", "Vantage", "Juniper",
)
QUALITIES = (
    "wireless", "stainless steel", "compact", "ergonomic", "waterproof", "lightweight", "bamboo",
    "cordless", "foldable", "insulated", "solar-powered", "ceramic", "portable", "noise-cancelling",
    "rechargeable", "leather", "cast iron", "smart", "adjustable", "organic cotton",
)
ITEMS = (
    "headphones", "water bottle", "desk lamp", "backpack", "coffee grinder", "office chair",
    "cutting board", "phone charger", "yoga mat", "rain jacket", "blender", "bluetooth speaker",
    "frying pan", "travel mug", "keyboard", "running shoes", "tent", "toaster", "bed sheets",
    "electric toothbrush", "bike light", "wall clock", "notebook", "umbrella", "hiking boots",
)


def make_reviews(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` records ``id, product, prompt`` for distinct seeded products."""
    combos = list(itertools.product(BRANDS, QUALITIES, ITEMS))
    if n > len(combos):
        raise ValueError(f"at most {len(combos)} distinct products, asked for {n}")
    chosen = random.Random(seed).sample(combos, n)
    records = []
    for i, (brand, quality, item) in enumerate(chosen):
        product = f"the {brand} {quality} {item}"
        records.append(
            {"id": f"review-{seed}-{i:04d}", "product": product,
             "prompt": f"Write a short positive review of {product}."}
        )
    return records
