"""How the seed recipe did where each recipe was measured against it (docs/recipes.md), for the
report: a run on a preset's own recipe sees the figures on its competition, any other run every
figure of its recipe, each naming where and how it was measured."""
from __future__ import annotations

from dataclasses import dataclass

BY_PATH = "files given by path"


@dataclass(frozen=True)
class Measured:
    """One comparison on record: `recipe` and the seed recipe at the same settings."""

    recipe: str
    where: str  # the Kaggle competition or data set (data.kaggle), or BY_PATH
    settings: str
    score: str  # which accuracy: CV, or on held-out labels never chosen on
    recipe_accuracy: float
    seed_accuracy: float
    machine: str
    section: str  # docs/recipes.md's heading anchor

    def line(self) -> str:
        return (f"- {self.where}, {self.settings}: {self.recipe} {self.recipe_accuracy:.4f}, the seed recipe "
                f"{self.seed_accuracy:.4f} ({self.score}; {self.machine}; docs/recipes.md#{self.section})")


ZEN4, ZEN3 = "2-core Zen 4, bf16", "2-core Zen 3, float32"
DIGITS = "digits-in-12-and-30-minutes-the-generic-recipe-against-the-seed-recipe"
FASHION = "fashion-mnist-in-12-and-30-minutes---data-fashion_mnist"
MEASURED = (
    Measured("generic", "digit-recognizer", "fold=5 time_limit=12m on 32,000 rows", "10,000 held-out rows",
             0.9954, 0.9922, ZEN4, DIGITS),
    Measured("generic", "digit-recognizer", "fold=5 time_limit=30m on 32,000 rows", "10,000 held-out rows",
             0.9959, 0.9947, ZEN4, DIGITS),
    Measured("generic", "Kannada-MNIST", "fold=2 epochs=12 on 10,000 images", "mean CV",
             0.9922, 0.9867, ZEN3, "the-kannada-mnist-recipe"),
    Measured("generic", "Kannada-MNIST", "fold=2 epochs=3 on 10,000 images", "mean CV",
             0.9847, 0.9581, ZEN3, "the-kannada-mnist-recipe"),
    Measured("generic", BY_PATH, "Fashion-MNIST, fold=2 epochs=3 on 10,000 rows", "the 10,000 test images",
             0.8685, 0.7507, ZEN4, "how-the-generic-recipe-was-chosen"),
    Measured("fashion", "zalando-research/fashionmnist", "fold=5 time_limit=12m on 60,000 images",
             "the 10,000 test images", 0.9259, 0.8751, ZEN4, FASHION),
    Measured("fashion", "zalando-research/fashionmnist", "fold=5 time_limit=30m on 60,000 images",
             "the 10,000 test images", 0.9335, 0.9069, ZEN4, FASHION),
)


def against_seed(cfg: dict) -> list[str]:
    """The report's lines on how the seed recipe did where the recipe of run.json's resolved
    config `cfg` was measured against it; none for the seed recipe itself or one never measured."""
    name = (cfg.get("recipe") or {}).get("name")
    found = [m for m in MEASURED if m.recipe == name]
    data = cfg.get("data") or {}
    kaggle = data.get("kaggle") or {}
    elsewhere = ""
    if name in (data.get("recipe"), data.get("timed_recipe") if cfg.get("time_limit") else None):
        slug = kaggle.get("competition") or kaggle.get("dataset")
        here = [m for m in found if m.where == slug]
        elsewhere = "" if here or not slug else f" (never on {slug} itself)"
        found = here or found
    if not found:
        return []
    return ["", f"How the seed recipe did at the settings the {name} recipe was measured at{elsewhere}:", *(m.line() for m in found)]
