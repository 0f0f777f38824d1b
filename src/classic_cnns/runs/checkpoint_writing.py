"""Checkpoint files written atomically, in the checkpoint's own directory.

Lightning's TorchCheckpointIO stages a checkpoint in `$TMPDIR` and moves it into place; when
the run dir is on another filesystem the move is a copy, so a killed or failed write leaves a
truncated (often 0-byte) `last.ckpt`, and killed writes leave full-size orphans in `$TMPDIR`.
Here a checkpoint is written to a hidden temporary file next to it, flushed and fsynced, then
renamed over the old one (atomic within a directory): a reader sees the old file or the new one.
Temporary files left by a killed writer are removed at the next save into that directory.

Given the run's checkpoint directories, the same plugin is where Lightning reads a checkpoint
to resume from (its callback states rebuilt, checkpoint_loading.cleaned) and the only thing it
deletes checkpoints with: a regular .ckpt file inside one of those directories, never a
directory, never anything elsewhere, whatever a restored state says.
"""

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from classic_cnns import ClassicCNNsError, process_alive

TEMP_SUFFIX = ".partial"
FULL_BELOW_BYTES = 2**20  # free space under which a failed write is taken for a full disk


class CheckpointWriteError(ClassicCNNsError):
    pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic on any local filesystem (a Lightning plugin);
    with `checkpoint_dirs`, loads are checked and deletes confined to those directories."""

    def __init__(self, checkpoint_dirs: list[str] | None = None) -> None:
        super().__init__()
        self.checkpoint_dirs = checkpoint_dirs

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        from classic_cnns.runs.checkpoint_loading import UnsafeCheckpointError, cleaned

        checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=True)
        if self.checkpoint_dirs is None:
            return checkpoint
        try:
            return cleaned(checkpoint, self.checkpoint_dirs)
        except (UnsafeCheckpointError, KeyError, TypeError, AttributeError) as error:
            raise UnsafeCheckpointError(f"{path}: refused, {error}") from None

    def remove_checkpoint(self, path) -> None:
        if self.checkpoint_dirs is None:
            raise CheckpointWriteError(f"refused to delete {path}: no checkpoint directory was given to delete in")
        from classic_cnns.runs.checkpoint_loading import inside

        resolved = os.path.realpath(path)
        own = {os.path.realpath(directory) for directory in self.checkpoint_dirs}
        if not (resolved.endswith(".ckpt") and inside(resolved, own) and not os.path.isdir(resolved)):
            raise CheckpointWriteError(
                f"refused to delete {path}: only .ckpt files in this run's checkpoint directory are deleted"
            )
        Path(resolved).unlink(missing_ok=True)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        # The writer's pid in the name: a later save can tell a dead writer's file from a live one's.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException as error:
            full = _disk_full(error, path.parent)  # asked while the partial file still takes its space
            Path(temporary).unlink(missing_ok=True)
            if isinstance(error, OSError) or full:
                raise CheckpointWriteError(_explain(error, path, full)) from error
            raise
        _fsync_directory(path.parent)  # the rename itself survives a power cut


def remove_stale_temporaries(directory: Path) -> None:
    """Delete the temporary checkpoint files of writers that no longer run."""
    for leftover in directory.glob(f".*{TEMP_SUFFIX}"):
        try:
            pid = int(leftover.name.rsplit(".", 3)[-3])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid() or not process_alive(pid):
            leftover.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not every filesystem lets a directory be opened
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _disk_full(error: BaseException, directory: Path) -> bool:
    """Whether a failed write failed for want of space. torch.save reports a full disk as a
    RuntimeError from its zip writer ("unexpected pos ..."), not as ENOSPC: the free space says it."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(error, Exception):
        return False  # KeyboardInterrupt, SystemExit: not the disk
    try:
        return shutil.disk_usage(directory).free < FULL_BELOW_BYTES
    except OSError:
        return False


def _explain(error: BaseException, path: Path, full: bool) -> str:
    kept = "the previous version of it is kept" if path.exists() else "nothing was written"
    reason = getattr(error, "strerror", None) or (str(error).strip().splitlines() or [type(error).__name__])[0]
    if full:
        return (
            f"disk full: writing the checkpoint {path} failed ({reason}); {kept}. "
            "Free some space and resume from last.ckpt, or set hydra.run.dir=... on another disk"
        )
    return f"writing the checkpoint {path} failed ({reason}); {kept}"
