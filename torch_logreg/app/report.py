"""What a finished run reports: metrics.json, and the final TensorBoard entries (hyper-parameters,
precision-recall curves, a confusion matrix and a reliability diagram of the held-out split, the
probability map of 2-D data, the weight images of image data); and the probability map drawn
during training (:func:`epoch_pictures`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..layers import Linear
from ..models import single_linear
from . import metrics as metrics_lib
from .config import Config
from .files import json_text, write_text_atomic
from .fitting import SPLITS, Prepared


def predict_proba_raw(model, prep: Prepared):
    """Raw 2-D points -> probabilities (M, K), through the radius feature, the products and the standardizer."""

    def fn(points: np.ndarray) -> np.ndarray:
        X = prep.schema.extend(torch.from_numpy(points))
        X = prep.standardizer.transform(X).to(device=model.device, dtype=model.dtype)
        with torch.no_grad():
            return model(X).double().cpu().numpy()

    return fn


def held_out_split(prep: Prepared) -> str:
    """The split a run's scores for the HPARAMS dashboard and its final pictures come from: the test
    split, else the validation split, else the training split."""
    return next((s for s in ("test", "val") if prep.X[s].shape[0]), "train")


def _log_probability_map(writer, model, prep: Prepared, step: int, title: str) -> None:
    from .plots import probability_map

    split = held_out_split(prep)
    img = probability_map(predict_proba_raw(model, prep), prep.plane[split], prep.y[split].cpu().numpy(), prep.classes,
                          prep.schema.columns[:2], title=title)
    writer.add_image("probability_map", img, step, dataformats="HWC")


def epoch_pictures(prep: Prepared) -> Callable | None:
    """For :class:`~torch_logreg.app.tensorboard.TensorBoardLogger` ``pictures``: the probability
    map of 2-D data (tag ``probability_map``, the held-out split's points) at the training step it
    is called at, so the decision boundary can be watched as it moves; None for other data."""
    if prep.plane is None:
        return None

    def draw(writer, state) -> None:
        if state.model.link != "identity":
            _log_probability_map(writer, state.model, prep, state.step, f"epoch {state.epoch}")

    return draw


def split_metrics(model, prep: Prepared, classes: list[str] | None, train_logits: tuple | None = None) -> dict:
    """:func:`~torch_logreg.app.metrics.evaluate` of each split; the training split's from the
    logits and targets of every training row (``train_logits``, or the training rows' own
    :meth:`~.rows.TrainingRows.logits`), however they are held."""
    multilabel = isinstance(prep.schema.target, list)  # several 0/1 target columns
    result = {s: metrics_lib.evaluate(model, prep.X[s], prep.T[s], classes, multilabel=multilabel,
                                      logits=prep.logits(model, s)) for s in ("val", "test")}
    logits, T = train_logits if train_logits is not None else prep.rows.logits(model)
    result["train"] = metrics_lib.evaluate(model, None, T, classes, logits=logits, multilabel=multilabel)
    return {s: result[s] for s in SPLITS}


def final_report(writer, model, prep: Prepared, cfg: Config, history, run_dir: Path, device,
                 train_logits: tuple | None = None) -> dict:
    """Write metrics.json (every split's :func:`~torch_logreg.app.metrics.evaluate`, per-class
    scores named by the class labels, and how the run went) and, with a ``writer``, the final
    TensorBoard entries; returns what metrics.json holds. ``train_logits``: the logits and targets
    of every training row, when already computed (see :func:`split_metrics`)."""
    classes = prep.classes if model.link != "identity" else None
    if train_logits is None:  # computed once: the pictures use them too
        train_logits = prep.rows.logits(model)
    result = split_metrics(model, prep, classes, train_logits)
    out = {
        **{s: result[s] for s in SPLITS},
        # each split's "loss" is the mean NLL; this is what training minimised (with the penalties)
        "train_objective": history.train_objective[-1] if history.train_objective else None,
        "solver": cfg.train.solver,
        "epochs": history.n_epochs,
        "steps": history.n_steps,
        "stop_reason": history.stop_reason,
        "best_epoch": history.best_epoch,
        "wall_time_s": history.wall_time,  # training time, summed over resumed sessions
        "device": str(device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "grad_check_max_rel_error": history.grad_check_max_rel_error,
        "classes": prep.classes,
    }
    layer = single_linear(model)  # the weights read as coefficients (None for an MLP)
    if prep.true_weights is not None and layer is not None and model.link == "sigmoid" and model.n_outputs == 1:
        # compare with the generating model, on the standardized scale the model sees
        scale = prep.standardizer.scale.to(prep.true_weights)
        w_true = prep.true_weights[:-1] * scale
        w = layer.weight.detach()[0].double().cpu()
        out["true_weights_cosine"] = float(torch.dot(w, w_true) / (w.norm() * w_true.norm()))
    write_text_atomic(run_dir / "metrics.json", json_text(out))
    if writer is not None:
        _log_final(writer, model, prep, cfg, history, result, layer, train_logits)
    return out


def _log_final(writer, model, prep: Prepared, cfg: Config, history, result: dict, layer,
               train_logits: tuple) -> None:
    from .plots import confusion_matrix_image, reliability_image, weight_images
    from .tensorboard import HPARAM_METRICS, config_hparams, write_hparams

    step = history.n_steps
    split = held_out_split(prep)
    scores = {f"{split}/{m}": result[split][m] for m in HPARAM_METRICS if m in result[split]}
    write_hparams(writer, config_hparams(cfg, split), scores, step)
    if model.link != "identity" and not isinstance(prep.schema.target, list):  # one class a row
        if split == "train":
            P = metrics_lib.predictions(model, None, train_logits[1], train_logits[0])
        else:
            P = metrics_lib.predictions(model, prep.X[split], prep.T[split], prep.logits(model, split))
        if model.n_outputs == 1:
            writer.add_pr_curve(f"{split}/pr_curve", torch.from_numpy((P.y == 1).astype(np.int64)),
                                torch.from_numpy(P.proba[:, 1]), step)
        else:
            for k in range(min(model.n_outputs, 10)):
                writer.add_pr_curve(f"{split}/pr_curve/class_{prep.classes[k]}", torch.from_numpy((P.y == k).astype(np.int64)),
                                    torch.from_numpy(P.scores[:, k]), step)
        title = f"{split} split, {len(P.y)} samples"
        writer.add_image(f"{split}/confusion_matrix", confusion_matrix_image(P.y, P.pred, prep.classes, title), step,
                         dataformats="HWC")
        writer.add_image(f"{split}/reliability", reliability_image(P.y, P.proba, prep.classes, title=f"reliability, {title}"),
                         step, dataformats="HWC")
        if prep.plane is not None:
            _log_probability_map(writer, model, prep, step, f"epoch {history.n_epochs}")
    if prep.image_shape is not None and layer is not None:
        names = prep.classes if model.n_outputs > 1 else [prep.classes[-1]]
        for name, img in zip(names, weight_images(layer.weight, prep.image_shape, names)):
            writer.add_image(f"weights/class_{name}", img, step, dataformats="HWC")
    elif prep.image_shape is not None:  # an MLP: its first layer's units (64 at most), grey, each scaled by its max
        first = next((m for m in model.children() if isinstance(m, Linear)), None)
        if first is not None:
            w = first.weight.detach()[:64].double().cpu()
            w = 0.5 + 0.5 * w / w.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
            writer.add_images("weights/first_layer", w.reshape(-1, 1, *prep.image_shape), step)
    writer.flush()
