"""Verdict rules: from calibrated scores and card thresholds to one word and a confidence."""

from __future__ import annotations

from dataclasses import dataclass, field

AUTHENTIC = "authentic"
AI_GENERATED = "ai_generated"
MANIPULATED = "manipulated"
ERROR = "error"
VERDICTS = (AUTHENTIC, AI_GENERATED, MANIPULATED, ERROR)


@dataclass(frozen=True)
class Verdict:
    label: str
    confidence: float
    reasons: list[str] = field(default_factory=list)  # why, in words (scores over thresholds, declared sources)

    @property
    def is_suspicious(self) -> bool:
        return self.label in (AI_GENERATED, MANIPULATED)


def decide_verdict(
    ai_score: float,
    manipulation_score: float,
    ai_threshold: float,
    manipulation_threshold: float,
    declared_ai: bool = False,
) -> Verdict:
    """AI-generated wins over manipulated (a generated image has no authentic pixels to splice into).

    A file that declares an AI source (forensics.provenance) is `ai_generated`
    whatever the pixel model says; the reasons then say so. Confidence is the
    probability of the stated verdict: the score itself for a positive verdict,
    1.0 for a declared AI source the model did not see, and
    P(not generated) * P(not manipulated) for `authentic`.
    """
    reasons = []
    if ai_score >= ai_threshold:
        reasons.append(f"ai_score {ai_score:.3f} >= threshold {ai_threshold:.3f}")
    if manipulation_score >= manipulation_threshold:
        reasons.append(f"manipulation_score {manipulation_score:.3f} >= threshold {manipulation_threshold:.3f}")
    if ai_score >= ai_threshold:
        return Verdict(AI_GENERATED, float(ai_score), reasons)
    if declared_ai:
        return Verdict(AI_GENERATED, 1.0, reasons)
    if manipulation_score >= manipulation_threshold:
        return Verdict(MANIPULATED, float(manipulation_score), reasons)
    reasons.append(f"ai_score {ai_score:.3f} < threshold {ai_threshold:.3f} and "
                   f"manipulation_score {manipulation_score:.3f} < threshold {manipulation_threshold:.3f}")
    return Verdict(AUTHENTIC, float((1.0 - ai_score) * (1.0 - manipulation_score)), reasons)
