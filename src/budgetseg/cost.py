"""Annotation-cost model of Bellver et al. (2019) and budget planning. Pure Python, no torch.

Times in seconds per image. C = classes in the label set (background excluded), k = classes present per
image, n = objects per image. With Pascal VOC's C=20, k=1.5, n=2.8: IL 20.0, IL+C 22.22, BB 38.1, Full 239.7.
A dense label set (no background: every pixel of every image belongs to a class, as in CamVid or Cityscapes) is
painted region by region, not object by object: its full label is priced per image (CostModel.dense_s).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from budgetseg.errors import BudgetsegError

LEVELS = ("il", "ilc", "bb", "assisted", "full")
LEVEL_NAMES = {
    "il": "IL",
    "ilc": "IL+C",
    "bb": "BB",
    "assisted": "Full, assisted",
    "full": "Full",
    "none": "unlabeled",
}


@dataclass(frozen=True)
class LabelStats:
    """Dataset statistics the cost depends on."""

    classes: int  # C, background excluded
    classes_per_image: float  # k
    objects_per_image: float  # n
    dense: bool = False  # no background: a full label paints every pixel (priced per image)

    def override(
        self, classes: int | None = None, classes_per_image: float | None = None, objects_per_image: float | None = None
    ) -> LabelStats:
        """These statistics with the given (not None) figures replaced."""
        return LabelStats(
            classes if classes is not None else self.classes,
            classes_per_image if classes_per_image is not None else self.classes_per_image,
            objects_per_image if objects_per_image is not None else self.objects_per_image,
            self.dense,
        )


def check_stats(s: LabelStats, where: str = "label statistics") -> LabelStats:
    """`s` when the cost model can price with it: C a whole number >= 1, 0 <= k <= C, 0 <= n, all finite (k > C
    would make negative seconds); else a one-line error."""
    c, k, n = s.classes, s.classes_per_image, s.objects_per_image
    if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c or not 0 <= k <= c or not 0 <= n <= 1e6:
        raise BudgetsegError(
            f"{where}: need classes C >= 1, classes per image k in [0, C] and objects per image n >= 0; got C={c}, "
            f"k={k}, n={n}"
        )
    return s


VOC_STATS = LabelStats(classes=20, classes_per_image=1.5, objects_per_image=2.8)
PRESETS = {"voc": VOC_STATS}


@dataclass(frozen=True)
class CostModel:
    """Seconds an annotator spends on each elementary action (docs/cost-model.md cites each default)."""

    verify_class_s: float = 1.0  # say whether one class is present
    count_s: float = 1.48  # count the instances of one present class
    box_s: float = 7.0  # one bounding box by extreme clicking (Papadopoulos et al. 2017)
    mask_s: float = 79.0  # one instance mask drawn as a polygon (COCO's annotators)
    assisted_mask_s: float = 14.0  # one mask with an interactive segmentation assistant (SAM, assisted-manual)
    # one image of a dense label set painted whole: Cityscapes' fine annotation took "more than 1.5 h on average for
    # a single image", quality control included (Cordts et al., CVPR 2016), the one per-image figure published
    dense_s: float = 5400.0

    def seconds_per_image(self, s: LabelStats) -> dict[str, float]:
        """{"il", "ilc", "bb", "assisted", "full"} -> seconds to label one image at that level. The two mask
        levels differ only in the tool: polygons drawn by hand (full) or masks clicked out with an assistant. A
        dense label set's full label is dense_s an image, its assisted one the same share of it as an assisted
        mask is of a polygon."""
        c, k, n = s.classes, s.classes_per_image, s.objects_per_image
        il = c * self.verify_class_s
        absent = (c - k) * self.verify_class_s
        full = self.dense_s if s.dense else absent + n * self.mask_s
        assisted = self.dense_s * self.assisted_mask_s / self.mask_s if s.dense else absent + n * self.assisted_mask_s
        return {
            "il": _r(il),
            "ilc": _r(il + k * self.count_s),
            "bb": _r(absent + n * self.box_s),
            "assisted": _r(assisted),
            "full": _r(full),
        }


def _r(x: float) -> float:
    # Round away float noise (20*1.0 + 1.5*1.48 = 22.220000000000002) so tables and JSON show the paper's numbers.
    return round(x, 6)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": None}


def parse_budget(text: str, hours_per_day: float = 24.0) -> float:
    """'4d', '2.5h', '90m', '3600s' or '3600' -> seconds. A day is `hours_per_day` hours."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([smhd]?)\s*", str(text))
    if not m:
        raise BudgetsegError(f"budget {text!r}: expected a number with a unit s, m, h or d (e.g. 4d, 2.5h)")
    value, unit = float(m.group(1)), m.group(2) or "s"
    if not 0 < hours_per_day <= 24:  # NaN too
        raise BudgetsegError(f"--hours-per-day must lie in (0, 24], got {hours_per_day}")
    seconds = value * (hours_per_day * 3600.0 if unit == "d" else _UNITS[unit])
    if not seconds <= MAX_BUDGET_S:  # 1e308d would be infinite
        raise BudgetsegError(f"budget {text!r}: more than {MAX_BUDGET_S:g} s ({MAX_BUDGET_S / 3.15e7:,.0f} years)")
    return seconds


