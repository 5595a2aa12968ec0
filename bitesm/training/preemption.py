"""Preemption-safe training: SIGTERM (a scheduler preempting the job) or SIGINT (Ctrl-C) stops a run cleanly.

While :meth:`bitesm.training.trainer.Trainer.train` runs, :class:`StopSignals` replaces the SIGTERM and SIGINT
handlers by one that only records the signal. The loop finishes the current optimizer step, writes a checkpoint
(the same atomic, resumable checkpoint as ``training.save_every``), then raises :class:`TrainingInterrupted`;
``bitesm train`` prints one line (the step, the checkpoint, ``--resume``) and exits with 128 + the signal number
(143 for SIGTERM, 130 for SIGINT). Further signals while stopping are ignored (the checkpoint being written is never
cut; SIGKILL still stops at once, losing the steps since the last checkpoint). The previous handlers are restored
when ``train()`` returns or raises.

Data parallel (``accelerate launch``): every process checks the signal flags of all processes in the one
all-reduce each optimizer step already makes, so all stop after the same step and write one checkpoint together,
whichever process received the signal. The launcher forwards SIGTERM / SIGINT to its processes; its own exit code
is its own.

Handlers can only be installed from the main thread: ``train()`` called from another thread keeps the default
behaviour (documented, not an error).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["STOP_SIGNALS", "StopSignals", "TrainingInterrupted"]

#: The signals that stop a run cleanly.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by SIGTERM / SIGINT after writing a resumable checkpoint.

    Derives from :class:`KeyboardInterrupt` (not :class:`Exception`): code that catches errors does not swallow
    an interrupt, and a command that does not know this class still reports an interruption.

    Attributes:
        signum: the signal (``signal.SIGTERM`` or ``signal.SIGINT``).
        step: the optimizer step of the checkpoint.
        checkpoint: the checkpoint folder (``--resume`` continues from it).
        exit_code: ``128 + signum`` (143 for SIGTERM, 130 for SIGINT), as shells report a signal.
    """

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = int(signum), step, Path(checkpoint)
        super().__init__(str(self))

    @property
    def exit_code(self) -> int:
        """``128 + signum``: the exit code a shell reports for the signal (143 SIGTERM, 130 SIGINT)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return (
            f"stopped by {signal.Signals(self.signum).name} after step {self.step}: checkpoint {self.checkpoint} "
            "written; run the same command with --resume to continue"
        )


class StopSignals:
    """Records SIGTERM / SIGINT instead of letting them kill or interrupt the process (module docstring).

    :meth:`install` replaces the handlers, :meth:`restore` puts the previous ones back; :attr:`signum` is the first
    signal received (``None`` until then).

    Args:
        announce: write one line to stderr when a signal arrives (the main process; the others stay quiet).
    """

    def __init__(self, announce: bool = True):
        self.signum: int | None = None
        self.announce = announce
        self._previous: dict[int, object] = {}

    def install(self) -> bool:
        """Install the handlers (main thread only); returns whether they were installed."""
        if threading.current_thread() is not threading.main_thread():
            logger.info("train() runs outside the main thread: SIGTERM / SIGINT keep their default behaviour")
            return False
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return True

    def restore(self) -> None:
        """Put the handlers found by :meth:`install` back (idempotent)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            text = (f"{name} received: training stops after the current optimizer step and writes a checkpoint "
                    "(resume with --resume)")
        else:
            text = f"{name} received again: ignored, the run is already stopping (its checkpoint is being written)"
        if self.announce:
            # os.write, not print or logging: a handler may run while the main thread is inside either.
            try:
                os.write(2, f"\n{text}\n".encode())
            except OSError:
                pass

    def redeliver(self) -> None:
        """Raise the recorded signal again with the restored handlers (for a signal that arrived when the run could
        no longer stop at a step boundary); does nothing if none arrived."""
        if self.signum is not None:
            signal.raise_signal(self.signum)
