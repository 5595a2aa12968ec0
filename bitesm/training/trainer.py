"""Masked-language-model pretraining loop on Accelerate (one process, or data parallel with ``accelerate launch``).

What a run writes under ``output_dir``:

* ``model/``: the final HF-format model (``save_pretrained``, with its remote code), tokenizer and
  ``training_config.yaml``, written atomically;
* ``checkpoints/checkpoint-<step>/``: resumable states (see :mod:`bitesm.training.checkpoint`);
* ``tensorboard/``: TensorBoard events (train loss, learning rate, tokens/s, grad norm; validation loss and
  perplexity);
* ``metrics.jsonl``: the same scalars, one JSON object per line (a resumed run first drops the rows logged after its
  checkpoint: no step appears twice);
* ``training_config.yaml`` (the config the run started with) and ``config_history.jsonl`` (one line per segment:
  the step it started at, its config and what changed; :mod:`bitesm.training.resume`);
* ``eval/proteingym.json`` when the config has an ``evaluation.proteingym`` section.

Before anything is computed the run checks its inputs, its output folder and ``data.max_length``
(:mod:`bitesm.training.preflight`) and, on ``--resume``, that the config still matches the checkpoint's
(:func:`bitesm.training.resume.check_resume_config`). SIGTERM and SIGINT stop it after the current optimizer step
with a checkpoint (:mod:`bitesm.training.preemption`).

Exact resume: the data order of epoch ``e`` is a permutation drawn from ``seed`` and ``e`` alone, the collator draws
crops and masks from its own generator whose state is checkpointed per process (it runs in the loop, after the data
loader, so read-ahead never advances it), the data loaders draw their worker seeds from their own generators (a
resumed run opens a loader mid-epoch that an uninterrupted one does not, and must not move the global RNG that
dropout uses), and Accelerate restores the model, optimizer, scheduler and global RNG states, so a killed and resumed
run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import yaml
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader, skip_first_batches
from accelerate.utils import send_to_device, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..data import MLMCollator, load_fasta_dataset, load_tokenizer
from ..evaluation.perplexity import masked_lm_loss_sums, summarize, validation_collator
from ..io import atomic_write_json
from ..models import BitEsmForMaskedLM, bitesm_config_from_esm, load_esm_config, load_masked_lm
from ..models.long import SPECIAL_TOKENS, convert_to_long, long_config, max_residues, to_long_model
from . import checkpoint as ckpt
from . import resume as run_resume
from .config import Config, ConfigError, resolve_path
from .preemption import StopSignals, TrainingInterrupted
from .preflight import check_run

logger = logging.getLogger(__name__)

FINAL_MODEL_DIR = "model"


@dataclass
class TrainerState:
    """Progress of a run, saved in every checkpoint as ``trainer_state.json``."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this process consumed in the current epoch
    tokens: int = 0  # non-padding tokens trained on, all processes
    elapsed_seconds: float = 0.0  # training wall-clock time, summed over resumed segments


