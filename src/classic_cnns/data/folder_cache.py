"""`data.decode=cache`: an image folder's split decoded once, resized, into uint8 `.npy` files
that every later epoch and run reads as a memory map instead of decoding the files again.

For folders larger than memory whose decoding costs more than reading (docs/own-images.md has
the measurement): the cache takes N x C x S x S bytes of disk, where a streamed epoch decodes
every file again. An entry is named by what it holds (the split's files with their sizes and
modification times, channels, size, resize), so a changed folder gets a new entry and the old
one is removed once the new one is complete. Entries are written in a temporary directory and
renamed into place, so a killed writer leaves no half entry (and its temporary directory is
removed by the next writer). A cache is untrusted like any file: read with numpy's
`allow_pickle=False`, its shapes, types, labels and size checked; anything else is rebuilt.
"""

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from classic_cnns import process_alive

from .batching import TensorBatches

FORMAT = 1  # the layout of an entry; a new layout gets new entry names
ROWS = 1024  # images decoded and written at a time (the memory a write needs: ROWS images)
META_BYTES = 1 << 20  # meta.json holds counts and the failed files' paths and reasons


def entry_for(
    cache_dir: Path, folder: Path, split: str, files: list[tuple[Path, int]], channels: int, size: int, resize: str
) -> Path:
    """The entry of a split: `PREFIX-DIGEST`, PREFIX naming the folder, split and decoding,
    DIGEST also the files (path, label, size, modification time)."""
    decoding = json.dumps([FORMAT, str(folder.resolve()), split, channels, size, resize]).encode()
    digest = hashlib.sha256(decoding)
    for path, label in files:
        status = path.stat()
        digest.update(f"{path}\0{label}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return Path(cache_dir) / f"{hashlib.sha256(decoding).hexdigest()[:12]}-{digest.hexdigest()[:24]}"


def read_entry(
    entry: Path, files: int, shape: tuple[int, int, int], classes: int
) -> tuple[TensorBatches, list[tuple[Path, str]]] | None:
    """The cached split and the files that failed to decode when it was written, or None where
    the entry is missing or not what `write_entry` writes for this split."""
    try:
        if (entry / "meta.json").stat().st_size > META_BYTES:
            return None
        meta = json.loads((entry / "meta.json").read_text())
        count, failed = meta["count"], [(Path(path), str(why)) for path, why in meta["failed"]]
        images = np.load(entry / "images.npy", mmap_mode="c", allow_pickle=False)
        labels = np.load(entry / "labels.npy", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    valid = (
        isinstance(count, int)
        and count + len(failed) == files
        and images.dtype == np.uint8
        and images.shape == (files, *shape)
        and labels.dtype == np.int64
        and labels.shape == (count,)
        and (count == 0 or 0 <= labels.min() <= labels.max() < classes)
    )
    if not valid:
        return None
    return TensorBatches(torch.from_numpy(images[:count]), torch.from_numpy(labels)), failed


def write_entry(
    entry: Path,
    files: list[tuple[Path, int]],
    shape: tuple[int, int, int],
    decode: Callable[[list[Path]], list[np.ndarray | str]],
) -> None:
    """Decode `files` ROWS at a time (`decode`: an array per file, or why it failed) into a
    temporary directory beside `entry`, then rename it into place; the decoded rows come first,
    the rows of failed files stay zero at the end. Other entries of the same cache directory
    are left alone; temporary directories of this machine's writers that no longer run are
    removed (on a shared file system another node's writer is alive or not there, not here)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for stale in entry.parent.glob(f"*.partial-{host}-*"):  # another node's writers are its own to judge
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    partial = entry.parent / f"{entry.name}.partial-{host}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    images = np.lib.format.open_memmap(partial / "images.npy", mode="w+", dtype=np.uint8, shape=(len(files), *shape))
    labels, failed = [], []
    for start in range(0, len(files), ROWS):
        chunk = files[start : start + ROWS]
        for (path, label), result in zip(chunk, decode([path for path, _ in chunk])):
            if isinstance(result, str):
                failed.append((str(path), result))
            else:
                images[len(labels)] = result
                labels.append(label)
    images.flush()
    del images
    np.save(partial / "labels.npy", np.asarray(labels, dtype=np.int64), allow_pickle=False)
    (partial / "meta.json").write_text(json.dumps({"format": FORMAT, "count": len(labels), "failed": failed}))
    try:
        partial.rename(entry)
    except OSError:  # another run wrote the same entry first: it holds the same images
        shutil.rmtree(partial, ignore_errors=True)


def remove_other_entries(entry: Path) -> None:
    """Remove the entries of the same folder, split and decoding but other files: the folder changed."""
    for other in entry.parent.glob(f"{entry.name.split('-')[0]}-*"):
        if other != entry and other.is_dir() and ".partial-" not in other.name:
            shutil.rmtree(other, ignore_errors=True)
