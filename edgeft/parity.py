"""Do two runtimes compute the same model? One rule for every parity check (export, compare-backends).

Two float32 implementations of one network never agree bit for bit: kernels sum in different orders, and
the rounding grows with the logits. A fixed absolute tolerance on logits therefore fails a confident model
(logits of 20 carry errors near 1e-4) while it would pass a broken export of an unsure one. The rule here
is the field's: the difference is judged relative to each image's logit scale (``max |logit|``, at least 1,
as ``numpy.allclose`` does with rtol and atol of the same size), the top-1 class must agree on every image
whose top two classes are further apart than that tolerance (a near-tie may flip legitimately), and the
logit vectors must point the same way (cosine). FP16 and INT8 move logits legitimately, so they are judged
by agreement and cosine only. Numpy only, so the camera runtime and every stage can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """What a precision may differ by: ``rtol`` of each image's logit scale (None: not checked); ``tie`` the
    margin, as a share of the logit scale, below which an image's top two classes are a near-tie that may flip
    (such images count for neither agreement nor cosine); the share of the other images whose top-1 class must
    agree; and the least cosine similarity of their centred logits."""

    rtol: float | None
    tie: float
    min_agreement: float
    min_cosine: float


TOLERANCES = {
    "fp32": Tolerance(rtol=1e-3, tie=2e-3, min_agreement=1.0, min_cosine=0.9999),
    "fp16": Tolerance(rtol=None, tie=0.01, min_agreement=0.99, min_cosine=0.999),
    "bf16": Tolerance(rtol=None, tie=0.02, min_agreement=0.98, min_cosine=0.995),  # 8 mantissa bits to fp16's 11
    "int8": Tolerance(rtol=None, tie=0.05, min_agreement=0.97, min_cosine=0.99),
}


@dataclass
class Parity:
    """The outcome of one comparison; ``worst`` lists (image index, relative difference) of the images that
    broke the rule, worst first (at most 5)."""

    precision: str
    n: int
    max_abs_diff: float
    mean_abs_diff: float
    max_rel_diff: float
    agreement: float
    cosine: float
    passed: bool
    reasons: list[str] = field(default_factory=list)
    worst: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "n": self.n, "max_abs_diff": self.max_abs_diff,
                "mean_abs_diff": self.mean_abs_diff, "max_rel_diff": self.max_rel_diff,
                "top1_agreement": self.agreement, "min_cosine": self.cosine, "passed": self.passed,
                "rule": rule_text(self.precision)}

    def explain(self, names: list[str] | None = None) -> str:
        """One clause saying what failed and on which images, e.g. for an error line."""
        where = ""
        if self.worst:
            shown = [f"{names[i] if names else f'image {i}'} ({rel:.1e})" for i, rel in self.worst]
            where = f"; worst: {', '.join(shown)}"
        return "; ".join(self.reasons) + where


def rule_text(precision: str) -> str:
    t = TOLERANCES[precision]
    parts = [f"|diff| <= {t.rtol:g} x the image's max |logit| (at least 1)"] if t.rtol is not None else []
    parts.append(f"top-1 agreement >= {t.min_agreement * 100:g}% and cosine of centred logits >= {t.min_cosine:g} "
                 f"on images whose top two logits are more than {t.tie:g} x the scale apart")
    return ", ".join(parts)


def _top2_margin(logits: np.ndarray) -> np.ndarray:
    """How far each row's largest value lies above its second (infinite for a single column)."""
    if logits.shape[1] < 2:
        return np.full(len(logits), np.inf)
    top2 = np.sort(logits, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def compare(reference: np.ndarray, got: np.ndarray, precision: str = "fp32") -> Parity:
    """Judge ``got`` (N x K logits of the runtime under test) against ``reference`` (N x K, e.g. PyTorch FP32)."""
    if precision not in TOLERANCES:
        raise ValueError(f"precision must be one of {', '.join(TOLERANCES)}, got {precision!r}")
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(got, dtype=np.float64)
    if ref.shape != out.shape or ref.ndim != 2 or len(ref) == 0:
        raise ValueError(f"parity needs two N x K arrays of the same shape, got {ref.shape} and {out.shape}")
    tol = TOLERANCES[precision]
    diff = np.abs(ref - out)
    scale = np.maximum(1.0, np.abs(ref).max(1))
    rel = diff.max(1) / scale
    # logits mean the same up to a constant per image (softmax ignores it, and INT8 shifts it), so the direction
    # is compared on centred logits
    refc, outc = ref - ref.mean(1, keepdims=True), out - out.mean(1, keepdims=True)
    # a near-tie (the top two closer than the precision's tie band) may flip without anything being wrong
    decisive = _top2_margin(ref) > tol.tie * scale
    # an output whose top two are exactly equal (INT8 logits sit on a grid) made no decision: it counts as a flip,
    # and its direction is undefined
    undecided = _top2_margin(out) <= 0
    norms = np.linalg.norm(refc, axis=1) * np.linalg.norm(outc, axis=1)
    cos = np.where(decisive & ~undecided, (refc * outc).sum(1) / np.maximum(norms, 1e-300), 1.0)
    flipped = decisive & ((ref.argmax(1) != out.argmax(1)) | undecided)
    agreement = float(1.0 - flipped.sum() / max(1, decisive.sum()))
    bad = flipped | (cos < tol.min_cosine)
    reasons = []
    if tol.rtol is not None and rel.max() > tol.rtol:
        bad |= rel > tol.rtol
        reasons.append(f"{int((rel > tol.rtol).sum())} of {len(ref)} images differ by more than {tol.rtol:g} of "
                       f"their logit scale (max {rel.max():.1e}, {diff.max():.2e} absolute)")
    if agreement < tol.min_agreement:
        reasons.append(f"top-1 class differs on {int(flipped.sum())} of {int(decisive.sum())} images "
                       f"(agreement {agreement * 100:.1f}% < {tol.min_agreement * 100:g}%)")
    if cos.min() < tol.min_cosine:
        reasons.append(f"logits point another way on {int((cos < tol.min_cosine).sum())} images (min cosine "
                       f"{cos.min():.6f} < {tol.min_cosine:g})")
    order = [int(i) for i in np.argsort(-rel) if bad[i]][:5]
    return Parity(precision=precision, n=int(len(ref)), max_abs_diff=float(diff.max()),
                  mean_abs_diff=float(diff.mean()), max_rel_diff=float(rel.max()), agreement=agreement,
                  cosine=float(cos.min()), passed=not reasons, reasons=reasons,
                  worst=[(i, float(rel[i])) for i in order] if reasons else [])


MAP_RTOL = 1e-3  # an FP32 anomaly score may differ by this share of its value (at least 1)
MAP_MIN_CORRELATION = 0.99  # and each heatmap must correlate at least this well with the reference


@dataclass
class MapParity:
    """Two runtimes' anomaly graphs on the same images: scores (relative to each, at least 1) and heatmaps
    (Pearson correlation per image; a flat map correlates with nothing and counts as 1 when both are flat)."""

    n: int
    max_abs_diff: float
    max_rel_diff: float
    min_map_correlation: float
    passed: bool
    reasons: list[str] = field(default_factory=list)
    median_map_correlation: float = 1.0

    def to_dict(self) -> dict:
        return {"n": self.n, "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "min_map_correlation": self.min_map_correlation, "passed": self.passed,
                "rule": f"|score diff| <= {MAP_RTOL:g} x max(1, |score|), heatmap correlation >= "
                        f"{MAP_MIN_CORRELATION:g} on every image"}

    def explain(self) -> str:
        return "; ".join(self.reasons)


def compare_maps(ref_scores: np.ndarray, got_scores: np.ndarray, ref_maps: np.ndarray,
                 got_maps: np.ndarray) -> MapParity:
    """Judge an anomaly graph's (scores, heatmaps) against a reference's (FP32 rule)."""
    rs, gs = np.asarray(ref_scores, np.float64).ravel(), np.asarray(got_scores, np.float64).ravel()
    rm = np.asarray(ref_maps, np.float64).reshape(len(rs), -1)
    gm = np.asarray(got_maps, np.float64).reshape(len(gs), -1)
    if rs.shape != gs.shape or rm.shape != gm.shape or len(rs) == 0:
        raise ValueError(f"map parity needs scores and maps of the same shapes, got {rs.shape}/{gs.shape} and "
                         f"{rm.shape}/{gm.shape}")
    diff = np.abs(rs - gs)
    rel = diff / np.maximum(1.0, np.abs(rs))
    rc, gc = rm - rm.mean(1, keepdims=True), gm - gm.mean(1, keepdims=True)
    norms = np.linalg.norm(rc, axis=1) * np.linalg.norm(gc, axis=1)
    flat = norms <= 1e-300
    corr = np.where(flat, 1.0, (rc * gc).sum(1) / np.maximum(norms, 1e-300))
    reasons = []
    if rel.max() > MAP_RTOL:
        reasons.append(f"{int((rel > MAP_RTOL).sum())} of {len(rs)} scores differ by more than {MAP_RTOL:g} of "
                       f"their value (max {rel.max():.1e}, {diff.max():.2e} absolute)")
    if corr.min() < MAP_MIN_CORRELATION:
        reasons.append(f"{int((corr < MAP_MIN_CORRELATION).sum())} heatmaps correlate less than "
                       f"{MAP_MIN_CORRELATION:g} with the reference (min {corr.min():.4f})")
    return MapParity(n=len(rs), max_abs_diff=float(diff.max()), max_rel_diff=float(rel.max()),
                     min_map_correlation=float(corr.min()), passed=not reasons, reasons=reasons,
                     median_map_correlation=float(np.median(corr)))