def build_model(model_cfg, seed: int = 0, max_length: int | None = None) -> tuple[BitEsmForMaskedLM, object]:
    """Create the model and tokenizer described by a :class:`~bitesm.training.config.ModelConfig`.

    ``model.config`` gives a randomly initialised model of that architecture (plus ``overrides``);
    ``model.from_pretrained`` converts an ESM-2 checkpoint (:meth:`BitEsmForMaskedLM.from_esm`) or continues a
    bitesm one. With ``model.attention_window`` set, the model is Long ESM-2's (:mod:`bitesm.models.long`):
    sliding-window attention and ``max_position_embeddings`` large enough for ``max_length`` tokens (a pretrained
    checkpoint is converted with :func:`~bitesm.models.long.convert_to_long`, learned positions copied); without
    it a ``from_pretrained`` checkpoint keeps its own attention (global for ESM-2).

    Args:
        model_cfg: the ``model`` section.
        seed: seed of the random initialisation.
        max_length: ``data.max_length``, tokens per protein including <cls> and <eos> (``None``: the config's).

    Raises:
        ConfigError: a bitesm checkpoint whose quantization disagrees with the config.
        ValueError: an attention window on a checkpoint that cannot take it (PTQ softmax sites).
    """
    window = model_cfg.attention_window
    wanted = None if max_length is None else max_length - SPECIAL_TOKENS  # residues
    if model_cfg.from_pretrained is not None:
        source = resolve_path(model_cfg.from_pretrained)
        model = load_masked_lm(source, quantization=model_cfg.quantization, activation_bits=model_cfg.activation_bits)
        check_checkpoint_quantization(model_cfg, source, model.config.quantization)
        tokenizer = load_tokenizer(resolve_path(model_cfg.tokenizer) or source)
        if window is not None:
            current = max_residues(model.config)
            if wanted is not None and wanted > current:
                model, tokenizer = convert_to_long(model, max_length=wanted, window=window, tokenizer=tokenizer)
                logger.info("Long ESM-2: %s converted to window %d and %d residues", source, window, wanted)
            elif model.config.attention_window != window:
                model = to_long_model(model, current, window, source)
                tokenizer.model_max_length = current + SPECIAL_TOKENS
    else:
        source = resolve_path(model_cfg.config)
        config = bitesm_config_from_esm(
            load_esm_config(source),
            quantization=model_cfg.quantization,
            activation_bits=model_cfg.activation_bits,
            **model_cfg.overrides,
        )
        tokenizer = load_tokenizer(resolve_path(model_cfg.tokenizer) or source)
        if window is not None:
            residues = max(max_residues(config), wanted or 0)
            config = long_config(config, residues, window, source)
            tokenizer.model_max_length = residues + SPECIAL_TOKENS
        set_seed(seed)
        model = BitEsmForMaskedLM(config)
    # The contact head is not used by the MLM loss; frozen, it needs no gradient and DDP needs no
    # find_unused_parameters.
    model.esm.contact_head.requires_grad_(False)
    return model, tokenizer


def check_checkpoint_quantization(model_cfg, source: str, quantization: str | None) -> None:
    """Refuse a ``model.from_pretrained`` checkpoint whose ``quantization`` differs from ``model.quantization``.

    Raises:
        ConfigError: naming both values and the fix.
    """
    if quantization != model_cfg.quantization:
        raise ConfigError(
            f"model.quantization={model_cfg.quantization!r} but checkpoint {source} is "
            f"{quantization!r}; set model.quantization to match the checkpoint"
        )


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases, LayerNorm weights and embeddings (common BERT practice)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embeddings" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _LogWindow:
    """Training loss and token throughput accumulated between two log lines."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.micro_batches = 0
        self.tokens = 0
        self.start = time.time()

    def add_loss(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss.detach().float()
        self.micro_batches += 1

    def mean_loss(self) -> torch.Tensor:
        return self.loss_sum / max(self.micro_batches, 1)

    def tokens_per_second(self) -> float:
        return self.tokens / max(time.time() - self.start, 1e-9)


def _as_list(examples: list) -> list:
    return examples


def loader_generator() -> torch.Generator:
    """A DataLoader's own generator: creating an iterator draws a worker base seed, from the global RNG without one."""
    return torch.Generator().manual_seed(0)


