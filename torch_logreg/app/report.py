"""What a finished run reports: metrics.json, and the final TensorBoard entries (hyper-parameters,
precision-recall curves, the probability map of 2-D data, the weight images of image data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models import single_linear
from . import data as data_lib
from . import metrics as metrics_lib
from .config import Config
from .files import json_text, write_text_atomic
from .fitting import SPLITS, Prepared


def predict_proba_raw(model, prep: Prepared):
    """Raw 2-D points -> probabilities (M, K), through the radius feature and the standardizer."""

    def fn(points: np.ndarray) -> np.ndarray:
        X = torch.from_numpy(points)
        if prep.schema.add_radius:
            X = data_lib.with_radius(X)
        X = prep.standardizer.transform(X).to(device=model.device, dtype=model.dtype)
        with torch.no_grad():
            return model(X).double().cpu().numpy()

    return fn


def final_report(writer, model, prep: Prepared, cfg: Config, history, run_dir: Path, device) -> dict:
    result = {s: metrics_lib.evaluate(model, prep.X[s], prep.T[s]) for s in SPLITS}
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
        from .plots import probability_map, weight_images
        from .tensorboard import write_hparams

        final = {f"{s}/{k}": v for s in SPLITS for k, v in result[s].items()}
        hp = {f"{sec}.{k}": v for sec, body in cfg.to_dict().items() if sec in ("model", "train") for k, v in body.items()}
        hp["data"] = cfg.data.path or cfg.data.name
        write_hparams(writer, hp, final, history.n_steps)
        X_test = prep.X["test"] if prep.X["test"].shape[0] else prep.X["train"]
        T_test = prep.T["test"] if prep.X["test"].shape[0] else prep.T["train"]
        if model.link != "identity":
            with torch.no_grad():
                probs = model(X_test).cpu()
            truth = T_test.cpu()
            if model.n_outputs == 1:
                writer.add_pr_curve("test/pr_curve", truth[:, 0].long(), probs[:, 0], history.n_steps)
            else:
                for k in range(min(model.n_outputs, 10)):
                    writer.add_pr_curve(f"test/pr_curve/class_{prep.classes[k]}", truth[:, k].long(), probs[:, k],
                                        history.n_steps)
        if prep.plane is not None and model.link != "identity":
            split = "test" if prep.plane["test"].shape[0] else "train"
            img = probability_map(predict_proba_raw(model, prep), prep.plane[split], prep.y[split].cpu().numpy())
            writer.add_image("probability_map", img, history.n_steps, dataformats="HWC")
        if prep.image_shape is not None and layer is not None:
            names = prep.classes if model.n_outputs > 1 else [prep.classes[-1]]
            for name, img in zip(names, weight_images(layer.weight, prep.image_shape)):
                writer.add_image(f"weights/class_{name}", img, history.n_steps)
        writer.flush()
    return out
