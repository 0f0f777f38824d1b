"""Evaluate and predict from a checkpoint alone (scripts/evaluate.py, scripts/predict.py)."""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torchmetrics.classification import MulticlassConfusionMatrix

from classic_cnns import ClassicCNNsError
from classic_cnns.checkpoint import build_datamodule, load_classifier


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def evaluate(ckpt_path: str, output_dir: str | None = None, data_dir: str | None = None) -> dict:
    """Test metrics, confusion matrix PNG, per-class CSV of a checkpoint; written to output_dir
    (default: `evaluation/` beside the checkpoints folder). Returns the metrics."""
    from classic_cnns.plotting import confusion_figure, to_png
    from classic_cnns.views import per_class_accuracy

    device = _device()
    model = load_classifier(ckpt_path).to(device)
    datamodule = build_datamodule(model.hparams.config, data_dir)
    datamodule.prepare_data()
    datamodule.setup("test")
    names = model.hparams.data_info["class_names"]
    confusion = MulticlassConfusionMatrix(len(names)).to(device)
    loss_sum, count = 0.0, 0
    for images, labels in datamodule.test_dataloader():
        images, labels = images.to(device), labels.to(device)
        logits = model(datamodule.transform(images))
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        count += len(labels)
        confusion.update(logits, labels)
    matrix = confusion.compute().cpu()
    metrics = {"test/acc": float(matrix.diag().sum() / matrix.sum()), "test/loss": loss_sum / count, "images": count}

    out = Path(output_dir) if output_dir else Path(ckpt_path).resolve().parent.parent / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "confusion_matrix.png").write_bytes(to_png(confusion_figure(matrix, names, f"test set, {Path(ckpt_path).name}")))
    with open(out / "per_class.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["class", "images", "correct", "accuracy"])
        for name, row, accuracy in zip(names, matrix, per_class_accuracy(matrix).tolist()):
            writer.writerow([name, int(row.sum()), int(row[names.index(name)]), f"{accuracy:.4f}"])
    metrics["output_dir"] = str(out)
    return metrics


@dataclass
class Prediction:
    file: str
    classes: list[str]
    probabilities: list[float]
    error: str = ""


def image_files(inputs: str) -> list[Path]:
    path = Path(inputs)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def _load_image(path: Path, channels: int, size) -> torch.Tensor:
    """An image of any size and mode as the training data looked: uint8 (C, H, W) at `size`."""
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1)


@torch.no_grad()
def predict(ckpt_path: str, inputs: str, topk: int = 3, data_dir: str | None = None) -> list[Prediction]:
    """Top-k classes of every image in `inputs` (a file or a directory); a file that cannot be
    read gets its error and the others are still predicted."""
    device = _device()
    model = load_classifier(ckpt_path).to(device)
    datamodule = build_datamodule(model.hparams.config, data_dir)
    info = model.hparams.data_info
    names, k = info["class_names"], min(topk, len(info["class_names"]))
    predictions = []
    for path in image_files(inputs):
        try:
            pixels = _load_image(path, info["channels"], info["native_size"])
        except FileNotFoundError:
            predictions.append(Prediction(str(path), [], [], "file not found"))
            continue
        except (UnidentifiedImageError, OSError, ValueError) as error:
            predictions.append(Prediction(str(path), [], [], f"not a readable image ({type(error).__name__})"))
            continue
        probabilities = model(datamodule.transform(pixels.unsqueeze(0).to(device))).float().softmax(1)[0]
        top = probabilities.topk(k)
        predictions.append(Prediction(str(path), [names[i] for i in top.indices.tolist()], top.values.tolist()))
    if not predictions:
        raise ClassicCNNsError(f"no files found in {inputs}")
    return predictions


def write_predictions_csv(predictions: list[Prediction], path: str) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["file", "rank", "class", "probability", "error"])
        for p in predictions:
            if p.error:
                writer.writerow([p.file, "", "", "", p.error])
            for rank, (name, probability) in enumerate(zip(p.classes, p.probabilities), start=1):
                writer.writerow([p.file, rank, name, f"{probability:.4f}", ""])
