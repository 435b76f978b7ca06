"""Whole-volume classification with a 3D-mapped backbone: ``python -m planar3d.train --task classification``.

Each scan is preprocessed as for segmentation (sagittal cube of edge ``size``, in [-1, 1]) and
the whole cube is one sample ``(size, size, size, channels)`` for
:func:`planar3d.nets.heads.build_classifier`. Labels come from a ``subject,label`` table
(:func:`planar3d.labels.read_labels`) or, for the built-in phantom, from its lesion-load target
(:func:`planar3d.labels.lesion_load_labels`). Folds, run folder, resume and logs are those of
segmentation (:mod:`planar3d.train`): ``RUN_DIR/fold_k/`` receives ``config.json``,
``versions.json``, ``split.json``, ``labels.csv`` (the labels used), ``log.csv``,
``curves.png``, ``best.keras`` (best validation loss), then ``predictions.csv`` (one row per
test scan: label, predicted class, probability of every class), ``metrics.csv`` (accuracy,
balanced accuracy, ROC AUC, confusion matrix; scikit-learn) and ``done.json``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d.atomic import atomic_path, check_writable, write_text_atomic
from planar3d.config import Config
from planar3d.errors import InputFileError, Planar3DError
from planar3d.io import Record, find_dataset

__all__ = [
    "build_classifier_from_config",
    "classification_metrics",
    "classification_records",
    "classification_summary",
    "dataset_labels",
    "load_classifier",
    "prediction_metrics",
    "predict_classes",
    "read_predictions",
    "run_classification_crossval",
    "seeds_classification_summary",
    "train_classifier_fold",
]

PREDICTIONS_NAME = "predictions.csv"
METRICS_NAME = "metrics.csv"
LABELS_NAME = "labels.csv"
METRIC_KEYS = ("accuracy", "balanced_accuracy", "roc_auc")


# ----------------------------------------------------------------------------- data and labels


def classification_records(config: Config) -> list[Record]:
    """The dataset's scans: ``config.data`` (masks not needed) or the built-in phantom."""
    from planar3d.train import dataset_records

    if config.data is None:
        return dataset_records(config)
    return find_dataset(config.data, bids=config.bids_options())  # classification does not need masks


def dataset_labels(config: Config, records: Sequence[Record]) -> dict[str, int]:
    """``{patient_id: class}``: ``config.labels``, else the phantom's lesion-load target.

    Raises:
        Planar3DError: ``--data`` without ``--labels``.
        InputFileError: a bad labels table (see :func:`planar3d.labels.read_labels`).
    """
    from planar3d.labels import lesion_load_labels, read_labels

    if config.labels is not None:
        return read_labels(config.labels, records)
    if config.data is None:
        return lesion_load_labels(records)
    raise Planar3DError(f"--task classification needs --labels (a subject,label table) for --data {config.data}")


def _sample(volume: np.ndarray, channels: int) -> np.ndarray:
    """`(size, size, size)` -> `(size, size, size, channels)` float32 (grey repeated)."""
    return np.repeat(np.asarray(volume, dtype=np.float32)[..., None], channels, axis=-1)


def _dataset(volumes: Sequence[np.ndarray], labels: Sequence[int], config: Config, first_epoch: int | None):
    """Batches of whole volumes and labels.

    ``first_epoch=None``: one pass in order (validation). An int ``e``: an endless stream of
    epochs ``e, e+1, ...`` whose orders depend only on ``(seed, epoch)``, batches never spanning
    two epochs, so that a resumed run sees the samples it would have seen.
    """
    import tensorflow as tf

    count, size, channels = len(volumes), int(volumes[0].shape[0]), config.channels

    def batches():
        epoch = first_epoch
        while True:
            order = np.arange(count) if epoch is None else np.random.default_rng([config.seed, epoch]).permutation(count)
            for start in range(0, count, config.batch_size):
                chosen = order[start : start + config.batch_size]
                yield (np.stack([_sample(volumes[i], channels) for i in chosen]),
                       np.asarray([labels[i] for i in chosen], dtype=np.int32))
            if epoch is None:
                return
            epoch += 1

    signature = (tf.TensorSpec((None, size, size, size, channels), tf.float32), tf.TensorSpec((None,), tf.int32))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    if first_epoch is None:  # a known length: Keras then does not warn that the input "ran out of data"
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(count / config.batch_size)))
    return dataset.prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- model


