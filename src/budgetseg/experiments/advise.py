"""Budget advisor: fit a learning curve metric(N) = a - b * N^(-c) to the measured runs of each strategy, then say
which strategy a budget should go to, or what a target metric costs.

Sources: run folders (results.json + cost.json), sweep folders (run subfolders, else report/report.json),
report.json of `budgetseg report`, compare.json of `budgetseg compare`. Strategies: f_theta and g_phi from runs
and reports (runs that bought more than N masks: <strategy>_f_theta and <strategy>, for W-RSIS, tags, boxes and
mixes; see run_pricing), rsis and wrsis (their g_phi) from compare.json; keys get a
"<group>/" prefix when the points of one key come from several recipes (parent folders / report groups).
Metrics are fractions in [0, 1] as in results.json; budgets are seconds of annotator time.

The band is a parametric bootstrap: the curve is refitted to its own values plus Gaussian noise of sigma (the fit's
residual scale, at least one run's seed-to-seed noise: NOISE_FLOOR, or `--noise`), and low/high are the 2.5 and 97.5
percentiles of the refitted curves. With 3 points and 3 parameters the residuals are zero, so the noise is what the
band says. The same noise is how much lower a larger N may score before a strategy's runs count as not monotone.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from scipy.optimize import OptimizeWarning, curve_fit

from budgetseg.cost import describe_seconds, max_strong_at, parse_budget, plan_cost
from budgetseg.errors import BudgetsegError, input_error
from budgetseg.experiments.report import NETS
from budgetseg.figures import plot_text, save_figure
from budgetseg.instance.task import InstanceTask
from budgetseg.io import check_output
from budgetseg.table import markdown_table
from budgetseg.tasks import METRICS, task_name_of

# metric noise of one run (fraction), by default: the band's floor, and how much lower a larger N may score before
# the curve is refused (`--noise` in points)
NOISE_FLOOR = 0.01
DRAWS = 200  # bootstrap refits per strategy
BOUNDS = ([0.0, 0.0, 0.01], [1.0, np.inf, 3.0])  # a, b, c; c > 0 keeps the curve rising and saturating
# W-RSIS's f_theta is scored with the val images' IL+C given: a model no one can deploy without those labels
NOT_RECOMMENDED = {"wrsis_f_theta": "scored with IL+C labels given at test time, so never recommended"}
TASK_OF_METRIC = {key: task for task, (key, _) in METRICS.items()}
WHAT = {
    "f_theta": "annotation network alone, N strong",
    "f_theta_long": "annotation network alone, N strong, trained as long as g_phi",
    "f_theta_long_aug": "annotation network alone, N strong, as long as g_phi, + colour jitter, cutout, CutMix",
    "g_phi": "segmentation network, N strong + pseudo-labels",
    "wrsis_f_theta": "W-RSIS annotation network, N strong + IL+C",
    "wrsis": "W-RSIS: N full masks + IL+C for the rest, g_phi",
    "rsis": "RSIS: N full masks, g_phi",
    "masks": "N full masks + pseudo-labels, g_phi",
    "tags": "N full masks + image-level tags of the rest + pseudo-labels, g_phi",
    "boxes": "N images with boxes (mask estimates) + pseudo-labels, g_phi",
    "mix": "N images: a share of the budget on full masks, the rest on boxes, + pseudo-labels, g_phi",
    "tags_f_theta": "annotation network alone, N strong (the run also bought tags)",
    "boxes_f_theta": "annotation network alone, N images with boxes",
    "mix_f_theta": "annotation network alone, N images with masks or boxes",
}


@dataclass(frozen=True)
class Pricing:
    """What N strong images cost: N * full_s (a full mask, a box image, or a mix's average), plus (pool - N) *
    weak_s when the rest is bought weakly labelled (IL+C for W-RSIS, IL for tags)."""

    full_s: float  # seconds per fully labelled image
    weak_s: float  # seconds per weak (IL+C) image; 0 = the rest stays unlabeled
    pool: int  # images in the pool: N strong + the rest

    def _spi(self) -> dict[str, float]:
        return {"full": self.full_s, "ilc": self.weak_s}

    def level(self) -> str:
        return "ilc" if self.weak_s > 0 else "none"

    def n_weak(self, n: int) -> int:
        return max(0, self.pool - n) if self.weak_s > 0 else 0

    def seconds(self, n: int | float) -> float:
        return plan_cost(n, self.n_weak(n), self._spi(), self.level())

    def strong_within(self, budget_s: float) -> int | None:
        """Largest N the budget pays for (at most the pool); None when it cannot pay for the weak labels."""
        return max_strong_at(budget_s, self.pool, self._spi(), self.level())

    def close_to(self, other: Pricing) -> bool:
        # report.json rounds budgets to 1e-4 h, so prices re-derived from it differ by a fraction of a second
        near = lambda x, y: abs(x - y) <= 0.01 * max(abs(x), abs(y), 1.0)  # noqa: E731
        return near(self.full_s, other.full_s) and near(self.weak_s, other.weak_s) and self.pool == other.pool


@dataclass(frozen=True)
class Point:
    """One measurement: strategy `key` with N strong images scored `value` (fraction)."""

    key: str
    n: int
    value: float
    pricing: Pricing
    task: str
    source: str
    group: str = ""
    share: float = 0.25  # the mix strategy's share of the budget on full masks (compare.MIX_SHARE)


@dataclass
class Series:
    """The points of one strategy, and the bootstrap fits of its learning curve."""

    key: str
    points: list[Point]
    params: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,) best fit a, b, c
    draws: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (D, 3) refits for the band
    sigma: float = NOISE_FLOOR  # noise of the bootstrap (fraction)
    misfit: float = 0.0  # largest |fit - measured| over the points (fraction)

    @property
    def pricing(self) -> Pricing:
        return self.points[0].pricing

    def ns(self) -> np.ndarray:
        return np.array([p.n for p in self.points], float)

    def values(self) -> np.ndarray:
        return np.array([p.value for p in self.points], float)

    def predict(self, n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(predicted, low, high) at N (scalar or (K,)): the best fit and the 2.5 / 97.5 percentiles of the draws."""
        n = np.asarray(n, float)
        pred = np.clip(curve(n, *self.params), 0.0, 1.0)  # below the measured N the curve can dip under 0
        if not len(self.draws):
            return pred, pred, pred
        every = curve(n[..., None], self.draws[:, 0], self.draws[:, 1], self.draws[:, 2])  # (..., D)
        low, high = np.clip(np.percentile(every, [2.5, 97.5], axis=-1), 0.0, 1.0)
        return pred, np.minimum(low, pred), np.maximum(high, pred)


def curve(n, a, b, c):
    """The learning curve a - b * N^(-c): metric (fraction) against N strong images."""
    return a - b * np.power(n, -c)


def _jacobian(n, a, b, c) -> np.ndarray:
    p = np.power(n, -c)
    return np.stack([np.ones_like(p), -p, b * p * np.log(n)], axis=-1)


def _curve_fit(n: np.ndarray, y: np.ndarray, p0) -> np.ndarray | None:
    # Fitted on N / n0 (b scaled by n0^-c): with N in the hundreds b spans decades and the solver crawls
    n0 = float(np.exp(np.mean(np.log(n))))
    a, b, c = p0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # 3 points, 3 parameters: no covariance, by design
            (a, b, c), _ = curve_fit(curve, n / n0, y, p0=[a, b * n0**-c, c], bounds=BOUNDS, jac=_jacobian, maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    return np.array([a, b * n0**c, c])


def fit_curve(n: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Least-squares (a, b, c) for points (N, metric); several starting exponents, as the surface has flat valleys.

    None when no start converges."""
    best, best_ssr = None, np.inf
    for c0 in (0.3, 0.7, 1.5):
        a0 = min(1.0, float(y.max()) + 0.05)
        p = _curve_fit(n, y, [a0, max((a0 - float(y.min())) * float(n.min()) ** c0, 1e-6), c0])
        if p is not None and (ssr := float(np.sum((curve(n, *p) - y) ** 2))) < best_ssr:
            best, best_ssr = p, ssr
    return best


def bootstrap(n: np.ndarray, params: np.ndarray, sigma: float, draws: int, seed: int = 0) -> np.ndarray:
    """(D, 3) refits of the curve to its own values at `n` plus N(0, sigma^2) noise; D <= draws (failures dropped)."""
    rng = np.random.default_rng(seed)
    base = curve(n, *params)
    out = [p for _ in range(draws) if (p := _curve_fit(n, base + rng.normal(0.0, sigma, n.shape), params)) is not None]
    return np.array(out).reshape(-1, 3)


def check_points(key: str, points: list[Point], tol: float = NOISE_FLOOR) -> None:
    """Refuse a curve that would be silently wrong: fewer than 3 distinct N, or a larger N scoring more than `tol`
    (a fraction: one run's noise) lower."""
    by_n: dict[int, list[float]] = {}
    for p in points:
        by_n.setdefault(p.n, []).append(p.value)
    ns = sorted(by_n)
    if len(ns) < 3:
        got = ", ".join(map(str, ns))
        raise BudgetsegError(f"{key}: needs at least 3 runs of different N, got {len(ns)} (N = {got})")
    mean = {n: float(np.mean(v)) for n, v in by_n.items()}
    for i, lo in enumerate(ns):
        for hi in ns[i + 1 :]:
            if mean[hi] < mean[lo] - tol:
                raise BudgetsegError(
                    f"{key}: N={hi} scores {100 * mean[hi]:.1f}% but N={lo} scores {100 * mean[lo]:.1f}%; the runs are "
                    f"not monotone in N (tolerance {100 * tol:g} points), so no learning curve fits them"
                )


def fit_series(key: str, points: list[Point], draws: int = DRAWS, noise: float = NOISE_FLOOR) -> Series:
    """Check the points, fit the curve and its bootstrap band (`noise`: one run's, a fraction; the band's floor and
    the monotone tolerance)."""
    check_points(key, points, noise)
    s = Series(key, sorted(points, key=lambda p: p.n))
    n, y = s.ns(), s.values()
    params = fit_curve(n, y)
    if params is None:
        raise BudgetsegError(f"{key}: the learning curve a - b*N^-c does not converge on these runs")
    # 3 points fit exactly unless the curve cannot bend their way (faster than linear in log N): a misfit then
    # widens the band like noise would
    resid = float(np.sqrt(np.sum((curve(n, *params) - y) ** 2) / max(len(n) - 3, 1)))
    s.params, s.sigma = params, max(noise, resid)
    s.misfit = float(np.max(np.abs(curve(n, *params) - y)))
    s.draws = bootstrap(n, params, s.sigma, draws)
    return s


def fit_all(
    by_key: dict[str, list[Point]], draws: int = DRAWS, noise: float = NOISE_FLOOR
) -> tuple[dict[str, Series], dict[str, str]]:
    """({strategy: fitted Series}, {strategy: why no curve fits its runs}). A strategy whose runs are too few or
    not monotone is left out, not the advice: on real data one recipe's curve (f_theta's, say, whose frames are
    drawn anew at every N) may wobble while another's holds. None may fit: see no_fit_error."""
    left_out: dict[str, str] = {}
    for k, ps in by_key.items():  # every check before the first (slow) fit
        try:
            check_points(k, ps, noise)
        except BudgetsegError as e:
            left_out[k] = str(e)
    series: dict[str, Series] = {}
    for k, ps in by_key.items():
        if k not in left_out:
            try:
                series[k] = fit_series(k, ps, draws, noise)
            except BudgetsegError as e:
                left_out[k] = str(e)
    return series, left_out


def no_fit_error(left_out: dict[str, str]) -> BudgetsegError:
    """The refusal when no strategy's runs fit a curve (and none was measured where the advice is asked)."""
    if len(left_out) == 1:
        return BudgetsegError(next(iter(left_out.values())))
    return BudgetsegError(f"no strategy's runs fit a learning curve: {'; '.join(left_out.values())}")


# ----------------------------------------------------------------------------------------------- sources


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise input_error(path, f"cannot read it ({e.__class__.__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise input_error(path, "expected a JSON object")
    return obj


def _value(x) -> float | None:
    return None if x is None else float(x)


def run_points(run: Path) -> tuple[list[Point], list[Point]]:
    """(points, reference points) of one run folder: f_theta and g_phi, or for a run that bought more than N full
    masks <strategy>_f_theta and <strategy> (run_pricing: wrsis, tags, boxes, mix), and its controls."""
    res = _read_json(run / "results.json")
    cost = _read_json(run / "cost.json") if (run / "cost.json").is_file() else {}
    try:
        task, n, rest = task_name_of(res), int(res["n_strong"]), int(res["n_pseudo"])
        n_weak = int(res.get("n_weak") or 0)
        seconds = float(res["budget_seconds"]) if "budget_seconds" in res else 3600.0 * float(res["budget_hours"])
    except (KeyError, TypeError, ValueError) as e:
        raise input_error(run / "results.json", f"not a results.json of budgetseg run (bad or missing {e})") from None
    if task not in METRICS:
        raise input_error(run / "results.json", f"the {task} task has no metric to advise on")
    key = METRICS[task][0]
    strategy, pricing = run_pricing(task, cost, n, n_weak, rest, seconds)
    f = _value((res.get("annotation_net") or {}).get(key))
    g = _value((res.get("segmentation_net") or {}).get(key))
    f_long = _value((res.get("annotation_net_long") or {}).get(key))  # the control, where the run trained it
    f_aug = _value((res.get("annotation_net_long_aug") or {}).get(key))  # and the augmented one (semantic)
    common = dict(n=n, pricing=pricing, task=task, source=str(run), group=run.resolve().parent.name)
    if rest == 0:  # the fully-supervised reference: not on the semi-supervised curve
        return [], [Point("reference", value=f, **common)] if f is not None else []
    keys = (f"{strategy}_f_theta", strategy) if strategy != "g_phi" else ("f_theta", "g_phi")
    keys += ("f_theta_long", "f_theta_long_aug")
    values = (f, g, f_long, f_aug)
    return [Point(k, value=v, **common) for k, v in zip(keys, values, strict=True) if v is not None], []


def run_pricing(task: str, cost: dict, n: int, n_weak: int, rest: int, seconds: float) -> tuple[str, Pricing]:
    """(strategy, pricing) of a run from its cost.json: g_phi (N full masks), wrsis (instance, + IL+C of the
    rest), tags (semantic, + image-level tags), boxes (box images alone) or mix (masks and boxes: priced per strong
    image at the run's own average, so runs of one mix curve must keep its proportion)."""
    spi = cost.get("seconds_per_image") or {}
    by_type = cost.get("labels") or {}
    boxed = int((by_type.get("boxes") or {}).get("images") or 0)
    if boxed:
        strong_s = sum(float(by_type[t]["seconds"]) for t in ("full", "boxes"))
        weak_s = (seconds - strong_s) / n_weak if n_weak else 0.0
        return ("boxes" if boxed == n else "mix"), Pricing(strong_s / max(n, 1), weak_s, n + rest)
    full_s = float(spi.get("full") or seconds / max(n, 1))
    pricing = Pricing(full_s, (seconds - n * full_s) / n_weak if n_weak else 0.0, n + rest)
    if not n_weak:
        return "g_phi", pricing
    return ("wrsis" if task == InstanceTask.name else "tags"), pricing


def report_points(path: Path) -> tuple[list[Point], list[Point]]:
    """(points, reference points) of a report.json; prices re-derived from its rows' budgets (see report_pricing)."""
    obj = _read_json(path)
    key, rows = obj.get("metric"), obj.get("rows")
    if key not in TASK_OF_METRIC or not isinstance(rows, list):
        raise input_error(path, "not a report.json of budgetseg report (no metric mIoU / AP50 and rows)")
    task = TASK_OF_METRIC[key]
    try:
        semi = [r for r in rows if not r.get("reference") and r.get("n_pseudo")]
        refs = [r for r in rows if r.get("reference")]
        # each recipe (group) priced on its own rows: a W-RSIS group also paid for the IL+C of its pool
        pricing = {g: report_pricing([r for r in semi if r["group"] == g]) for g in {r["group"] for r in semi}}
        common = lambda r: dict(n=int(r["n_strong"]), task=task, source=str(path), group=r["group"])  # noqa: E731
        points = [
            Point(named, value=float(r[f"{k}_{key}"]), pricing=pricing[r["group"]], **common(r))
            for r in semi
            for k, named in zip(NETS, report_keys(r), strict=True)
            if r.get(f"{k}_{key}") is not None
        ]
        ref_pricing = Pricing(0.0, 0.0, 0)  # a reference is reported, not priced
        references = [
            Point("reference", value=float(r[f"g_phi_{key}"]), pricing=ref_pricing, **common(r)) for r in refs
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise input_error(path, f"a row of this report.json lacks {e}") from None
    return points, references


def report_keys(row: dict) -> tuple[str, ...]:
    """Strategy keys of a report row's NETS, as run_points names them: a W-RSIS row (its f_theta given
    the val images' IL+C: `weak_given`) gives wrsis_f_theta and wrsis."""
    first, last = ("wrsis_f_theta", "wrsis") if row.get("weak_given") else ("f_theta", "g_phi")
    return first, "f_theta_long", "f_theta_long_aug", last


def report_pricing(rows: list[dict]) -> Pricing:
    """Price per strong and per weak image from report rows: least squares of budget = N * full + (P - N) * weak.

    report.json keeps budgets in hours, not the seconds per image; runs without weak labels fit weak = 0."""
    n = np.array([r["n_strong"] for r in rows], float)
    pool = np.array([r["n_strong"] + r["n_pseudo"] for r in rows], float)
    seconds = 3600.0 * np.array([r["budget_hours"] for r in rows], float)
    if len(set(n)) < 2:
        return Pricing(float(np.mean(seconds / n)), 0.0, int(pool[0]))
    (full, weak), *_ = np.linalg.lstsq(np.stack([n, pool - n], 1), seconds, rcond=None)
    # report.json rounds hours to 4 decimals (<= 0.18 s a row): weak labels worth under a second in all are that
    # rounding, not IL+C (2.5 s an image for CVPPP's one class, 0.2 % of a full mask, pays 163 s for 66 plants)
    weak = 0.0 if weak * float(np.max(pool - n)) < 1.0 else float(weak)
    if weak == 0.0:
        full = float(np.sum(seconds * n) / np.sum(n * n))
    return Pricing(float(full), weak, int(pool[0]))


def compare_points(path: Path) -> list[Point]:
    """The score of what each strategy deploys (g_phi, or f_theta where its budget labelled the whole pool) at each
    budget of a compare.json, N = the strong images it bought (masks and
    boxes), priced by the strategy's rule (compare.unit_seconds, plus the weak labels of the rest for tags and
    wrsis). A compare.json from before the label mixes is the instance task's RSIS against W-RSIS."""
    from budgetseg.experiments.compare import MIX_SHARE, unit_seconds

    obj = _read_json(path)
    spi, pool, rows = obj.get("seconds_per_image"), obj.get("pool"), obj.get("rows")
    if not isinstance(spi, dict) or not isinstance(rows, list) or pool is None:
        raise input_error(path, "not a compare.json of budgetseg compare (no seconds_per_image, pool and rows)")
    metric, share = obj.get("metric", "ap50"), float(obj.get("mix_share", MIX_SHARE))
    if metric not in TASK_OF_METRIC:
        raise input_error(path, f"unknown metric {metric!r}")
    weak = {"wrsis": "ilc", "tags": "il"}
    try:
        return [
            Point(
                r["strategy"],
                int(r["n_strong"]),
                float(r.get(f"final_{metric}", r.get(f"g_phi_{metric}"))),
                Pricing(
                    unit_seconds(r["strategy"], spi, share),
                    float(spi[weak[r["strategy"]]]) if r["strategy"] in weak else 0.0,
                    int(pool),
                ),
                TASK_OF_METRIC[metric],
                str(path),
                "compare",
                share,
            )
            for r in rows
            if "skipped" not in r and r.get(f"final_{metric}", r.get(f"g_phi_{metric}")) is not None
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise input_error(path, f"a row of this compare.json lacks {e}") from None


def source_points(path: Path) -> tuple[list[Point], list[Point]]:
    """(points, reference points) of one source: a run, sweep or compare folder, a report.json or a compare.json."""
    if path.is_file():
        obj = _read_json(path)
        if "seconds_per_image" in obj:  # a compare.json (which names its metric too)
            return compare_points(path), []
        if "metric" in obj:
            return report_points(path)
        raise input_error(path, "neither a report.json (budgetseg report) nor a compare.json (budgetseg compare)")
    if not path.is_dir():
        raise input_error(path, "no such file or folder")
    if (path / "results.json").is_file():
        return run_points(path)
    if (path / "compare.json").is_file():
        return compare_points(path / "compare.json"), []
    runs = sorted(d for d in path.iterdir() if (d / "results.json").is_file())
    if runs:
        pts, refs = zip(*(run_points(d) for d in runs), strict=True)
        return [p for ps in pts for p in ps], [r for rs in refs for r in rs]
    for report in (path / "report" / "report.json", path / "report.json"):
        if report.is_file():
            return report_points(report)
    raise input_error(path, "no results.json, run subfolders, report/report.json or compare.json in this folder")


def collect(paths: list[Path]) -> tuple[str, dict[str, list[Point]], list[Point]]:
    """(task, {strategy key: points}, reference points) of all sources; one task, one price per strategy."""
    points, refs = [], []
    for p in map(Path, paths):
        ps, rs = source_points(p)
        if not ps and not rs:
            raise input_error(p, "no finished run with a score in it")
        points += ps
        refs += rs
    tasks: dict[str, str] = {}
    for p in points + refs:
        tasks.setdefault(p.task, p.source)
    if len(tasks) > 1:
        which = "; ".join(f"{t}: {s}" for t, s in sorted(tasks.items()))
        raise BudgetsegError(f"sources of different tasks ({which}): advise one task at a time")
    if not points:
        raise BudgetsegError("no semi-supervised runs in the sources (only fully-supervised references)")
    # the same run given twice (its folder and a report of it) counts once
    points = list({(p.key, p.n, round(p.value, 6), p.group): p for p in points}.values())
    groups: dict[str, set[str]] = {}
    for p in points:
        groups.setdefault(p.key, set()).add(p.group)
    by_key: dict[str, list[Point]] = {}
    for p in points:
        by_key.setdefault(f"{p.group}/{p.key}" if len(groups[p.key]) > 1 else p.key, []).append(p)
    for key, ps in by_key.items():
        if not all(p.pricing.close_to(ps[0].pricing) for p in ps):
            prices = sorted({f"{p.pricing.full_s:.1f} s per full image, pool {p.pricing.pool}" for p in ps})
            raise BudgetsegError(f"{key}: the sources price it differently ({'; '.join(prices)}): advise them apart")
    return tasks.popitem()[0], by_key, refs


# ----------------------------------------------------------------------------------------------- advice


def repriced(p: Point, prices: dict[str, float]) -> Point:
    """`p` bought at `prices` (seconds per image of each label type, as cost.py gives them), same pool, label
    types and mix (compare.unit_seconds)."""
    from budgetseg.experiments.compare import unit_seconds

    strategy = p.key.split("/")[-1]
    weak = 0.0 if p.pricing.weak_s == 0 else prices["il" if strategy == "tags" else "ilc"]
    return replace(p, pricing=Pricing(unit_seconds(strategy, prices, p.share), weak, p.pricing.pool))


def parse_target(text: str | float) -> float:
    """'0.35' or '35%' -> 0.35 (a metric as a fraction)."""
    s = str(text).strip()
    try:
        value = float(s[:-1]) / 100.0 if s.endswith("%") else float(s)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise BudgetsegError(f"--target {text!r}: expected a fraction like 0.35 or a percentage like 35%")
    return value


def _what(key: str) -> str:
    return WHAT.get(key.split("/")[-1], key)


def _bought(key: str, pricing: Pricing, n: int, hours_per_day: float) -> dict:
    """What a strategy is and what N strong images of it buy: the weak images beside them and the time spent."""
    spent = describe_seconds(pricing.seconds(n), hours_per_day)
    return {"what": _what(key), "n_strong": int(n), "n_weak": pricing.n_weak(n), "spent": spent}


def _entry(s: Series, n: int, hours_per_day: float) -> dict:
    pred, low, high = (round(float(v), 6) for v in s.predict(n))
    ns = s.ns()
    return _bought(s.key, s.pricing, n, hours_per_day) | {
        "predicted": pred,
        "low": low,
        "high": high,
        "extrapolated": bool(n < ns.min() or n > ns.max()),
        "measured_n": [int(ns.min()), int(ns.max())],
    }


def _about(s: Series) -> dict:
    a, b, c = (round(float(v), 6) for v in s.params)
    return {
        "fit": {
            "a": a,
            "b": b,
            "c": c,
            "sigma": round(s.sigma, 6),
            "misfit": round(s.misfit, 6),
            "draws": len(s.draws),
        },
        "points": [[p.n, round(p.value, 6)] for p in s.points],
        "pricing": {"full_s": round(s.pricing.full_s, 4), "weak_s": round(s.pricing.weak_s, 4), "pool": s.pricing.pool},
    }


def at_budget(s: Series, budget_s: float, hours_per_day: float) -> dict:
    """The advice for one strategy at a budget (seconds): N it buys and the metric predicted there."""
    n = s.pricing.strong_within(budget_s)
    if not n:
        need = s.pricing.seconds(1)
        why = f"the budget does not pay for N=1 ({describe_seconds(need, hours_per_day)['hours']:g} h)"
        return {"what": _what(s.key), "n_strong": None, "reason": why} | _about(s)
    out = _entry(s, n, hours_per_day)
    if n == s.pricing.pool and s.pricing.seconds(n) < budget_s:
        out["note"] = f"the budget buys the whole pool of {s.pricing.pool} images"
    return out | _about(s)


def for_target(s: Series, target: float, hours_per_day: float) -> dict:
    """The advice for one strategy at a target metric: the smallest N (and budget) predicted to reach it."""
    a, b, c = s.params
    base = {"what": _what(s.key), "n_strong": None}
    if a <= target:
        return base | {"reason": f"the fitted asymptote a = {100 * a:.1f}% lies below the target"} | _about(s)
    n = max(1, math.ceil((b / (a - target)) ** (1.0 / c) - 1e-9))
    if n > s.pricing.pool:
        why = f"needs N={n} strong images, more than the pool of {s.pricing.pool} images the runs drew from"
        return base | {"reason": why, "n_needed": n} | _about(s)
    # N each refit needs: the spread of what the target costs
    ad, bd, cd = s.draws.T if len(s.draws) else (np.array([a]), np.array([b]), np.array([c]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        need = np.where(ad > target, (bd / (ad - target)) ** (1.0 / cd), np.inf)
    lo, hi = np.percentile(np.minimum(need, 1e12), [2.5, 97.5])  # inf: a refit that never reaches the target
    span = [max(1, math.ceil(lo)) if lo < 1e12 else None, math.ceil(hi) if hi < 1e12 else None]
    return _entry(s, n, hours_per_day) | {"n_strong_range": span} | _about(s)


def measured_at_budget(by_key: dict[str, list[Point]], budget_s: float, hours_per_day: float) -> dict[str, dict]:
    """{strategy: what its runs measured at the N the budget buys}, for each strategy with runs at exactly that N
    (their mean value, a fraction), whether or not a learning curve fits its runs."""
    out = {}
    for k, ps in by_key.items():
        pricing = ps[0].pricing
        n = pricing.strong_within(budget_s)
        values = [p.value for p in ps if p.n == n]
        if n and values:
            out[k] = _bought(k, pricing, n, hours_per_day) | {
                "value": round(float(np.mean(values)), 6),
                "runs": len(values),
            }
    return out


def choose_at_budget(strategies: dict[str, dict], measured: dict[str, dict], noise: float) -> tuple[str | None, list]:
    """(the recommended strategy, the others whose band reaches its): the highest of what each strategy measured at
    the budget's N, where its runs were made there, else of what its curve predicts. A measurement beats a curve
    fitted through it and its neighbours (and stands where no curve fits, as for runs that fall with N); its band
    is +-2 noise."""

    def band(k: str) -> tuple[float, float, float]:
        if k in measured:
            v = measured[k]["value"]
            return v, v - 2 * noise, v + 2 * noise
        return strategies[k]["predicted"], strategies[k]["low"], strategies[k]["high"]

    keys = [k for k, v in strategies.items() if v["n_strong"]] + list(measured)
    ok = [k for k in dict.fromkeys(keys) if k.split("/")[-1] not in NOT_RECOMMENDED]
    if not ok:
        return None, []
    best = max(ok, key=lambda k: band(k)[0])
    low = band(best)[1]
    return best, [k for k in ok if k != best and band(k)[2] >= low]


def check_arguments(budget, target, hours_per_day: float, plot: Path | None, noise: float) -> None:
    """Refuse, before any fit, what advise cannot answer."""
    if (budget is None) == (target is None):
        raise BudgetsegError("give exactly one of --budget B (e.g. 1d) or --target T (e.g. 0.35 or 35%)")
    if plot is not None:
        check_output(plot, "--plot")  # an existing file, or one in a run folder, is refused
    if not 0 < noise < 1:  # NaN too
        raise BudgetsegError(f"--noise must lie in (0, 100) points, got {100 * noise:g}")
    if not 0 < hours_per_day <= 24:  # NaN too
        raise BudgetsegError(f"--hours-per-day must lie in (0, 24], got {hours_per_day}")


def advise(
    sources: list[Path],
    budget: str | None = None,
    target: str | float | None = None,
    hours_per_day: float = 24.0,
    plot: Path | None = None,
    draws: int = DRAWS,
    prices: dict[str, float] | None = None,
    noise: float = NOISE_FLOOR,
) -> dict:
    """The advice object (see the CLI's --json): per strategy N, the predicted metric and its band; the recommended
    strategy (at a budget the highest metric, measured where runs were made at the N it buys, else predicted; for
    a target the cheapest predicted to reach it). Writes a plot if asked.

    prices: seconds per image of each label type (cost.py's seconds_per_image: full, bb, il, ilc) to buy the
    labels at instead of what the sources paid (e.g. masks drawn with an assistant); the curves stay fitted in N,
    only what a budget buys changes. noise: one run's metric noise (a fraction), as the monotone tolerance and the
    bands' floor; raise it for a small val set, where scores swing between seeds."""
    check_arguments(budget, target, hours_per_day, plot, noise)
    budget_s = parse_budget(budget, hours_per_day) if budget is not None else None
    goal = parse_target(target) if target is not None else None
    task, by_key, refs = collect(sources)
    if prices is not None:
        by_key = {k: [repriced(p, prices) for p in ps] for k, ps in by_key.items()}
    series, left_out = fit_all(by_key, draws, noise)
    key, label = METRICS[task]
    obj: dict = {"task": task, "metric": key, "label": label, "noise": noise}
    if budget_s is not None:
        obj["budget"] = describe_seconds(budget_s, hours_per_day) | {"hours_per_day": hours_per_day}
        strategies = {k: at_budget(s, budget_s, hours_per_day) for k, s in series.items()}
        obj["measured"] = measured_at_budget(by_key, budget_s, hours_per_day)
        best, within = choose_at_budget(strategies, obj["measured"], noise)
    else:
        obj["target"] = goal
        strategies = {k: for_target(s, goal, hours_per_day) for k, s in series.items()}
        ok = [k for k, v in strategies.items() if v["n_strong"] and k.split("/")[-1] not in NOT_RECOMMENDED]
        best = min(ok, key=lambda k: strategies[k]["spent"]["seconds"]) if ok else None
    if not series and not obj.get("measured"):
        raise no_fit_error(left_out)
    ref = max(refs, key=lambda r: r.value, default=None)
    for k, v in strategies.items():
        says = [v.get("note"), NOT_RECOMMENDED.get(k.split("/")[-1])]
        if ref is not None and v["n_strong"] and v["predicted"] > ref.value:  # the curve knows nothing of it
            says.append(f"above full supervision ({100 * ref.value:.1f}% at N={ref.n})")
        if any(says):
            v["note"] = "; ".join(x for x in says if x)
    obj["strategies"] = strategies
    obj["recommended"] = best
    if best is not None and budget_s is not None:  # strategies the recommended one does not clearly beat
        obj["within_band"] = within
    obj["references"] = [{"n_strong": r.n, "value": round(r.value, 6), "source": r.source} for r in refs]
    obj["left_out"] = left_out
    if plot is not None:
        save_figure(Path(plot), plot_advice(obj, series, hours_per_day))
        obj["plot"] = str(plot)
    return obj


# ----------------------------------------------------------------------------------------------- output


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def text(obj: dict) -> str:
    """The advice as a Markdown table and a recommendation sentence."""
    label, hpd = obj["label"], obj.get("budget", {}).get("hours_per_day", 24.0)
    if "budget" in obj:
        b = obj["budget"]
        head = f"{obj['task']} task, budget {b['hours']:g} h = {b['days']:g} d ({hpd:g} h/day)"
    else:
        head = f"{obj['task']} task, target {label} {_pct(obj['target'])}%"
    rows = []
    for k, v in obj["strategies"].items():
        ns = [n for n, _ in v["points"]]
        n_range = f"{min(ns)}-{max(ns)}"
        if v["n_strong"] is None:
            rows.append([k, v["what"], "-", "-", "-", "-", "-", n_range, v["reason"]])
            continue
        band = f"{_pct(v['low'])}-{_pct(v['high'])}"
        notes = ["extrapolated"] if v["extrapolated"] else []
        if v["fit"]["misfit"] > 2 * obj.get("noise", NOISE_FLOOR):
            notes.append(f"curve misses a point by {100 * v['fit']['misfit']:.1f} points")
        rows.append(
            [k, v["what"], v["n_strong"], v["n_weak"], f"{v['spent']['hours']:.3g}", _pct(v["predicted"]), band]
            + [n_range, "; ".join(x for x in [*notes, v.get("note")] if x)]
        )
    heads = ["strategy", "what", "N strong", "N weak", "budget h", f"{label} %", "band %", "measured N", "note"]
    lines = [head, markdown_table(heads, rows), ""]
    for k, m in obj.get("measured", {}).items():
        lines.append(f"Measured at this budget: {k}, {label} {_pct(m['value'])}% at N={m['n_strong']} ({_runs(m)})")
    lines.append(recommendation(obj))
    lines += [f"Left out: {why}" for why in obj.get("left_out", {}).values()]
    return "\n".join(lines)


def recommendation(obj: dict) -> str:
    """One plain sentence, with the caveats: extrapolation, overlapping bands."""
    best, label = obj["recommended"], obj["label"]
    if best is None:
        why = "can pay for one strong image at this budget" if "budget" in obj else "is predicted to reach the target"
        return f"No recommendation: no strategy {why} (see the notes above)."
    if best in obj.get("measured", {}):
        return measured_recommendation(obj)
    v = obj["strategies"][best]
    lo, hi, n = _pct(v["low"]), _pct(v["high"]), v["n_strong"]
    if "budget" in obj:
        say = (
            f"Recommended: {best} ({v['what']}), predicted {label} {_pct(v['predicted'])}% (band {lo}-{hi}%) with "
            f"N={n} strong images"
        )
        say += f" + {v['n_weak']} weak." if v["n_weak"] else "."
        if obj.get("within_band"):
            say += f" Its band overlaps {', '.join(obj['within_band'])}'s: the lead is within the uncertainty."
    else:
        say = (
            f"Recommended: {best} ({v['what']}), the cheapest predicted to reach {label} {_pct(obj['target'])}%: "
            f"N={n} strong images, {v['spent']['hours']:.3g} h = {v['spent']['days']:.3g} d of annotation."
        )
    if v["extrapolated"]:
        lo_n, hi_n = v["measured_n"]
        say += f" Caveat: N={n} lies outside the measured N {lo_n}-{hi_n}, so this extrapolates the fitted curve"
        say += f", here {v['note']}." if "above full supervision" in v.get("note", "") else "."
    return say


def measured_recommendation(obj: dict) -> str:
    """The sentence for a recommendation made on runs measured at the budget's N."""
    best, label = obj["recommended"], obj["label"]
    m = obj["measured"][best]
    say = (
        f"Recommended: {best} ({m['what']}), measured {label} {_pct(m['value'])}% with N={m['n_strong']} strong images"
    )
    say += f" + {m['n_weak']} weak" if m["n_weak"] else ""
    say += f" ({_runs(m)} at this budget's N)."
    if best not in obj["strategies"]:
        say += " No learning curve fits its runs (see Left out), so it is advised only where it was measured."
    if obj.get("within_band"):  # the rule of choose_at_budget: bands overlap
        say += f" Its band (+-{_pct(2 * obj['noise'])} points, two runs' noise) overlaps"
        say += f" {', '.join(obj['within_band'])}'s: the lead is within the uncertainty."
    return say


def _runs(m: dict) -> str:
    return f"{m['runs']} run{'s' if m['runs'] > 1 else ''}"


def plot_advice(obj: dict, series: dict[str, Series], hours_per_day: float) -> Figure:
    """Measured points, fitted curves and their bands against the budget (hours, or days when large); a vertical
    line at the asked budget or a horizontal one at the target."""
    grids = {}
    for key, s in series.items():  # each curve a little beyond its points and its advice, not into nonsense
        ns = list(s.ns()) + [obj["strategies"][key]["n_strong"] or s.ns()[0]]
        grids[key] = np.unique(np.geomspace(max(1.0, min(ns) / 1.5), min(s.pricing.pool, max(ns) * 1.5), 200))
    secs = [series[k].pricing.seconds(n) for k, g in grids.items() for n in (g[0], g[-1])]
    if "budget" in obj:
        secs.append(obj["budget"]["seconds"])
    days = max(secs) > 3 * 3600.0 * hours_per_day
    unit_s = 3600.0 * (hours_per_day if days else 1.0)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for i, (key, s) in enumerate(series.items()):
        color = f"C{i % 10}"
        ns = grids[key]
        x = np.array([s.pricing.seconds(n) for n in ns]) / unit_s
        pred, low, high = s.predict(ns)
        ax.fill_between(x, 100 * low, 100 * high, color=color, alpha=0.15, lw=0)
        ax.plot(x, 100 * pred, "-", color=color, lw=1.5, label=plot_text(f"{key}: {obj['strategies'][key]['what']}"))
        px = np.array([s.pricing.seconds(p.n) for p in s.points]) / unit_s
        ax.plot(px, 100 * s.values(), "o", color=color, ms=5, mec="white", mew=0.6)
        v = obj["strategies"][key]
        if v.get("n_strong"):
            ax.plot(v["spent"]["seconds"] / unit_s, 100 * v["predicted"], "*", color=color, ms=11, mec="black", mew=0.5)
    for k, m in obj.get("measured", {}).items():  # where no curve fits, the measurement alone
        if k not in series:
            ax.plot(m["spent"]["seconds"] / unit_s, 100 * m["value"], "s", color="0.2", ms=6, label=f"{k}: measured")
    for r in obj["references"]:
        say = f"full supervision, N={r['n_strong']}: {100 * r['value']:.1f}%"
        ax.axhline(100 * r["value"], ls=":", color="0.4", lw=1, label=say)
    if "budget" in obj:
        ax.axvline(obj["budget"]["seconds"] / unit_s, color="black", ls="--", lw=1, label="asked budget")
    else:
        ax.axhline(100 * obj["target"], color="black", ls="--", lw=1, label="target")
    lo_x, hi_x = min(secs) / unit_s, max(secs) / unit_s
    if lo_x > 0 and hi_x > 4 * lo_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    unit = f"days of {hours_per_day:g} h" if days else "hours"
    ax.set_xlabel(f"annotation budget ({unit})")
    ax.set_ylabel(f"{obj['label']} (%)")
    ax.set_title(f"{obj['label']} learning curves a - b N^-c, 95% bands; * = advice")
    ax.grid(True, which="major", alpha=0.4)
    ax.legend(fontsize=7, loc="best")
    return fig
