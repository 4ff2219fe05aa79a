"""The consensus rules and the one decision they make: an image's answers in, its status,
class and agreement out. Pure functions of their arguments; `store.labels.refresh_state`
gathers the answers and writes the decision."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

FINAL = ("agreed", "adjudicated")  # statuses whose label trains the model and is exported
# "auto": labeled by the model alone (an auto-label, no person's answer); it trains nothing
# and is exported only when asked for (autolabel/).
STATUSES = ("needs_votes", "agreed", "disputed", "adjudicated", "auto")


class RulesError(ValueError):
    """Rules that cannot be followed (a vote count below one, a share outside 0..1)."""


@dataclass(frozen=True)
class Rules:
    votes_per_image: int = 1
    qa_fraction: float = 0.1  # share of images drawn for the QA sample
    qa_votes: int = 3  # votes a QA image needs (capped by how many people label)
    agreement_threshold: float = 0.6  # below this share the image is disputed
    blind: bool = True  # annotators do not see each other's votes

    @classmethod
    def of(cls, config) -> Rules:
        """The rules from a project's settings (any object with these attributes)."""
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})

    def check(self) -> Rules:
        if self.votes_per_image < 1 or self.qa_votes < 1:
            raise RulesError("votes_per_image and qa_votes must be at least 1")
        if not 0.0 <= self.qa_fraction <= 1.0:
            raise RulesError("qa_fraction must be between 0 and 1")
        if not 0.0 < self.agreement_threshold <= 1.0:
            raise RulesError("agreement_threshold must be above 0 and at most 1")
        return self


def votes_needed_now(votes_needed: int, base: int, people: int) -> int:
    """The votes an image needs now: at least the project's votes_per_image, and the extra
    votes of a QA image only as far as there are people labeling to give them."""
    return max(base, min(votes_needed, people))


@dataclass(frozen=True)
class Decision:
    status: str  # one of STATUSES
    class_id: int | None
    agreement: float | None  # share of decided votes (labels and unsure) for class_id


def decide(
    labels: Sequence[tuple[int | None, int]],
    unsure: int,
    *,
    needed: int,
    rules: Rules,
    model: dict | None = None,
    adjudications: Sequence[tuple[int, int]] = (),
    review_requests: Sequence[int] = (),
    auto_label: int | None = None,
) -> Decision:
    """An image's state from its effective answers: `labels` as (user id or None for an
    imported label, class id) pairs, `unsure` the number of unsure votes, `adjudications` as
    (annotation id, class id) pairs and `review_requests` as annotation ids. Skips do not
    count.

    A review request newer than the latest adjudication sends the image to review
    (disputed, whatever the votes say); otherwise the latest adjudication settles it.
    Without either, the votes decide: the weighted vote when `model` is trusted and the
    votes disagree, the plain majority otherwise; a tie gives no class. `auto_label`, the
    class of the model's own effective answer, decides only an image no person has
    answered (status "auto"): any person's answer supersedes it."""
    if auto_label is not None and not (labels or unsure or adjudications or review_requests):
        return Decision("auto", auto_label, None)
    votes = _decide_by_votes(labels, unsure, needed, rules, model)
    latest_request = max(review_requests, default=None)
    latest_adjudication = max(adjudications, default=None)  # annotation ids only grow
    if latest_request is not None and (
        latest_adjudication is None or latest_request > latest_adjudication[0]
    ):
        return Decision("disputed", votes.class_id, votes.agreement)
    if latest_adjudication is not None:
        class_id = latest_adjudication[1]
        decided = len(labels) + unsure
        agreement = sum(1 for _, c in labels if c == class_id) / decided if decided else None
        return Decision("adjudicated", class_id, agreement)
    return votes


def _decide_by_votes(
    labels: Sequence[tuple[int | None, int]],
    unsure: int,
    needed: int,
    rules: Rules,
    model: dict | None,
) -> Decision:
    decided = len(labels) + unsure
    if decided == 0:
        return Decision("needs_votes", None, None)
    counts = Counter(c for _, c in labels)
    ranked = counts.most_common()
    class_id = None
    if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
        class_id = ranked[0][0]
    if model is not None and model.get("trusted") and len(labels) > 1 and len(ranked) > 1:
        class_id = _weighted_class(model, labels)
    agreement = counts[class_id] / decided if class_id is not None else (
        ranked[0][1] / decided if ranked else 0.0)
    if decided < needed:
        return Decision("needs_votes", class_id, agreement)
    if class_id is None or unsure or agreement < rules.agreement_threshold:
        return Decision("disputed", class_id, agreement)
    return Decision("agreed", class_id, agreement)


def _weighted_class(model: dict, labels: Sequence[tuple[int | None, int]]) -> int | None:
    """The class with the highest posterior under the annotator model, or None when the
    model cannot judge these votes (a class it has not seen)."""
    # Imported here: the annotator model brings scipy, and the store imports these rules
    # on every start while only a trusted model ever weighs a vote.
    from .annotator_model import weighted_label

    index = {c: i for i, c in enumerate(model["class_ids"])}
    if any(c not in index for _, c in labels):
        return None
    votes = [(_annotator_key(u), index[c]) for u, c in labels]
    posterior = weighted_label(model["confusions"], model["priors"], votes)
    best = sorted(range(len(posterior)), key=lambda k: -posterior[k])
    if len(best) > 1 and abs(posterior[best[0]] - posterior[best[1]]) < 1e-9:
        return None  # still a tie
    return model["class_ids"][best[0]]


def _annotator_key(user_id: int | None) -> str:
    return "import" if user_id is None else str(user_id)
