"""Verdict rules: from calibrated scores and card thresholds to one word and a confidence."""

from __future__ import annotations

from dataclasses import dataclass

AUTHENTIC = "authentic"
AI_GENERATED = "ai_generated"
MANIPULATED = "manipulated"
ERROR = "error"
VERDICTS = (AUTHENTIC, AI_GENERATED, MANIPULATED, ERROR)


@dataclass(frozen=True)
class Verdict:
    label: str
    confidence: float

    @property
    def is_suspicious(self) -> bool:
        return self.label in (AI_GENERATED, MANIPULATED)


def decide_verdict(ai_score: float, manipulation_score: float, ai_threshold: float, manipulation_threshold: float) -> Verdict:
    """AI-generated wins over manipulated (a generated image has no authentic pixels to splice into).

    Confidence is the probability of the stated verdict: the score itself for a
    positive verdict, and P(not generated) * P(not manipulated) for `authentic`.
    """
    if ai_score >= ai_threshold:
        return Verdict(AI_GENERATED, float(ai_score))
    if manipulation_score >= manipulation_threshold:
        return Verdict(MANIPULATED, float(manipulation_score))
    return Verdict(AUTHENTIC, float((1.0 - ai_score) * (1.0 - manipulation_score)))
