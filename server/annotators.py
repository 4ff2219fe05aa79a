"""How far annotators agree and how much to trust each of them: the store's votes through
`server.consensus`'s measures. Used by the agreement page, the CLI and each round (which
refits the annotator model before it takes the consensus labels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

import numpy as np
from sqlite_utils import Database

from . import store
from .consensus import annotator_model as agreement
from .consensus import measures as agreement_measures

IMPORT = "import"  # the annotator key of labels that came with the images


def _key(user_id: int | None) -> str:
    return IMPORT if user_id is None else str(user_id)


def _triples(db: Database) -> tuple[list[tuple[int, str, int]], list[dict]]:
    classes = store.classes(db)
    index = {c["id"]: i for i, c in enumerate(classes)}
    return [(image, _key(user), index[c]) for image, user, c in store.all_votes(db)], classes


def fit_annotator_model(db: Database) -> dict | None:
    """Fit Dawid-Skene over every vote (gold images clamped to their known answer), store it,
    and re-judge every image with several votes under it. The model weighs votes only when
    `trusted`: every annotator shares enough images with others; until then consensus stays
    the plain majority. Returns the stored model, or None when fewer than two people voted."""
    triples, classes = _triples(db)
    people = {a for _, a, _ in triples if a != IMPORT}
    if len(people) < 2 or not classes:
        return None
    index = {c["id"]: i for i, c in enumerate(classes)}
    gold = {image: index[c] for image, c in store.gold_answers(db).items()}
    fitted = agreement.dawid_skene(triples, len(classes), gold=gold)
    trusted = agreement.weights_trustworthy([t for t in triples if t[1] != IMPORT])
    model = {
        "class_ids": [c["id"] for c in classes],
        "priors": fitted.priors.tolist(),
        "confusions": {a: m.tolist() for a, m in fitted.confusion_by_annotator().items()},
        "accuracies": fitted.accuracy_by_annotator(),
        "trusted": trusted,
    }
    store.save_annotator_model(db, model, len(triples), trusted)
    store.refresh_multivote(db)
    return model


@dataclass
class AnnotatorRow:
    user_id: int
    name: str
    role: str
    labels: int
    median_seconds: float | None
    agreement: float | None  # share of their votes equal to the consensus label
    estimated_accuracy: float | None  # Dawid-Skene, from the latest fitted model
    gold_votes: int
    gold_accuracy: float | None


@dataclass
class AgreementReport:
    classes: list[dict]
    statuses: dict[str, int]
    votes: int
    overlap_images: int  # images with two or more votes
    fleiss: agreement.FleissKappa | None
    alpha: float | None
    annotators: list[AnnotatorRow]
    kappas: dict[tuple[str, str], agreement_measures.PairKappa] = field(default_factory=dict)
    confusion: np.ndarray | None = None  # between annotators, summed over ordered pairs
    model: dict | None = None
    weighted: bool = False
    confused: list[dict] = field(default_factory=list)  # see confused_answers


SHOWN_IMAGES = 24  # of a confused pair's answers, the page shows this many


def confused_answers(db: Database, model: dict | None, names: dict[str, str]) -> list[dict]:
    """The annotators who confuse two classes (consensus/confused_pairs.py on the latest
    model's confusion matrices, labels that came with the import left out), each with their
    answers on that pair not yet reviewed: images they labeled B whose consensus class is A,
    neither waiting for review nor settled by a reviewer. A cell with no such answer left
    (all sent to review, say) is not listed."""
    from .consensus.confused_pairs import confused_pairs
    from .store.audit_actions import answers_on_pair

    if not model:
        return []
    class_ids = model["class_ids"]
    classes = {c["id"]: c["name"] for c in store.classes(db)}
    people = {key: matrix for key, matrix in model["confusions"].items() if key != IMPORT}
    rows = []
    for pair in confused_pairs(people):
        true_id, answered_id = class_ids[pair.true], class_ids[pair.answered]
        if true_id not in classes or answered_id not in classes:
            continue  # a class removed since the model was fitted
        images = answers_on_pair(db, int(pair.annotator), true_id, answered_id)
        if images:
            rows.append({"user_id": int(pair.annotator),
                         "name": names.get(pair.annotator, pair.annotator),
                         "true_id": true_id, "true": classes[true_id],
                         "answered_id": answered_id, "answered": classes[answered_id],
                         "rate": pair.rate, "others": pair.others, "count": len(images),
                         "images": images[:SHOWN_IMAGES]})
    return rows


def agreement_report(db: Database) -> AgreementReport:
    triples, classes = _triples(db)
    k = len(classes)
    users = {u["id"]: u for u in store.list_users(db)}
    names = {str(uid): u["name"] for uid, u in users.items()} | {IMPORT: "(import)"}
    counts: dict[int, int] = {}
    for image, _, _ in triples:
        counts[image] = counts.get(image, 0) + 1
    overlap = sum(1 for n in counts.values() if n >= 2)
    fleiss = alpha = None
    kappas: dict[tuple[str, str], agreement_measures.PairKappa] = {}
    confusion = None
    if overlap and k:
        fleiss = agreement_measures.fleiss_kappa(triples, k)
        alpha = agreement_measures.krippendorff_alpha(triples, k)
        kappas = {
            (names.get(a, a), names.get(b, b)): value
            for (a, b), value in agreement_measures.cohen_kappa_pairs(triples).items()
        }
        confusion = agreement_measures.pairwise_confusion(triples, k)
    index = {c["id"]: i for i, c in enumerate(classes)}
    consensus = {image: index[c] for image, c in store.consensus_labels(db).items()}
    with_consensus = (agreement_measures.agreement_with_consensus(triples, consensus)
                      if triples else {})
    gold = {image: index[c] for image, c in store.gold_answers(db).items()}
    model = store.latest_annotator_model(db)
    accuracies = (model or {}).get("accuracies", {})
    seconds = store.annotator_seconds(db)
    rows = []
    for uid, user in sorted(users.items(), key=lambda item: item[1]["name"]):
        mine = [(image, label) for image, a, label in triples if a == str(uid)]
        on_gold = [label == gold[image] for image, label in mine if image in gold]
        rows.append(AnnotatorRow(
            user_id=uid,
            name=user["name"],
            role=user["role"],
            labels=len(mine),
            median_seconds=round(median(seconds[uid]), 1) if seconds.get(uid) else None,
            agreement=getattr(with_consensus.get(str(uid)), "share", None),
            estimated_accuracy=accuracies.get(str(uid)),
            gold_votes=len(on_gold),
            gold_accuracy=sum(on_gold) / len(on_gold) if on_gold else None,
        ))
    return AgreementReport(
        classes=classes,
        statuses=store.status_counts(db),
        votes=len(triples),
        overlap_images=overlap,
        fleiss=fleiss,
        alpha=alpha,
        annotators=rows,
        kappas=kappas,
        confusion=confusion,
        model=model,
        weighted=bool(model and model.get("trusted")),
        confused=confused_answers(db, model, names),
    )
