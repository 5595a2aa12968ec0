"""Publishing checkpoints on the HuggingFace Hub: the generated model card (:mod:`bitesm.hub.model_card`), the
push with validation, staging and retries (:mod:`bitesm.hub.push`); ``bitesm push`` is :mod:`bitesm.cli.push`."""

from .model_card import evaluation_markdown, find_evaluation, load_evaluation, model_card
from .push import HubPushError, UploadPlan, plan_upload, push_to_hub, resolve_model_dir, validate_model_folder

__all__ = [
    "HubPushError",
    "UploadPlan",
    "evaluation_markdown",
    "find_evaluation",
    "load_evaluation",
    "model_card",
    "plan_upload",
    "push_to_hub",
    "resolve_model_dir",
    "validate_model_folder",
]
