"""Evaluate and predict from a checkpoint alone (scripts/evaluate.py, scripts/predict.py)."""

import csv
import errno
import json
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchmetrics.classification import MulticlassConfusionMatrix

from classic_cnns import ClassicCNNsError
from classic_cnns.data.folder import square
from classic_cnns.runs.checkpoint_loading import build_datamodule, load_classifier
from classic_cnns.runs.console import quiet_dependencies


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _TestConfusion(L.Callback):
    """The confusion matrix of a `trainer.test`, from the logits the classifier's test_step returns."""

    def __init__(self, num_classes: int) -> None:
        self.matrix = MulticlassConfusionMatrix(num_classes)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.matrix = self.matrix.to(pl_module.device)
        self.matrix.reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.matrix.update(outputs["logits"], batch[1])


def default_evaluation_dir(ckpt_path: str | Path) -> Path:
    """`NAME_evaluation/` beside NAME.ckpt: with the checkpoint, so evaluations of several
    checkpoints of a run stay apart."""
    ckpt_path = Path(ckpt_path).resolve()
    return ckpt_path.with_name(f"{ckpt_path.stem}_evaluation")


def evaluate(ckpt_path: str, output_dir: str | None = None, data_dir: str | None = None) -> dict:
    """Test a checkpoint with `trainer.test`, as train() does: test metrics, confusion matrix PNG
    and per-class CSV, written to output_dir (default: `NAME_evaluation/` beside the checkpoint
    NAME.ckpt, wherever it was copied to). Returns the metrics, `per_class` (one row per class)
    and `output_dir`."""
    from classic_cnns.plotting import confusion_figure, to_png
    from classic_cnns.runs.tensorboard_views import per_class_accuracy

    quiet_dependencies()

    model = load_classifier(ckpt_path)
    datamodule = build_datamodule(model.hparams.config, data_dir)
    names = model.hparams.data_info["class_names"]
    if list(datamodule.class_names) != list(names):  # a folder's classes are its subfolders: they may have changed
        raise ClassicCNNsError(
            f"the classes in {datamodule.data_dir} are {list(datamodule.class_names)}, the checkpoint's are {list(names)}: "
            "point data.data_dir at the data the model was trained on"
        )
    confusion = _TestConfusion(len(names))
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        callbacks=[confusion],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():  # the classifier logs its test metrics; here they are returned instead
        warnings.filterwarnings("ignore", message=r".*but have no logger configured")
        (results,) = trainer.test(model, datamodule=datamodule, verbose=False)
    matrix = confusion.matrix.compute().cpu()
    per_class = [
        {"class": name, "images": int(row.sum()), "correct": int(row[index]), "accuracy": accuracy}
        for index, (name, row, accuracy) in enumerate(zip(names, matrix, per_class_accuracy(matrix).tolist()))
    ]
    metrics = {"test/acc": results["test/acc"], "test/loss": results["test/loss"], "images": int(matrix.sum())}

    out = Path(output_dir) if output_dir else default_evaluation_dir(ckpt_path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "confusion_matrix.png").write_bytes(
        to_png(confusion_figure(matrix, names, f"test set, {Path(ckpt_path).name}"))
    )
    with open(out / "per_class.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["class", "images", "correct", "accuracy"])
        writer.writeheader()
        writer.writerows({**row, "accuracy": f"{row['accuracy']:.4f}"} for row in per_class)
    return metrics | {"per_class": per_class, "output_dir": str(out)}


@dataclass
class Prediction:
    file: str
    classes: list[str]
    probabilities: list[float]
    error: str = ""
    inverted: bool = False


class Predictions(list):
    """The predictions in file order, and `expects`: what the model expects of its inputs."""

    expects: str = ""


def image_files(inputs: str) -> list[tuple[Path, str]]:
    """The files of `inputs` (a file, or a directory walked recursively, following symlinks),
    each with "" or why it cannot be read: a symlink loop, a broken symlink or a file that is not
    a regular file (a FIFO would block the reader forever, a device never end) is reported."""
    root = Path(inputs)
    try:
        if not stat.S_ISDIR(root.stat().st_mode):
            return [(root, _not_regular(root.stat().st_mode))]
    except OSError as error:
        return [(root, _read_error(error))]
    found: list[tuple[Path, str]] = []

    def walk(folder: Path, ancestors: frozenset) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError as error:
            found.append((folder, f"cannot be read ({error.strerror})"))
            return
        for entry in entries:
            try:
                info = entry.stat()  # follows symlinks
            except OSError as error:
                if error.errno == errno.ELOOP:
                    found.append((entry, "symlink loop"))
                elif entry.is_symlink():
                    found.append((entry, f"broken symlink (to {os.readlink(entry)})"))
                else:
                    found.append((entry, f"cannot be read ({error.strerror})"))
                continue
            if stat.S_ISDIR(info.st_mode):
                if (info.st_dev, info.st_ino) in ancestors:
                    found.append((entry, f"symlink loop (back to {entry.resolve()})"))
                else:
                    walk(entry, ancestors | {(info.st_dev, info.st_ino)})
            else:
                found.append((entry, _not_regular(info.st_mode)))

    top = root.stat()
    walk(root, frozenset({(top.st_dev, top.st_ino)}))
    return found


def _not_regular(mode: int) -> str:
    """ "" for a regular file, else what it is (it is never opened)."""
    if stat.S_ISREG(mode):
        return ""
    kinds = {
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    kind = next((name for test, name in kinds.items() if test(mode)), "not a regular file")
    return f"not a regular file ({kind}): not read"


def _load_image(path: Path, channels: int, size, resize: str = "stretch") -> torch.Tensor:
    """An image of any size and mode as the training data looked: uint8 (C, H, W) at `size`,
    stretched or (resize="shorter_side", the AlexNet paper's) its central square."""
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        image = (
            square(image, size[0], resize) if resize != "stretch" else image.resize((size[1], size[0]), Image.BILINEAR)
        )
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1)


def _read_error(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, Image.DecompressionBombError):
        return f"image too large to decode safely ({error})"
    if isinstance(error, OSError) and error.errno == errno.ELOOP:
        return "symlink loop"
    return f"not a readable image ({type(error).__name__})"


def has_light_background(pixels: torch.Tensor, border: int = 2) -> bool:
    """Whether the outer `border` pixels of a uint8 (C, H, W) image are mostly light."""
    frame = torch.cat(
        [
            pixels[..., :border, :].flatten(),
            pixels[..., -border:, :].flatten(),
            pixels[..., :, :border].flatten(),
            pixels[..., :, -border:].flatten(),
        ]
    )
    return bool(frame.float().median() > 127)


INVERT = (True, False, "auto")
BATCH = 256  # images decoded and classified at once


def _read(
    file: tuple[Path, str], info: dict, resize: str, invert: bool | str, dark: bool
) -> tuple[Path, torch.Tensor | None, bool, str]:
    """(path, its pixels as the model takes them or None, whether they were inverted, why not read)."""
    path, problem = file
    if problem:
        return path, None, False, problem
    try:
        pixels = _load_image(path, info["channels"], info["native_size"], resize)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        return path, None, False, _read_error(error)
    inverted = invert is True or (invert == "auto" and dark and has_light_background(pixels))
    return path, 255 - pixels if inverted else pixels, inverted, ""


@torch.no_grad()
def predict(
    ckpt_path: str, inputs: str, topk: int = 3, invert: bool | str = "auto", data_dir: str | None = None
) -> Predictions:
    """Top-k classes of every image in `inputs` (a file or a directory); a file that cannot be
    read gets its error and the others are still predicted.

    `invert`: true inverts every image (255 - x), false none; "auto" inverts the images with a
    light border when the model was trained on light strokes on a dark background (MNIST)."""
    if invert not in INVERT:
        raise ClassicCNNsError(f"invert={invert!r} is not allowed: use true, false or auto")
    quiet_dependencies()
    device = _device()
    model = load_classifier(ckpt_path).to(device)
    datamodule = build_datamodule(model.hparams.config, data_dir)
    info = model.hparams.data_info
    names, k = info["class_names"], min(topk, len(info["class_names"]))
    dark = datamodule.background == "dark"
    predictions = Predictions()
    if dark:
        predictions.expects = (
            f"This model expects light strokes on a dark background, as in {datamodule.name}; "
            f"{'images with a light border are inverted (invert=auto)' if invert == 'auto' else f'invert={invert}'}"
        )
    files = image_files(inputs)
    resize = getattr(datamodule, "resize", "stretch")  # an image folder's; the built-in sets are stretched
    with ThreadPoolExecutor(max_workers=4) as pool:  # decodes; each batch is classified in one forward pass
        for start in range(0, len(files), BATCH):
            loaded = list(pool.map(lambda file: _read(file, info, resize, invert, dark), files[start : start + BATCH]))
            readable = [(path, pixels, inverted) for path, pixels, inverted, _ in loaded if pixels is not None]
            if readable:
                batch = torch.stack([pixels for _, pixels, _ in readable]).to(device)
                top = model(datamodule.transform(batch)).float().softmax(1).topk(k)
                ranked = iter(zip(top.indices.tolist(), top.values.tolist()))
            for path, pixels, inverted, problem in loaded:
                if pixels is None:
                    predictions.append(Prediction(str(path), [], [], problem))
                else:
                    indices, values = next(ranked)
                    predictions.append(Prediction(str(path), [names[i] for i in indices], values, inverted=inverted))
    if not predictions:
        raise ClassicCNNsError(f"no files found in {inputs}")
    return predictions


def write_predictions_csv(predictions: list[Prediction], path: str) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["file", "rank", "class", "probability", "error", "inverted"])
        for p in predictions:
            if p.error:
                writer.writerow([p.file, "", "", "", p.error, ""])
            for rank, (name, probability) in enumerate(zip(p.classes, p.probabilities), start=1):
                writer.writerow([p.file, rank, name, f"{probability:.4f}", "", int(p.inverted)])