MAX_BUDGET_S = 1e12  # seconds; a larger budget is a slip, and figures derived from it would overflow


def describe_seconds(seconds: float, hours_per_day: float = 24.0) -> dict[str, float]:
    """{"seconds", "hours", "days"} of one duration."""
    return {
        "seconds": round(seconds, 3),
        "hours": round(seconds / 3600.0, 4),
        "days": round(seconds / (3600.0 * hours_per_day), 4),
    }


def images_within(budget_s: float, seconds_per_image: dict[str, float]) -> dict[str, int]:
    """How many images fit under the budget when all are labelled at one level."""
    return {lvl: int(math.floor(budget_s / s + 1e-9)) if s > 0 else 0 for lvl, s in seconds_per_image.items()}


def max_strong(budget_s: float, pool: int, full_s: float, weak_s: float = 0.0) -> int | None:
    """Largest N with N*full_s + (pool - N)*weak_s <= budget_s, 0 <= N <= pool; None if even N=0 does not fit.

    The rest of the pool (pool - N images) is labelled at the weak level (weak_s = 0 for unlabeled).
    """
    if pool < 0:
        raise BudgetsegError(f"pool size must be >= 0, got {pool}")
    if pool * weak_s > budget_s + 1e-9:
        return None
    if full_s <= weak_s:
        return pool
    n = int(math.floor((budget_s - pool * weak_s) / (full_s - weak_s) + 1e-9))
    return max(0, min(pool, n))


def weak_seconds(seconds_per_image: dict[str, float], weak_level: str) -> float:
    """Seconds per image at `weak_level` ('none' = left unlabeled, free)."""
    return 0.0 if weak_level == "none" else seconds_per_image[weak_level]


def max_strong_at(
    budget_s: float, pool: int, seconds_per_image: dict[str, float], weak_level: str = "none"
) -> int | None:
    """max_strong when the rest of the pool is labelled at `weak_level` (il, ilc, bb or none)."""
    return max_strong(budget_s, pool, seconds_per_image["full"], weak_seconds(seconds_per_image, weak_level))


def plan_cost(n_full: int, n_weak: int, seconds_per_image: dict[str, float], weak_level: str = "none") -> float:
    """Seconds to label n_full images fully and n_weak at `weak_level` ('none' costs nothing)."""
    return n_full * seconds_per_image["full"] + n_weak * weak_seconds(seconds_per_image, weak_level)


MIX_SHARE = 0.25  # of a budget spent on full masks in the mix of masks and boxes: masks on a few, boxes on many


def box_counts(budget_s: float, pool: int, spi: dict[str, float], share: float = 0.0) -> tuple[int, int] | None:
    """(N full masks, box images) that `share` of the budget on masks and the rest on boxes buy (share 0: boxes
    alone), at most `pool` images; None without a box (or, for a share > 0, without a mask)."""
    n_full = min(pool, _whole(share * budget_s / spi["full"]))
    n_box = min(pool - n_full, _whole((budget_s - n_full * spi["full"]) / spi["bb"]))
    if (share > 0 and n_full < 1) or (n_box < 1 and n_full < pool):  # masks on the whole pool need no box
        return None
    return n_full, n_box


def _whole(x: float) -> int:
    """floor(x), forgiving float noise (0.29 * 100 / 29 is 0.9999...): images a sum of seconds buys."""
    return max(0, int(math.floor(x + 1e-9)))


def mix_unit_seconds(spi: dict[str, float], share: float) -> float:
    """Seconds per image of the masks-and-boxes mix: the budget over the images it buys, before rounding."""
    return 1.0 / (share / spi["full"] + (1.0 - share) / spi["bb"])


def cost_table(stats: LabelStats, model: CostModel | None = None) -> dict:
    """The `cost --json` object: seconds per image at each level plus the statistics used."""
    model = model or CostModel()
    return {"seconds_per_image": model.seconds_per_image(stats), **asdict(stats)}


def plan_budget(
    budget_s: float,
    stats: LabelStats,
    model: CostModel | None = None,
    pool: int | None = None,
    hours_per_day: float = 24.0,
) -> dict:
    """What a budget buys: images per level, and with a pool of P images the largest N full-labelled images
    when the other P - N are labelled at each weak level ('none' = left unlabeled), and the masks and boxes of
    box_counts (box_mixes: boxes alone, and MIX_SHARE of the budget on masks)."""
    spi = (model or CostModel()).seconds_per_image(stats)
    out: dict = {
        "budget": describe_seconds(budget_s, hours_per_day),
        "seconds_per_image": spi,
        "images_per_level": images_within(budget_s, spi),
        **asdict(stats),
    }
    if pool is not None:
        mixed = {}
        for weak in ("none", "il", "ilc", "bb"):
            n = max_strong_at(budget_s, pool, spi, weak)
            spent = None if n is None else plan_cost(n, pool - n, spi, weak)
            mixed[weak] = {"n_full": n, "n_weak": None if n is None else pool - n, "spent_seconds": spent}
        out["pool"] = pool
        out["mixed"] = mixed
        out["box_mixes"] = {
            name: dict(zip(("n_full", "n_boxes"), box_counts(budget_s, pool, spi, share) or (None, None), strict=True))
            for name, share in (("boxes", 0.0), ("mix", MIX_SHARE))
        }
    return out