def build_classifier_from_config(config: Config, n_classes: int):
    """The uncompiled classifier: ``config.backbone`` mapped to 3D with ``config.mapping``,
    input `(size, size, size, channels)`."""
    from planar3d.nets.heads import build_classifier

    return build_classifier(
        config.backbone, input_shape=(config.size, config.size, config.size, config.channels), n_classes=n_classes,
        mapping=config.mapping, encoder_weights=config.weights_argument(), freeze_encoder=config.freeze_encoder,
    )


def _epoch_seeds_callback():
    """A callback that resets every random layer (dropout) at the start of each epoch to a state
    that depends only on its seed and the epoch: the backup holds weights and optimizer state
    but not these generators, so without it a resumed run would draw other dropout masks."""
    import keras

    class EpochSeeds(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.generators, stack = [], list(self.model.layers)
            while stack:
                layer = stack.pop(0)
                stack.extend(getattr(layer, "layers", []))
                self.generators += [v for v in vars(layer).values() if isinstance(v, keras.random.SeedGenerator)]
            self.first = [int(g.state.numpy()[0]) for g in self.generators]

        def on_epoch_begin(self, epoch, logs=None):
            for generator, first in zip(self.generators, self.first):
                generator.state.assign(np.array([first, epoch << 32], dtype=generator.state.dtype))

    return EpochSeeds()


def _compile(model, config: Config, n_classes: int, steps_per_epoch: int) -> None:
    import keras

    from planar3d.train import make_optimizer

    if n_classes == 2:  # one sigmoid unit
        loss, accuracy = "binary_crossentropy", keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        loss, accuracy = "sparse_categorical_crossentropy", keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=loss, metrics=[accuracy], jit_compile=False)


def _probabilities(model, samples: np.ndarray) -> np.ndarray:
    """`(n, n_classes)` class probabilities (a one-unit sigmoid gives ``[1 - p, p]``)."""
    output = np.concatenate([np.asarray(model(sample[None], training=False), dtype=np.float64) for sample in samples])
    return np.concatenate([1.0 - output, output], axis=1) if output.shape[1] == 1 else output


def load_classifier(path: str | Path):
    """Load a classifier ``.keras`` model with ``safe_mode=True``.

    Raises:
        InputFileError: missing file, not loadable, or not a volume classifier
            (input `(batch, slices, rows, cols, channels)`, output `(batch, classes)`).
    """
    from planar3d.predict import load_keras_model

    path = Path(path)
    model = load_keras_model(path)
    if len(model.input_shape) != 5 or len(model.output_shape) != 2:
        raise InputFileError(path, f"not a planar3d classifier model (input {model.input_shape}, output {model.output_shape})")
    return model


# ----------------------------------------------------------------------------- metrics


def classification_metrics(labels: Sequence[int], probabilities: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, ROC AUC and confusion matrix (scikit-learn).

    Args:
        labels: true class of each scan, `(n,)`.
        probabilities: `(n, n_classes)` predicted class probabilities.

    Returns:
        ``n``, ``accuracy``, ``balanced_accuracy``, ``roc_auc`` (binary: of class 1; more
        classes: one-vs-rest macro average; NaN when a class is absent from ``labels``, where
        it is undefined) and ``confusion_matrix`` (rows: true class, columns: predicted).
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, roc_auc_score

    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    if len(np.unique(labels)) < n_classes:
        auc = float("nan")
    elif n_classes == 2:
        auc = float(roc_auc_score(labels, probabilities[:, 1]))
    else:
        auc = float(roc_auc_score(labels, probabilities, multi_class="ovr", labels=list(range(n_classes))))
    with warnings.catch_warnings():  # a test fold may lack a class: recall over the classes present
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, predicted))
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": balanced,
        "roc_auc": auc,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=list(range(n_classes))).tolist(),
    }


def _prediction_rows(fold: int, cases, labels: Sequence[int], probabilities: np.ndarray) -> list[dict]:
    rows = []
    for case, label, row in zip(cases, labels, probabilities):
        rows.append({"fold": fold, "patient": case.patient_id, "centre": case.centre, "label": int(label),
                     "predicted": int(np.argmax(row)), **{f"prob_{k}": float(p) for k, p in enumerate(row)}})
    return rows


