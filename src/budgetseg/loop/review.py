"""Which pseudo-labels to correct first: per pseudo-labelled image, the errors f_theta itself expects in it.

Each task's pseudo-label folder scores its images (PseudoLabels.review_scores). Semantic: the share of its pixels
expected wrong, 1 - the mean of its confidence map (pseudo/conf/<id>.png, f_theta's top class probability per pixel).
Instance: the number of its pseudo-instances expected wrong, the sum of 1 - score over them (pseudo_labels.json, the
unsure ones included), 1 where f_theta found none (a missed object, likely). The most expected errors first. How
well that finds the wrong pseudo-labels: benchmarks/review_order.py (the instance sum finds twice the errors random
picks do; the mean score finds 1.5 times).
"""

from __future__ import annotations


def review_order(scores: dict[str, float]) -> list[str]:
    """The ids, the most expected errors first (ties: by id, so the order does not depend on the dict's)."""
    return sorted(scores, key=lambda i: (-scores[i], i))
