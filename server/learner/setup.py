"""The learner a project's settings ask for: what every job (round, clustering, quality run)
and bench builds its learner with."""

from __future__ import annotations

from ..config import Project
from .catalog import choose_input_size
from .core import Learner, LearnerConfig


def input_size(project: Project) -> tuple[int, str]:
    """(pixels per side, why): the project's `input_size` (why: "", the person chose it), or
    with 0 one chosen from its images (see catalog.choose_input_size), the reason said in
    each round's summary."""
    config = project.config
    if config.input_size:
        return config.input_size, ""
    from .. import store
    from ..store import images as image_store

    db = store.connect(project.db_path)
    try:
        side = image_store.typical_side(db)
    finally:
        db.conn.close()
    return choose_input_size(side, config.backbone)


def learner_config(project: Project) -> LearnerConfig:
    config = project.config
    size, why = input_size(project)
    return LearnerConfig(
        backbone=config.backbone,
        checkpoint=config.checkpoint or None,
        pretrained=config.pretrained,
        input_size=size,
        input_size_reason=why,
        batch_size=config.batch_size,
        workers=config.loader_workers,
        mode=config.training_mode,
        semi_supervised=config.semi_supervised,
        device=config.device,
        max_pixels=config.max_pixels,
        seed=config.seed,
    )


def make_learner(project: Project) -> Learner:
    return Learner(learner_config(project), project.cache_dir)
