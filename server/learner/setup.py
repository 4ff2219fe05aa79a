"""The learner a project's settings ask for: what every job (round, clustering, quality run)
and bench builds its learner with."""

from __future__ import annotations

from ..config import Project
from .core import Learner, LearnerConfig


def learner_config(project: Project) -> LearnerConfig:
    config = project.config
    return LearnerConfig(
        backbone=config.backbone,
        checkpoint=config.checkpoint or None,
        pretrained=config.pretrained,
        input_size=config.input_size,
        batch_size=config.batch_size,
        workers=config.loader_workers,
        mode=config.training_mode,
        device=config.device,
        max_pixels=config.max_pixels,
        seed=config.seed,
    )


def make_learner(project: Project) -> Learner:
    return Learner(learner_config(project), project.cache_dir)
