"""MLM pretraining on Accelerate: config, loop, checkpoints."""

from .config import Config, ConfigError, load_config, parse_override
from .preemption import TrainingInterrupted
from .trainer import Trainer, TrainerState, build_model, train

__all__ = [
    "Config",
    "ConfigError",
    "Trainer",
    "TrainerState",
    "TrainingInterrupted",
    "build_model",
    "load_config",
    "parse_override",
    "train",
]
