"""TensorBoard views that explain a run: what the network learned and where it fails.

Written cheaply: at the start of fit (text), every `every_n_epochs` epochs and at the end of
fit (filters, feature maps, validation confusion matrix), and once after the test (test
confusion matrix, per-class accuracy, worst misclassified images). Nothing per step.
"""

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from classic_cnns.classifier import epochs_done
from classic_cnns.data.transforms import first_crop
from classic_cnns.layer_table import summarize, to_markdown
from classic_cnns.models.layers import stage  # noqa: E402
from classic_cnns.plotting import confusion_figure, images_figure


def per_class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    return matrix.diag() / matrix.sum(dim=1).clamp(min=1)


def _normalized_grid(maps: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """(N, C, H, W) -> one image grid, each tile scaled to [0, 1] on its own."""
    maps = maps.detach().float().cpu()
    low = maps.amin(dim=(1, 2, 3), keepdim=True)
    high = maps.amax(dim=(1, 2, 3), keepdim=True)
    maps = (maps - low) / (high - low).clamp(min=1e-8)
    return make_grid(maps, nrow=nrow, padding=1, pad_value=1.0)


class TensorBoardViews(L.Callback):
    def __init__(self, every_n_epochs: int = 5, worst_images: int = 16, log_histograms: bool = False) -> None:
        self.every_n_epochs, self.worst_images, self.log_histograms = every_n_epochs, worst_images, log_histograms

    @staticmethod
    def _writer(trainer):
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    # --- text: what was run ----------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        info = pl_module.hparams.data_info
        self.confusion = MulticlassConfusionMatrix(len(info["class_names"])).to(pl_module.device)
        writer = self._writer(trainer)
        if writer is None or not trainer.is_global_zero:
            return
        writer.add_text("model/summary", to_markdown(summarize(pl_module.net, info["channels"], info["input_size"])), 0)
        config = yaml.safe_dump(pl_module.hparams.config or {}, sort_keys=False)
        writer.add_text("config", "\n".join("    " + line for line in config.splitlines()), 0)  # a code block

    # --- validation: confusion matrix, filters, feature maps --------------------------------
    def _due(self, trainer) -> bool:
        epoch = trainer.current_epoch + 1
        return epoch % self.every_n_epochs == 0 or epoch >= (trainer.max_epochs or 0)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        fitting = trainer.state.fn == "fit" and not trainer.sanity_checking
        self.collect = fitting and self._writer(trainer) is not None and self._due(trainer)
        self.example = None
        if self.collect:
            self.confusion.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.collect:
            return
        self.confusion.update(outputs["logits"], batch[1])
        if self.example is None:
            self.example = first_crop(batch[0][:1]).clone()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self.collect:
            return
        matrix = self.confusion.compute()  # on every rank: under DDP this gathers all ranks' counts
        if not trainer.is_global_zero:
            return
        writer, step = self._writer(trainer), epochs_done(trainer)
        names = pl_module.hparams.data_info["class_names"]
        writer.add_figure(
            "val/confusion_matrix",
            confusion_figure(matrix, names, f"validation, epoch {trainer.current_epoch + 1}"),
            step,
        )
        first_conv = next(m for m in pl_module.net.features.modules() if stage(m) == "conv")
        writer.add_image("filters/01_conv", _normalized_grid(first_conv.weight), step)
        for name, maps in self.feature_maps(pl_module.net, self.example).items():
            writer.add_image(f"feature_maps/{name}", _normalized_grid(maps.transpose(0, 1)), step)
        if self.log_histograms:
            for name, parameter in pl_module.net.named_parameters():
                writer.add_histogram(f"weights/{name}", parameter.detach().float().cpu(), step)

    @staticmethod
    def feature_maps(net: nn.Module, example: torch.Tensor) -> dict[str, torch.Tensor]:
        """The maps of one example after every convolution and pooling of the feature extractor,
        keyed by stage position and kind (`01_conv`, `02_pool`, ...)."""
        maps, hooks = {}, []
        stages = [(module, kind) for module in net.features.modules() if (kind := stage(module)) in ("conv", "pool")]
        for position, (module, kind) in enumerate(stages, start=1):
            label = f"{position:02d}_{kind}"
            hooks.append(
                module.register_forward_hook(lambda m, i, out, label=label: maps.__setitem__(label, out[0:1].detach()))
            )
        was_training = net.training
        net.eval()
        with torch.no_grad():
            net.features(example)
        net.train(was_training)
        for hook in hooks:
            hook.remove()
        return maps

    # --- test: confusion matrix, per-class accuracy, worst mistakes ---------------------------
    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.collect = self._writer(trainer) is not None
        if self.collect:
            self.test_confusion = MulticlassConfusionMatrix(len(pl_module.hparams.data_info["class_names"])).to(
                pl_module.device
            )
            self.worst: list[tuple[float, torch.Tensor, int, int, float]] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.collect:
            return
        images, labels = first_crop(batch[0]), batch[1]
        logits = outputs["logits"]
        self.test_confusion.update(logits, labels)
        losses = F.cross_entropy(logits.float(), labels, reduction="none")
        wrong = logits.argmax(1) != labels
        losses = torch.where(wrong, losses, torch.full_like(losses, -1.0))
        top = losses.topk(min(self.worst_images, len(losses)))
        probabilities = logits.float().softmax(1)
        for loss, index in zip(top.values.tolist(), top.indices.tolist()):
            if loss >= 0:
                predicted = int(logits[index].argmax())
                self.worst.append(
                    (loss, images[index].cpu(), int(labels[index]), predicted, float(probabilities[index, predicted]))
                )
        self.worst = sorted(self.worst, key=lambda item: -item[0])[: self.worst_images]

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if not self.collect:
            return
        matrix = self.test_confusion.compute()  # on every rank (DDP gather)
        if not trainer.is_global_zero:
            return
        writer, step = self._writer(trainer), epochs_done(trainer)
        info = pl_module.hparams.data_info
        writer.add_figure(
            "test/confusion_matrix", confusion_figure(matrix, info["class_names"], "test set, kept checkpoint"), step
        )
        for name, accuracy in zip(info["class_names"], per_class_accuracy(matrix).tolist()):
            writer.add_scalar(f"test_per_class_acc/{name}", accuracy, step)
        if self.worst:
            writer.add_figure("test/worst_misclassified", self.mistakes_figure(info), step)

    def mistakes_figure(self, info):
        names = info["class_names"]
        titles = [
            f"{names[true]} -> {names[predicted]} ({probability:.2f})"
            for _, _, true, predicted, probability in self.worst
        ]
        return images_figure(
            [image for _, image, *_ in self.worst],
            titles,
            info["mean"],
            info["std"],
            title="worst misclassified test images: true -> predicted (probability)",
        )