def read_predictions(path: Path) -> list[dict]:
    """Rows of a ``predictions.csv`` with numbers parsed."""
    with Path(path).open(newline="") as handle:
        return [{k: (v if k in ("patient", "centre") else float(v) if k.startswith("prob_") else int(v))
                 for k, v in row.items()} for row in csv.DictReader(handle)]


def prediction_metrics(rows: Sequence[dict]) -> dict:
    """:func:`classification_metrics` of prediction rows (``label``, ``prob_<k>``)."""
    n_classes = sum(key.startswith("prob_") for key in rows[0])
    probabilities = np.array([[row[f"prob_{k}"] for k in range(n_classes)] for row in rows])
    return classification_metrics([row["label"] for row in rows], probabilities)


# ----------------------------------------------------------------------------- one fold


def train_classifier_fold(
    config: Config,
    fold: int,
    out_dir: str | Path,
    overwrite: bool = False,
    resume: bool | None = None,
    extra_callbacks: Sequence = (),
    verbose: int | str = "auto",
) -> list[dict]:
    """Train fold ``fold`` of a whole-volume classifier and evaluate its test scans.

    Same folds (:func:`planar3d.train.fold_split`: ``config.split``), run-folder rules and resume as
    :func:`planar3d.train.train_fold`.

    Args:
        config: the run's settings (``task="classification"``, a registry ``backbone``).
        fold: 0-based fold index.
        out_dir: the run folder; the fold writes into ``out_dir/fold_<fold>/``.
        overwrite: discard an existing fold folder.
        resume: ``None`` resumes automatically from a backup; ``False`` refuses to.
        extra_callbacks: more Keras callbacks (run before the backup is written).
        verbose: Keras progress display.

    Returns:
        One dict per test scan: fold, patient, centre, label, predicted, ``prob_<k>``.

    Raises:
        Planar3DError: bad data or labels, fold out of range, a run folder from another config.
    """
    from planar3d.data import default_cache_dir, load_cases
    from planar3d.labels import write_labels
    from planar3d.train import (DONE_NAME, _check_run_dir, _read_log, _strategy, fit_resumable, fold_split, seed_run,
                                write_rows, write_run_record)

    config.validate()
    if config.task != "classification":
        raise Planar3DError(f"train_classifier_fold needs task='classification'. Received: task={config.task!r}")
    records = classification_records(config)
    labels = dataset_labels(config, records)
    n_classes = max(labels.values()) + 1
    train_ids, val_ids, test_ids = fold_split(records, fold, config.split)
    steps = math.ceil(len(train_ids) / config.batch_size)
    fold_dir = Path(out_dir) / f"fold_{fold}"
    if _check_run_dir(fold_dir, config, overwrite, resume):
        print(f"fold {fold}: already finished in {fold_dir}, reusing its results")
        return read_predictions(fold_dir / PREDICTIONS_NAME)
    if len({labels[i] for i in train_ids}) < 2:
        raise Planar3DError(f"fold {fold}: the training scans hold one class only ({labels[train_ids[0]]})")

    cases = load_cases(records, size=config.size, cache_dir=config.cache_dir or default_cache_dir(),
                       robust=config.robust_normalisation)
    by_id = {case.patient_id: case for case in cases}
    seed_run(config)
    with _strategy(config.strategy).scope():
        model = build_classifier_from_config(config, n_classes)
        _compile(model, config, n_classes, steps)

    # Nothing is written before the data, the labels and the weights have loaded.
    write_run_record(fold_dir, config, {"fold": fold, "train": train_ids, "validation": val_ids, "test": test_ids})
    write_labels(fold_dir / LABELS_NAME, labels, overwrite=True)

    def datasets(first_epoch: int):
        return (_dataset([by_id[i].volume for i in train_ids], [labels[i] for i in train_ids], config, first_epoch),
                _dataset([by_id[i].volume for i in val_ids], [labels[i] for i in val_ids], config, None), steps)

    log_path = fit_resumable(model, fold_dir, config, datasets, title=f"fold {fold} (classification)",
                             first_callbacks=[_epoch_seeds_callback()], extra_callbacks=extra_callbacks, verbose=verbose)

    # evaluate the best epoch on the test scans
    best = load_classifier(fold_dir / "best.keras")
    test_cases = [by_id[i] for i in test_ids]
    probabilities = _probabilities(best, np.stack([_sample(c.volume, config.channels) for c in test_cases]))
    rows = _prediction_rows(fold, test_cases, [labels[i] for i in test_ids], probabilities)
    write_rows(fold_dir / PREDICTIONS_NAME, rows)
    metrics = prediction_metrics(rows)
    write_rows(fold_dir / METRICS_NAME, [{"fold": fold, **{k: v for k, v in metrics.items() if k != "confusion_matrix"},
                                          "confusion_matrix": json.dumps(metrics["confusion_matrix"])}])
    write_text_atomic(fold_dir / DONE_NAME, json.dumps({"fold": fold, "epochs": len(_read_log(log_path))}) + "\n")
    print(f"fold {fold}: {metrics['n']} test scans, accuracy {metrics['accuracy']:.3f}, balanced accuracy "
          f"{metrics['balanced_accuracy']:.3f}, ROC AUC {metrics['roc_auc']:.3f}; outputs in {fold_dir}")
    return rows