def _epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class Trainer:
    """Runs one training config; see the module docstring for what it writes.

    What is trained comes from overridable methods (:class:`bitesm.lora.trainer.LoraTrainer` replaces them):
    :meth:`check_config`, :meth:`load_datasets`, :meth:`build_model`, :meth:`build_collator`, :meth:`validate`,
    :meth:`save_final_model`, :meth:`describe_model`, :meth:`on_train_start` and :attr:`load_state_kwargs`.

    Args:
        config: a validated :class:`~bitesm.training.config.Config`.
        output_dir: run folder.
        resume: continue from the newest checkpoint in ``output_dir``.
        allow_config_change: on resume, accept config changes that break an exact resume (``--allow-config-change``;
            :func:`bitesm.training.resume.check_resume_config`).

    Raises:
        ConfigError: before any data is read or model built: ``output_dir`` already holds checkpoints (or a final
            model) and ``resume`` is False (pass ``--resume`` or choose a new folder: nothing is overwritten);
            ``resume`` is True but there is no checkpoint; the resumed config changes keys that break an exact
            resume; an input path is missing, ``output_dir`` is not writable, or ``data.max_length`` is longer than
            the model takes (:func:`bitesm.training.preflight.check_run`).
    """

    #: keyword arguments of ``Accelerator.load_state`` when resuming (a subclass that checkpoints only part of the
    #: model's weights passes ``strict=False``).
    load_state_kwargs: dict = {}
    #: the folder under ``output_dir`` that a finished run's model is saved to (:meth:`save_final_model`).
    final_dir_name: str = FINAL_MODEL_DIR

    def __init__(
        self, config: Config, output_dir: str | os.PathLike, resume: bool = False, allow_config_change: bool = False
    ):
        self.config = config
        self.output_dir = Path(output_dir)
        self.check_config()
        t = config.training
        self.resume_from = self._run_to_resume(resume)
        self.config_changes = (
            {} if self.resume_from is None
            else run_resume.check_resume_config(config, self.resume_from, self.output_dir, allow_config_change)
        )
        check_run(config, self.output_dir)
        self._rows_at_start: set[frozenset] = set()  # metrics.jsonl rows already logged at the segment's first step
        self._segment_start = -1

        self.accelerator = Accelerator(
            mixed_precision=t.mixed_precision, log_with="tensorboard", project_dir=str(self.output_dir)
        )
        acc = self.accelerator
        world = acc.num_processes
        if t.batch_size % (t.gradient_accumulation_steps * world):
            raise ConfigError(
                f"training.batch_size={t.batch_size} must be divisible by gradient_accumulation_steps "
                f"({t.gradient_accumulation_steps}) x processes ({world})"
            )
        self.micro_batch_size = t.batch_size // (t.gradient_accumulation_steps * world)

        self.train_dataset, self.val_dataset = self.load_datasets()
        self.model, self.tokenizer = self.build_model()
        self.collator = self.build_collator(
            torch.Generator().manual_seed(t.seed + 7919 * (acc.process_index + 1))
        )
        optimizer = torch.optim.AdamW(
            _param_groups(self.model, t.weight_decay),
            lr=t.learning_rate,
            betas=(t.adam_beta1, t.adam_beta2),
            eps=t.adam_epsilon,
        )
        self.scheduler = get_scheduler(
            t.lr_scheduler, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.max_steps
        )
        self.model, self.optimizer = acc.prepare(self.model, optimizer)
        # Stepped once per optimizer step by this loop (not by Accelerate, which would step it once per process).
        acc.register_for_checkpointing(self.scheduler)
        self.state = TrainerState()
        self.checkpoints_saved: int | None = None  # this run's checkpoint count, for push_every_checkpoints

    def _run_to_resume(self, resume: bool) -> Path | None:
        """The checkpoint to resume from (``None`` for a new run), after refusing to overwrite a run."""
        existing = ckpt.latest_checkpoint(self.output_dir)
        final = self.output_dir / self.final_dir_name
        if existing is not None and not resume:
            raise ConfigError(
                f"--output-dir {self.output_dir} already holds checkpoints (newest {existing.name}); pass --resume to "
                "continue that run, or choose another --output-dir (nothing is overwritten)"
            )
        if existing is None and not resume and final.is_dir():
            raise ConfigError(
                f"--output-dir {self.output_dir} already holds a finished run ({final.name}/) and no checkpoint to "
                f"resume from; choose another --output-dir, or delete {final} to train there again"
            )
        if resume and existing is None:
            raise ConfigError(
                f"--resume given but --output-dir {self.output_dir} has no complete checkpoint to resume from "
                "(training.save_every: 0 writes none); run without --resume to start over"
            )
        return existing if resume else None

    # -- what a run trains (overridden by bitesm.lora.LoraTrainer) ----------------------------------------------

    def check_config(self) -> None:
        """Refuse sections this trainer does not run.

        Raises:
            ConfigError: the config has a ``lora`` or ``head`` section (run it with ``bitesm lora``).
        """
        if self.config.lora is not None or self.config.head is not None:
            raise ConfigError(
                "this config has a lora: or head: section; train it with 'bitesm lora' (bitesm.lora), "
                "or remove the section for full pretraining with 'bitesm train'"
            )

    def load_datasets(self):
        """``(train, validation)`` datasets of rows with a ``sequence`` (the ``data.train_fasta`` split)."""
        d = self.config.data
        datasets.disable_progress_bars()
        splits = load_fasta_dataset(
            resolve_path(d.train_fasta),
            validation_size=d.validation_size,
            seed=self.config.training.seed,
            max_sequences=d.max_sequences,
        )
        return splits["train"], splits["validation"]

    def build_model(self):
        """``(model, tokenizer)`` to train: :func:`build_model` of the ``model`` section."""
        return build_model(self.config.model, seed=self.config.training.seed, max_length=self.config.data.max_length)

    def build_collator(self, generator: torch.Generator):
        """The training collator: examples -> batch dict (``labels`` included); draws only from ``generator``,
        whose state every checkpoint stores (``collator.generator``)."""
        d = self.config.data
        return MLMCollator(self.tokenizer, max_length=d.max_length, mask_rate=d.mask_rate, generator=generator)

    def describe_model(self) -> str:
        """One line about the model, logged when training starts."""
        n_params = sum(p.numel() for p in self.model.parameters())
        return f"{n_params:,} parameters, quantization={self.config.model.quantization}"

    def on_train_start(self, bar) -> None:
        """Called once before the first step of a run (and of each resumed segment); ``bar`` is the progress bar
        that :meth:`_log` writes to. Does nothing here."""

    # -- data ------------------------------------------------------------------------------------------------

    def _train_loader(self, epoch: int, skip: int) -> DataLoader:
        t = self.config.training
        loader = DataLoader(
            self.train_dataset,
            batch_size=self.micro_batch_size,
            sampler=_epoch_permutation(len(self.train_dataset), t.seed, epoch),
            # Raw examples: the loop collates them itself. Accelerate's loader reads one batch ahead, and collating
            # there would advance the collator's generator past the checkpointed position.
            collate_fn=_as_list,
            drop_last=True,
            generator=loader_generator(),
        )
        acc = self.accelerator
        loader = prepare_data_loader(loader, acc.device, acc.num_processes, acc.process_index, rng_types=[])
        return skip_first_batches(loader, skip) if skip else loader

    def _val_loader(self, masked_only: bool) -> DataLoader:
        """Held-out batches of this process with fixed crops and masks (:func:`validation_collator`)."""
        collator = validation_collator(self.collator, self.config.training.seed, masked_only)
        loader = DataLoader(
            self.val_dataset, batch_size=self.micro_batch_size, collate_fn=collator, generator=loader_generator()
        )
        acc = self.accelerator
        return prepare_data_loader(
            loader, acc.device, acc.num_processes, acc.process_index, put_on_device=True, even_batches=False,
            rng_types=[],
        )

    # -- checkpoints -----------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the current step atomically; returns its folder."""
        acc = self.accelerator
        tmp = ckpt.temporary_checkpoint_dir(self.output_dir, self.state.step)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        torch.save(self.collator.generator.get_state(), tmp / f"collator_rng_{acc.process_index}.pt")
        acc.wait_for_everyone()
        final = tmp
        if acc.is_main_process:
            # An HF-format model folder inside the checkpoint: what `bitesm eval watch` evaluates and Hub pushes send.
            self.write_model_folder(tmp / ckpt.CHECKPOINT_MODEL_DIR)
            atomic_write_json(tmp / ckpt.TRAINER_STATE, dataclasses.asdict(self.state))
            final = ckpt.publish_checkpoint(tmp, self.config.training.keep_checkpoints)
            self._maybe_push(self.state.step, final / ckpt.CHECKPOINT_MODEL_DIR)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        acc = self.accelerator
        acc.load_state(str(path), **self.load_state_kwargs)
        self.collator.generator.set_state(torch.load(path / f"collator_rng_{acc.process_index}.pt"))
        self.state = TrainerState(**json.loads((path / ckpt.TRAINER_STATE).read_text()))

    # -- evaluation ------------------------------------------------------------------------------------------

    def _validation_loss(self, model, masked_only: bool) -> dict:
        acc = self.accelerator
        batches = tqdm(self._val_loader(masked_only), desc="validation" + (" (masked-only)" if masked_only else ""),
                       unit="batch", leave=False, disable=not acc.is_main_process)
        totals, counts = masked_lm_loss_sums(model, batches, autocast=acc.autocast)
        return summarize(acc.reduce(totals, reduction="sum"), acc.reduce(counts, reduction="sum"))

    def validate(self) -> dict:
        """Validation on the held-out split: MLM loss, perplexity, masked-only loss and the unigram baseline.

        * ``val/loss``: the MLM objective (mean cross-entropy in nats over the selected positions, corrupted as in
          training) on held-out sequences; ``val/perplexity = exp(val/loss)``.
        * ``val/masked_only_loss``: the same positions all replaced by ``<mask>``: prediction from context alone
          (the 10% kept residues of the MLM objective can be copied from the input).
        * ``val/unigram_entropy``: entropy (nats) of the target residues' own frequencies, the loss of a model that
          ignores its input entirely.
        """
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        mlm = self._validation_loss(model, masked_only=False)
        masked_only = self._validation_loss(model, masked_only=True)
        model.train(was_training)
        return {
            "val/loss": mlm["loss"],
            "val/perplexity": mlm["perplexity"],
            "val/masked_only_loss": masked_only["loss"],
            "val/unigram_entropy": masked_only["unigram_entropy"],
            "val/masked_tokens": mlm["masked_tokens"],
        }

    # -- loop ------------------------------------------------------------------------------------------------

    def _log(self, metrics: dict, bar) -> None:
        acc = self.accelerator
        acc.log(metrics, step=self.state.step)
        if acc.is_main_process:
            record = {"step": self.state.step, "tokens": self.state.tokens, **metrics}
            # a resumed run recomputes the final validation of a finished segment: logged once
            logged = self.state.step == self._segment_start and frozenset(metrics) in self._rows_at_start
            if not logged:
                with open(self.output_dir / run_resume.METRICS_FILE, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            text = " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
            bar.write(text)

    def _budget_reached(self) -> bool:
        t = self.config.training
        return (
            self.state.step >= t.max_steps
            or (t.max_tokens is not None and self.state.tokens >= t.max_tokens)
            or (t.max_time_minutes is not None and self.state.elapsed_seconds >= 60 * t.max_time_minutes)
        )

    def train(self) -> dict:
        """Train until the budget (steps, tokens or time) is reached; returns the final metrics.

        SIGTERM and SIGINT received meanwhile stop the run after the current optimizer step with a checkpoint
        (:mod:`bitesm.training.preemption`); the previous signal handlers are restored when this returns or raises.

        Returns:
            dict with ``step``, ``tokens``, ``elapsed_seconds``, ``val/loss``, ``val/perplexity`` and
            ``model_dir``, plus ``proteingym`` (the evaluation summary) when configured.

        Raises:
            TrainingInterrupted: SIGTERM / SIGINT arrived; a resumable checkpoint of the last step was written (its
                ``exit_code`` is 143 / 130).
            ConfigError: with ``allow_config_change``, a checkpoint that cannot be loaded into the changed model.
        """
        stop = StopSignals(announce=self.accelerator.is_main_process)
        stop.install()
        try:
            return self._train(stop)
        finally:
            stop.restore()

    def _resume_checkpoint(self) -> None:
        try:
            self.load_checkpoint(self.resume_from)
        except (RuntimeError, ValueError, KeyError, FileNotFoundError) as err:
            changed = [k for k in self.config_changes if not run_resume.is_safe_change(k, self.config)]
            if not changed or isinstance(err, ConfigError):
                raise
            reason = " ".join(str(err).split())[:300]  # one line
            raise ConfigError(
                f"--allow-config-change: {self.resume_from} cannot be loaded with the changed config "
                f"({', '.join(changed)}): {type(err).__name__}: {reason}; keys that change the model or its "
                "optimizer state (model shape, lora, head, mixed precision) cannot change on resume: resume with the "
                "original values"
            ) from err
        logger.info("resumed from %s at step %d", self.resume_from, self.state.step)

    def _agree_to_stop(self, stop: StopSignals) -> bool:
        """Whether any process received a stop signal (a collective call: every process must make it)."""
        acc = self.accelerator
        flag = torch.tensor([float(stop.signum or 0)], device=acc.device, dtype=torch.float64)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)

    def _stop_with_checkpoint(self, stop: StopSignals, saved: tuple[int, Path | None]) -> None:
        """Write the checkpoint of the current step (unless just written), end the trackers and raise."""
        path = saved[1] if saved[0] == self.state.step else self.save_checkpoint()
        path = self.output_dir / ckpt.CHECKPOINT_DIR / path.name.removeprefix(".tmp-")
        self.accelerator.end_training()
        err = TrainingInterrupted(stop.signum or signal.SIGTERM, self.state.step, path)
        if self.accelerator.is_main_process:
            logger.warning("%s", err)
        raise err

    def _train(self, stop: StopSignals) -> dict:
        acc, t = self.accelerator, self.config.training
        self.output_dir.mkdir(parents=True, exist_ok=True)
        ckpt.clean_temporary(self.output_dir)
        if self.resume_from is not None:
            self._resume_checkpoint()
        self._segment_start = self.state.step
        if acc.is_main_process:
            self._rows_at_start = run_resume.truncate_metrics(
                self.output_dir, self.state.step if self.resume_from is not None else None
            )
            run_resume.record_segment(
                self.output_dir, self.state.step, self.config, self.config_changes, self.resume_from
            )
            logger.info("model: %s", self.describe_model())
        acc.init_trackers("tensorboard", config=_flat_hparams(self.config))

        model, optimizer, accum = self.model, self.optimizer, t.gradient_accumulation_steps
        model.train()
        bar = tqdm(total=t.max_steps, initial=self.state.step, disable=not acc.is_main_process, desc="train")
        window = _LogWindow(acc.device)
        segment_start, elapsed_before = time.time(), self.state.elapsed_seconds
        micro_in_step, local_tokens, done, stopping = 0, 0, self._budget_reached(), False
        validated: tuple[int, dict] = (-1, {})
        saved: tuple[int, Path | None] = (-1, None)
        grad_norm = torch.zeros(())
        self.on_train_start(bar)
        while not done:
            loader = self._train_loader(self.state.epoch, self.state.batch_in_epoch)
            if len(loader) == 0:
                raise ConfigError(
                    f"the training split has {len(self.train_dataset)} sequences, fewer than one micro-batch "
                    f"({self.micro_batch_size} x {acc.num_processes} processes); lower training.batch_size"
                )
            for examples in loader:
                batch = send_to_device(self.collator(examples), acc.device)
                self.state.batch_in_epoch += 1
                micro_in_step += 1
                sync = micro_in_step == accum
                with contextlib.nullcontext() if sync else acc.no_sync(model):
                    with acc.autocast():
                        loss = model(**batch).loss
                    acc.backward(loss / accum)
                window.add_loss(loss)
                local_tokens += int(batch["attention_mask"].sum())
                if not sync:
                    continue
                micro_in_step = 0
                grad_norm = acc.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                self.scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                self.state.step += 1
                bar.update(1)
                # One small all-reduce a step keeps the token count, the stop decision and a stop signal received by
                # any process identical on all ranks.
                synced = acc.reduce(
                    torch.tensor(
                        [local_tokens, time.time() - segment_start, float(stop.signum or 0)],
                        device=acc.device, dtype=torch.float64,
                    ),
                    reduction="sum",
                )
                local_tokens = 0
                window.tokens += int(synced[0].item())
                self.state.tokens += int(synced[0].item())
                self.state.elapsed_seconds = elapsed_before + float(synced[1].item()) / acc.num_processes
                done = self._budget_reached()
                stopping = float(synced[2].item()) > 0 and not done  # at the budget: stopped after the loop
                if self.state.step % t.log_every == 0 or done:
                    self._log(
                        {
                            "train/loss": acc.reduce(window.mean_loss(), reduction="mean").item(),
                            "train/lr": self.scheduler.get_last_lr()[0],
                            "train/tokens_per_second": window.tokens_per_second(),
                            "train/grad_norm": float(grad_norm),
                            "train/epoch": self.state.epoch,
                        },
                        bar,
                    )
                    window = _LogWindow(acc.device)
                if t.eval_every and (self.state.step % t.eval_every == 0 or done):
                    validated = (self.state.step, self.validate())
                    self._log(validated[1], bar)
                if t.save_every and self.state.step % t.save_every == 0 and not done:
                    saved = (self.state.step, self.save_checkpoint())
                if done or stopping:
                    break
            else:
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
            if stopping:
                break
        bar.close()
        if stopping:
            self._stop_with_checkpoint(stop, saved)
        replicas_in_sync = self.check_replicas_in_sync()
        if validated[0] == self.state.step:
            final = validated[1]
        else:
            final = self.validate()
            self._log(final, bar)
        if self._agree_to_stop(stop):  # a signal during the last step or the final validation
            self._stop_with_checkpoint(stop, saved)
        if t.save_every or self.resume_from is not None:  # the newest checkpoint is the final state
            self.save_checkpoint()
        # From here on (final model, ProteinGym), signals act as before training; one that arrived during the last
        # checkpoint's save is delivered now that the checkpoint is complete.
        stop.restore()
        stop.redeliver()
        model_dir = self.save_final_model()
        result = {
            **dataclasses.asdict(self.state),
            **final,
            "model_dir": str(model_dir),
            "num_processes": acc.num_processes,
            "replicas_in_sync": replicas_in_sync,
        }
        if self.config.evaluation.proteingym is not None and acc.is_main_process:
            result["proteingym"] = self.evaluate_proteingym(model_dir)
        acc.end_training()
        return result

    @torch.no_grad()
    def check_replicas_in_sync(self) -> bool:
        """Whether every process holds bit-identical parameters (data parallelism must keep them so).

        Compares a float64 fingerprint (sum and position-weighted sum of every floating-point parameter; packed
        integer weights such as a 4-bit base are frozen) across processes.

        Raises:
            RuntimeError: if the replicas differ (a data-parallel bug; the run's weights are not trustworthy).
        """
        acc = self.accelerator
        params = [
            p.detach().double().flatten() for p in acc.unwrap_model(self.model).parameters() if p.is_floating_point()
        ]
        flat = torch.cat(params)
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device) / flat.numel()
        fingerprint = torch.stack([flat.sum(), (flat * weights).sum()]).to(acc.device)
        gathered = acc.gather(fingerprint[None]).reshape(-1, 2)
        if not bool((gathered == gathered[0]).all()):
            raise RuntimeError(f"data-parallel replicas diverged: parameter fingerprints {gathered.tolist()}")
        return True

    def save_final_model(self) -> Path:
        """Save the HF-format model, tokenizer and config to ``output_dir/model`` atomically; returns the folder."""
        acc = self.accelerator
        final = self.output_dir / FINAL_MODEL_DIR
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = self.output_dir / f".tmp-{FINAL_MODEL_DIR}"
            if tmp.exists():
                shutil.rmtree(tmp)
            self.write_model_folder(tmp)
            ckpt.replace_dir(tmp, final)
        acc.wait_for_everyone()
        return final

    def write_model_folder(self, folder: Path) -> None:
        """Write the HF-format model (with its remote code), tokenizer, ``training_config.yaml`` and
        ``trainer_state.json`` of the current step into ``folder`` (call on the main process only).

        Args:
            folder: the folder to write (created if missing; files of the same names are replaced).
        """
        self.accelerator.unwrap_model(self.model).save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        (folder / "training_config.yaml").write_text(yaml.safe_dump(self.config.to_dict()))
        atomic_write_json(folder / "trainer_state.json", dataclasses.asdict(self.state))

    # -- Hub ---------------------------------------------------------------------------------------------------

    def _maybe_push(self, step: int, folder: Path) -> None:
        """After a checkpoint is published (main process): push its model ``folder`` to
        ``training.push_to_hub_repo`` if this is the N-th checkpoint, N = ``training.push_every_checkpoints`` (0: never).

        Checkpoints are counted from the start of the run (a resumed run counts the ``save_every`` checkpoints
        before its first step). The folder is pushed with :func:`bitesm.hub.push.push_to_hub` (commit message
        ``checkpoint step N``, the run's TensorBoard events included); it is read, never modified. A failed push is
        logged as a warning; training continues.
        """
        t = self.config.training
        if not t.push_every_checkpoints:
            return
        if self.checkpoints_saved is None:  # checkpoints of the run before this process (resume) or none
            self.checkpoints_saved = (step - 1) // t.save_every if t.save_every else 0
        self.checkpoints_saved += 1
        if self.checkpoints_saved % t.push_every_checkpoints:
            return
        from ..hub.push import push_to_hub

        try:
            tensorboard = self.output_dir / "tensorboard"
            result = push_to_hub(
                folder,
                t.push_to_hub_repo,
                private=t.hub_private,
                revision=None,
                commit_message=f"checkpoint step {step}",
                tensorboard_dir=tensorboard if tensorboard.is_dir() else None,
            )
            logger.info("pushed checkpoint step %d to %s: %s", step, t.push_to_hub_repo, result.get("commit_url"))
        except Exception as err:  # noqa: BLE001  (a push must never stop training)
            logger.warning(
                "push of checkpoint step %d to %s failed; training continues: %s: %s",
                step, t.push_to_hub_repo, type(err).__name__, err,
            )

    def evaluate_proteingym(self, model_dir: Path) -> dict:
        """Masked-marginals ProteinGym evaluation of the final model; writes ``eval/proteingym.json``."""
        from ..evaluation.proteingym import evaluate_proteingym

        pg = self.config.evaluation.proteingym
        model = self.accelerator.unwrap_model(self.model).eval()
        return evaluate_proteingym(
            model,
            self.tokenizer,
            assays_dir=resolve_path(pg.assays),
            reference_csv=resolve_path(pg.reference),
            output_json=self.output_dir / "eval" / "proteingym.json",
            assay_ids=pg.assay_ids,
            batch_size=pg.batch_size,
            device=self.accelerator.device,
        )


def _flat_hparams(config: Config) -> dict:
    flat = {}
    for section, values in config.to_dict().items():
        for key, value in (values or {}).items():
            if isinstance(value, (int, float, str, bool)):
                flat[f"{section}.{key}"] = value
    return flat


def train(
    config: Config, output_dir: str | os.PathLike, resume: bool = False, allow_config_change: bool = False
) -> dict:
    """Run a training config end to end (see :class:`Trainer`): the library form of ``bitesm train``.

    Args:
        config: a validated config (:func:`bitesm.training.config.load_config`).
        output_dir: run folder (``--output-dir``).
        resume: continue from the newest checkpoint in ``output_dir`` (``--resume``).
        allow_config_change: on resume, accept config changes that break an exact resume
            (``--allow-config-change``; recorded in ``config_history.jsonl``).

    Returns:
        the final metrics (:meth:`Trainer.train`).

    Raises:
        ConfigError: a config, path or run-folder mistake, found before training starts (:class:`Trainer`).
        TrainingInterrupted: SIGTERM / SIGINT stopped the run after writing a checkpoint; ``--resume`` continues.
    """
    return Trainer(config, output_dir, resume=resume, allow_config_change=allow_config_change).train()
