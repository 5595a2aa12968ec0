"""MLM pretraining on Accelerate: config, loop, checkpoints."""

from .config import Config, ConfigError, load_config, parse_override
from .trainer import Trainer, TrainerState, build_model, train

__all__ = ["Config", "ConfigError", "load_config", "parse_override", "Trainer", "TrainerState", "build_model", "train"]