# ----------------------------------------------------------------------------- cross-validation


def classification_summary(rows: Sequence[dict], config: Config) -> str:
    """Markdown: the metrics per fold, their mean ± sd over folds, and over all test scans pooled."""
    folds = sorted({row["fold"] for row in rows})
    per_fold = {fold: prediction_metrics([r for r in rows if r["fold"] == fold]) for fold in folds}
    pooled = prediction_metrics(rows)
    data_name = "built-in phantom (NOT MSSEG-2016), target: lesion load above the centre's median" \
        if config.data is None and config.labels is None else f"{config.data or 'built-in phantom'}, labels {config.labels}"

    lines = [
        f"# Classification cross-validation ({config.preset} preset)",
        "",
        f"Backbone `{config.backbone}`, mapping `{config.mapping}`, encoder weights `{config.encoder_weights}`"
        f"{' (frozen)' if config.freeze_encoder else ''}, {config.size}³ volumes. Data: {data_name}; "
        f"{len(rows)} test scans in {len(folds)} folds. ROC AUC is undefined (—) for a fold whose test scans "
        "hold one class; sd over folds (sample, ddof=1).",
        "",
        "| fold | n | accuracy | balanced accuracy | ROC AUC | confusion matrix (rows: true) |",
        "|---|---|---|---|---|---|",
    ]
    for fold, metrics in per_fold.items():
        lines.append(f"| {fold} | {metrics['n']} | " + " | ".join(_cell(metrics[k]) for k in METRIC_KEYS)
                     + f" | {metrics['confusion_matrix']} |")
    lines.append("| mean ± sd over folds | | " + " | ".join(_mean_sd([m[k] for m in per_fold.values()]) for k in METRIC_KEYS)
                 + " | |")
    lines.append(f"| all test scans pooled | {pooled['n']} | " + " | ".join(_cell(pooled[k]) for k in METRIC_KEYS)
                 + f" | {pooled['confusion_matrix']} |")
    lines += ["", "Per-scan probabilities: `results.csv`.", ""]
    return "\n".join(lines)


def run_classification_crossval(config: Config, out: str | Path, folds: Sequence[int] | None = None,
                                overwrite: bool = False, resume: bool | None = None,
                                parallel_argv: Sequence[str] | None = None) -> list[dict]:
    """Train and evaluate every fold; write ``results.csv`` (every test scan) and ``summary.md``.

    With ``config.seeds`` every seed runs in ``out/seed_<s>/`` (with its own ``summary.md``);
    ``out/summary.md`` then gives each seed's pooled metrics and their mean ± sd over seeds, and
    the rows of ``out/results.csv`` carry ``seed``.
    """
    from planar3d.grid import seed_config, seed_dir
    from planar3d.train import write_rows

    out = Path(out)
    folds = list(config.folds if folds is None else folds)
    if config.seeds is not None:
        rows = []
        for seed in config.seeds:
            argv = None if parallel_argv is None else [*parallel_argv, "--seed", str(seed)]
            seed_rows = run_classification_crossval(seed_config(config, seed), seed_dir(out, seed), folds, overwrite, resume, argv)
            rows += [{"seed": seed, **row} for row in seed_rows]
        write_rows(out / "results.csv", rows)
        write_text_atomic(out / "summary.md", seeds_classification_summary(rows, config))
        return rows
    if parallel_argv is not None:
        from planar3d.crossval import _run_parallel

        _run_parallel(folds, out, parallel_argv)
        rows = [row for fold in folds for row in read_predictions(out / f"fold_{fold}" / PREDICTIONS_NAME)]
    else:
        rows = [row for fold in folds for row in train_classifier_fold(config, fold, out, overwrite=overwrite, resume=resume)]
    write_rows(out / "results.csv", rows)
    write_text_atomic(out / "summary.md", classification_summary(rows, config))
    return rows


