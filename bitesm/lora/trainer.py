"""4-bit LoRA training on the pretraining loop: continued MLM pretraining or a sequence-level head.

:class:`LoraTrainer` is :class:`bitesm.training.trainer.Trainer` (the same Accelerate loop, logging, validation
schedule, budgets, atomic checkpoints and exact resume) with its model, data and outputs replaced:

* **model**: the base of ``model`` (:mod:`bitesm.lora.base`; 4-bit NF4 with ``lora.load_in_4bit``, else fp or
  ternary), frozen, with LoRA adapters (:func:`bitesm.lora.adapters.attach_lora`). The memory report
  (:mod:`bitesm.lora.memory`) is logged at start and written to ``<output_dir>/memory_report.json``.
* **data**: MLM on ``data.train_fasta`` as in pretraining, or, with a ``head`` section, labelled proteins
  (:mod:`bitesm.data.labelled`) and validation loss plus accuracy (classification) or RMSE and Spearman's rho
  (regression, scipy).
* **checkpoints** hold only the trainable weights (adapters, head) with the optimizer, scheduler and RNG states;
  the frozen base is rebuilt on resume (``<output_dir>/base`` is kept for that).
* **output**: ``<output_dir>/adapter/`` (:func:`bitesm.lora.adapters.save_adapter`), checked by reloading it on its
  base and comparing logits with the trained model's on validation proteins; with ``lora.merge``, also
  ``<output_dir>/merged/`` (:func:`bitesm.lora.adapters.merge_adapter`).

Sources: QLoRA (Dettmers et al. 2023), LoRA (Hu et al. 2021), Long ESM-2 (arXiv 2501.07747).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import torch
import yaml
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import gather_object
from safetensors import safe_open
from torch.utils.data import DataLoader

from ..data.labelled import (
    SequenceLabelCollator,
    check_labels_used,
    encode_labels,
    holdout_split,
    is_fasta,
    load_labelled_sequences,
    read_labels_file,
)
from ..io import atomic_write_json
from ..training.config import Config, ConfigError, resolve_path
from ..training.trainer import Trainer, loader_generator
from .adapters import ADAPTER_FILE, attach_lora, load_adapter, merge_adapter, save_adapter
from .base import BASE_DIR, BaseSpec, load_base, prepare_base
from .memory import format_memory_report, memory_report

logger = logging.getLogger(__name__)

__all__ = ["ADAPTER_DIR", "MERGED_DIR", "LoraTrainer", "train_lora"]

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
MEMORY_REPORT = "memory_report.json"


def _keep_trainable_weights(models, weights, output_dir) -> None:
    """Accelerate save-state hook: checkpoint only the parameters that train (the frozen base is rebuilt)."""
    for i, model in enumerate(models):
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        weights[i] = {k: v for k, v in weights[i].items() if k in names}


class LoraTrainer(Trainer):
    """Train LoRA adapters (and a sequence head) on a frozen 4-bit, fp or ternary base; see the module docstring.

    Args:
        config: a validated config with a ``lora`` section (and optionally ``head``).
        output_dir: run folder.
        resume: continue from the newest checkpoint in ``output_dir``.
        allow_config_change: on resume, accept config changes that break an exact resume (as
            :class:`~bitesm.training.trainer.Trainer`).

    Raises:
        ConfigError: no ``lora`` section; label / data problems (see :mod:`bitesm.data.labelled`); a target module
            name that selects nothing; the run-folder, resume and preflight checks of
            :class:`~bitesm.training.trainer.Trainer`.
    """

    load_state_kwargs = {"strict": False}  # checkpoints hold the trainable weights only; checked in load_checkpoint
    final_dir_name = ADAPTER_DIR

    def __init__(
        self, config: Config, output_dir: str | os.PathLike, resume: bool = False, allow_config_change: bool = False
    ):
        self.label_names: list[str] | None = None
        super().__init__(config, output_dir, resume=resume, allow_config_change=allow_config_change)
        self.accelerator.register_save_state_pre_hook(_keep_trainable_weights)

    def check_config(self) -> None:
        if self.config.lora is None:
            raise ConfigError(
                "bitesm lora needs a lora: section (e.g. configs/qlora-long-esm2-t6.yaml); for full pretraining "
                "use bitesm train"
            )

    @property
    def task(self) -> str:
        return "mlm" if self.config.head is None else self.config.head.task

    # -- data ------------------------------------------------------------------------------------------------

    def load_datasets(self):
        head, d = self.config.head, self.config.data
        if head is None:
            return super().load_datasets()
        train_path = resolve_path(head.train_file)
        labels_path = resolve_path(head.labels_file)
        if labels_path is not None and not is_fasta(train_path):
            raise ConfigError(
                f"head.labels_file is for a FASTA head.train_file, but {train_path} is read as a CSV/TSV with its own "
                f"{head.label_column!r} column; remove head.labels_file (or give a .fasta train_file)"
            )
        labels = read_labels_file(labels_path, head.id_column, head.label_column) if labels_path else None
        columns = dict(sequence_column=head.sequence_column, label_column=head.label_column, id_column=head.id_column)
        train = load_labelled_sequences(
            train_path, labels_path, max_sequences=d.max_sequences, labels=labels, **columns
        )
        if head.validation_file is not None:
            val_path = resolve_path(head.validation_file)
            val = load_labelled_sequences(val_path, labels_path, labels=labels, **columns)
        else:
            val_path = train_path
            train, val = holdout_split(train, d.validation_size, self.config.training.seed, source=train_path)
        if labels is not None and d.max_sequences is None:
            check_labels_used(labels, train + val, labels_path)
        train, self.label_names = encode_labels(train, head.task, source=train_path)
        if head.num_labels is not None and head.num_labels != len(self.label_names):
            raise ConfigError(
                f"head.num_labels={head.num_labels} but {train_path} has {len(self.label_names)} classes "
                f"({self.label_names[:20]}); fix head.num_labels or set it to null"
            )
        val, _ = encode_labels(val, head.task, self.label_names, source=val_path)
        logger.info("%s: %d training / %d validation proteins", head.task, len(train), len(val))
        return train, val

    def build_collator(self, generator: torch.Generator):
        if self.config.head is None:
            return super().build_collator(generator)
        return SequenceLabelCollator(
            self.tokenizer, self.config.data.max_length, generator=generator, regression=self.task == "regression"
        )

    # -- model -----------------------------------------------------------------------------------------------

    def build_model(self):
        c, lc = self.config, self.config.lora
        source, base_config, tokenizer = prepare_base(
            c.model, c.data.max_length, c.training.seed, self.output_dir / BASE_DIR, reuse=self.resume_from is not None
        )
        self.base_spec = BaseSpec(
            source=source,
            config=base_config.to_dict(),
            load_in_4bit=lc.load_in_4bit,
            quant_type=lc.quant_type,
            double_quant=lc.double_quant,
            compute_dtype=lc.compute_dtype,
            task=self.task,
            label_names=self.label_names,
        )
        base = load_base(self.base_spec, device=self.accelerator.device, seed=c.training.seed)
        model = attach_lora(
            base,
            r=lc.r,
            alpha=lc.alpha,
            dropout=lc.dropout,
            target_modules=lc.target_modules,
            modules_to_save=lc.modules_to_save,
            gradient_checkpointing=lc.gradient_checkpointing,
        )
        self.memory = memory_report(model, double_quant=lc.double_quant)
        if self.accelerator.is_main_process:
            logger.info("base %s, task %s\n%s", source, self.task, format_memory_report(self.memory))
            atomic_write_json(self.output_dir / MEMORY_REPORT, self.memory)
        return model, tokenizer

    def describe_model(self) -> str:
        t = self.memory["trainable"]
        return (
            f"LoRA on a {self.memory['base_format']} base ({self.memory['base']['params']:,} frozen parameters), "
            f"{t['params']:,} trainable"
        )

    def on_train_start(self, bar) -> None:
        """Validate the untrained model (LoRA's B starts at zero: the base itself, plus a fresh head) at step 0 of a
        new run, the baseline of the validation curve (skipped on resume and with ``eval_every: 0``)."""
        if self.state.step == 0 and self.config.training.eval_every:
            self._log(self.validate(), bar)

    # -- checkpoints -----------------------------------------------------------------------------------------

    def load_checkpoint(self, path: Path) -> None:
        """Resume from ``path``, whose model file must hold exactly this run's trainable weights.

        Raises:
            ValueError: the checkpoint's weights are not this run's adapter (other targets, rank or head).
        """
        # Accelerate saves and loads the model it was given (unwrapped from DDP): its parameter names.
        model = self.accelerator.unwrap_model(self.model)
        expected = {n for n, p in model.named_parameters() if p.requires_grad}
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            stored = set(f.keys())
        if stored != expected:
            raise ValueError(
                f"checkpoint {path} does not hold this run's trainable weights (missing "
                f"{sorted(expected - stored)[:4]}, unexpected {sorted(stored - expected)[:4]}); resume with the config "
                "it was trained with"
            )
        super().load_checkpoint(path)

    # -- evaluation ------------------------------------------------------------------------------------------

    def _head_val_loader(self) -> DataLoader:
        loader = DataLoader(
            self.val_dataset, batch_size=self.micro_batch_size, collate_fn=self.collator.for_validation(),
            generator=loader_generator(),
        )
        acc = self.accelerator
        return prepare_data_loader(
            loader, acc.device, acc.num_processes, acc.process_index, put_on_device=True, even_batches=False,
            rng_types=[],
        )

    @torch.no_grad()
    def validate(self) -> dict:
        """MLM validation as in pretraining, or for a head (all processes' proteins together):

        * classification: ``val/loss`` (mean cross-entropy, nats) and ``val/accuracy``;
        * regression: ``val/loss`` (mean squared error, label units squared), ``val/rmse`` and ``val/spearman``
          (Spearman's rho of predictions and labels, ``scipy.stats.spearmanr``; None when either is constant).
        """
        if self.config.head is None:
            return super().validate()
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        rows = []
        for batch in self._head_val_loader():
            with acc.autocast():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            rows += list(zip(logits.float().cpu().tolist(), batch["labels"].cpu().tolist()))
        model.train(was_training)
        rows = gather_object(rows)
        logits = torch.tensor([r[0] for r in rows], dtype=torch.float64)
        labels = torch.tensor([r[1] for r in rows])
        if self.task == "classification":
            loss = torch.nn.functional.cross_entropy(logits, labels.long()).item()
            return {
                "val/loss": loss,
                "val/accuracy": (logits.argmax(-1) == labels).double().mean().item(),
                "val/proteins": len(rows),
            }
        from scipy.stats import spearmanr

        pred, target = logits[:, 0], labels.double()
        mse = torch.mean((pred - target) ** 2).item()
        rho = spearmanr(pred.numpy(), target.numpy()).statistic if len(rows) > 1 else math.nan
        return {
            "val/loss": mse,
            "val/rmse": math.sqrt(mse),
            "val/spearman": None if not math.isfinite(rho) else float(rho),
            "val/proteins": len(rows),
        }

    # -- output ----------------------------------------------------------------------------------------------

    def write_model_folder(self, folder: Path) -> None:
        """Write the adapter (with its ``lora_base.json`` and tokenizer), ``training_config.yaml`` and
        ``trainer_state.json`` into ``folder``: the ``model/`` folder of each checkpoint of a LoRA run."""
        save_adapter(self.accelerator.unwrap_model(self.model), folder, self.base_spec, self.tokenizer)
        (folder / "training_config.yaml").write_text(yaml.safe_dump(self.config.to_dict()))
        atomic_write_json(folder / "trainer_state.json", dataclasses.asdict(self.state))

    def save_final_model(self) -> Path:
        """Save the adapter to ``output_dir/adapter`` (and ``merged/`` with ``lora.merge``), then reload it on its
        base and record the largest logit difference from the trained model (``adapter_check.json``)."""
        acc = self.accelerator
        adapter_dir = self.output_dir / ADAPTER_DIR
        acc.wait_for_everyone()
        if acc.is_main_process:
            model = acc.unwrap_model(self.model)
            save_adapter(model, adapter_dir, self.base_spec, self.tokenizer)
            (adapter_dir / "training_config.yaml").write_text(yaml.safe_dump(self.config.to_dict()))
            atomic_write_json(adapter_dir / "trainer_state.json", dataclasses.asdict(self.state))
            atomic_write_json(adapter_dir / MEMORY_REPORT, self.memory)
            self.adapter_check = self.check_saved_adapter(adapter_dir)
            atomic_write_json(self.output_dir / "adapter_check.json", self.adapter_check)
            check = self.adapter_check
            logger.info(
                "adapter %s: %d bytes (%.2f%% of the fp32 base), reloaded max |logit difference| %.3g", adapter_dir,
                check["adapter_bytes"], 100 * check["adapter_fraction_of_fp32_base"], check["reload_max_abs_diff"],
            )
            if self.config.lora.merge:
                merge_adapter(adapter_dir, self.output_dir / MERGED_DIR, device=str(acc.device))
                logger.info("merged model written to %s", self.output_dir / MERGED_DIR)
        acc.wait_for_everyone()
        return adapter_dir

    @torch.no_grad()
    def check_saved_adapter(self, adapter_dir: Path, proteins: int = 4) -> dict:
        """Reload the saved adapter on a freshly loaded base and compare its logits with the trained model's.

        Returns:
            dict with ``reload_max_abs_diff`` (max |logit difference| on up to ``proteins`` validation proteins,
            eval mode), ``adapter_bytes`` (``adapter_model.safetensors``), ``base_fp32_bytes`` and
            ``adapter_fraction_of_fp32_base``.
        """
        acc = self.accelerator
        trained = acc.unwrap_model(self.model)
        collate = self.collator.for_validation() if self.config.head is not None else dataclasses.replace(
            self.collator, random_crop=False, generator=torch.Generator().manual_seed(0)
        )
        batch = collate([self.val_dataset[i] for i in range(min(proteins, len(self.val_dataset)))])
        inputs = {k: batch[k].to(acc.device) for k in ("input_ids", "attention_mask")}
        was_training = trained.training
        trained.eval()
        expected = trained(**inputs).logits.float()
        trained.train(was_training)
        reloaded, _ = load_adapter(adapter_dir, device=acc.device)
        got = reloaded(**inputs).logits.float()
        del reloaded
        adapter_bytes = (adapter_dir / ADAPTER_FILE).stat().st_size
        base_bytes = self.memory["base"]["fp32_bytes"]
        return {
            "reload_max_abs_diff": (got - expected).abs().max().item(),
            "adapter_bytes": adapter_bytes,
            "base_fp32_bytes": base_bytes,
            "adapter_fraction_of_fp32_base": adapter_bytes / base_bytes,
        }

    def train(self) -> dict:
        """Train (see :meth:`bitesm.training.trainer.Trainer.train`); the result adds ``memory`` (the memory
        report) and, on the main process, ``adapter_check`` (:meth:`check_saved_adapter`)."""
        result = super().train()
        result["memory"] = self.memory
        if hasattr(self, "adapter_check"):
            result["adapter_check"] = self.adapter_check
        if self.config.lora.merge:
            result["merged_dir"] = str(self.output_dir / MERGED_DIR)
        return result


def train_lora(
    config: Config, output_dir: str | os.PathLike, resume: bool = False, allow_config_change: bool = False
) -> dict:
    """Run a ``bitesm lora`` config end to end (see :class:`LoraTrainer`).

    Args:
        config: a validated config with a ``lora`` section.
        output_dir: run folder (``--output-dir``).
        resume: continue from the newest checkpoint (``--resume``).
        allow_config_change: on resume, accept config changes that break an exact resume (``--allow-config-change``).

    Returns:
        the final metrics (:meth:`LoraTrainer.train`).

    Raises:
        ConfigError: as :class:`LoraTrainer`.
        TrainingInterrupted: SIGTERM / SIGINT stopped the run after a checkpoint (:mod:`bitesm.training.preemption`).
    """
    return LoraTrainer(config, output_dir, resume=resume, allow_config_change=allow_config_change).train()