def seeds_classification_summary(rows: Sequence[dict], config: Config) -> str:
    """Markdown: each seed's metrics over all its test scans pooled, and their mean ± sd over seeds."""
    seeds = sorted({row["seed"] for row in rows})
    per_seed = {seed: prediction_metrics([r for r in rows if r["seed"] == seed]) for seed in seeds}
    lines = [
        f"# Classification cross-validation over {len(seeds)} seeds ({config.preset} preset)",
        "",
        f"Backbone `{config.backbone}`, mapping `{config.mapping}`, encoder weights `{config.encoder_weights}`"
        f"{' (frozen)' if config.freeze_encoder else ''}, {config.size}³ volumes, folds {config.folds}. Each seed's "
        "figures pool its test scans over the folds; sd over seeds (sample, ddof=1). Per seed: `seed_<s>/summary.md`.",
        "",
        "| seed | n | accuracy | balanced accuracy | ROC AUC | confusion matrix (rows: true) |",
        "|---|---|---|---|---|---|",
    ]
    for seed, metrics in per_seed.items():
        lines.append(f"| {seed} | {metrics['n']} | " + " | ".join(_cell(metrics[k]) for k in METRIC_KEYS)
                     + f" | {metrics['confusion_matrix']} |")
    lines.append("| mean ± sd over seeds | | " + " | ".join(_mean_sd([m[k] for m in per_seed.values()]) for k in METRIC_KEYS)
                 + " | |")
    lines += ["", "Per-scan probabilities: `results.csv`.", ""]
    return "\n".join(lines)


def _cell(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def _mean_sd(values: Sequence[float]) -> str:
    """``mean ± sd (n=k)`` of the finite values (sample sd), ``—`` when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return "—"
    sd = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
    return f"{values.mean():.3f}{sd} (n={len(values)})"


# ----------------------------------------------------------------------------- prediction


def predict_classes(model_path: str | Path, inputs: Sequence[str], output: str | Path, config: Config,
                    overwrite: bool = False) -> tuple[list[dict], list[str]]:
    """Classify scans with a trained classifier and write one CSV row per scan.

    Args:
        model_path: a classifier ``best.keras``.
        inputs: FLAIR files, folders of them, or CSV/TSV dataset tables (as ``planar3d.predict``).
        output: the ``.csv`` to write: ``scan``, ``subject``, ``predicted``, ``prob_<k>``.
        config: ``robust_normalisation`` is used (the run's config).
        overwrite: replace an existing ``output``.

    Returns:
        ``(rows, failures)``: the rows written and the scans that could not be read (skipped).

    Raises:
        InputFileError: ``output`` exists without ``overwrite`` or is not a ``.csv``; a bad
            model; no scans.
    """
    from planar3d.io import load_scan
    from planar3d.predict import input_scans, scan_name
    from planar3d.preprocess import preprocess

    output = Path(output)
    if output.suffix.lower() != ".csv":
        raise InputFileError(output, "a classifier writes a table: give --output a .csv file")
    check_writable(output, overwrite)  # refuse before computing anything
    scans = input_scans(inputs)
    model = load_classifier(model_path)
    size, channels = int(model.input_shape[1]), int(model.input_shape[-1])
    rows, failures = [], []
    for path in scans:
        try:
            volume, _, _ = preprocess(load_scan(path), size=size, robust=config.robust_normalisation)
        except Planar3DError as error:
            print(f"error: {error}", file=sys.stderr)
            failures.append(str(path))
            continue
        probabilities = _probabilities(model, _sample(volume, channels)[None])[0]
        rows.append({"scan": str(path), "subject": scan_name(path), "predicted": int(np.argmax(probabilities)),
                     **{f"prob_{k}": float(p) for k, p in enumerate(probabilities)}})
        print(f"{path}: class {rows[-1]['predicted']} (p = {probabilities.max():.3f})")
    if rows:
        with atomic_path(output, overwrite=overwrite) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows, failures
