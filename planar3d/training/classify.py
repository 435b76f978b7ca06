"""Whole-volume classification with a 3D-mapped backbone: ``python -m planar3d.train --task classification``.

Each scan is preprocessed as for segmentation (sagittal cube of edge ``size``, in [-1, 1]) and
the whole cube is one sample ``(size, size, size, channels)`` for
:func:`planar3d.nets.heads.build_classifier`. Labels come from a ``subject,label`` table
(:func:`planar3d.data.labels.read_labels`) or, for the built-in phantom, from its lesion-load target
(:func:`planar3d.data.labels.lesion_load_labels`). Folds, run folder, resume and logs are those of
segmentation (:mod:`planar3d.training.segment`): ``RUN_DIR/fold_k/`` receives ``config.json``,
``versions.json``, ``split.json``, ``labels.csv`` (the labels used), ``log.csv``,
``curves.png``, ``best.keras`` (best validation loss), then ``predictions.csv`` (one row per
test scan: label, predicted class, probability of every class), ``metrics.csv`` (accuracy,
balanced accuracy, ROC AUC, confusion matrix; scikit-learn) and ``done.json``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from planar3d.atomic import write_rows
from planar3d.config import Config
from planar3d.data.labels import lesion_load_labels, read_labels, write_labels
from planar3d.errors import Planar3DError
from planar3d.evaluation.metrics import prediction_metrics
from planar3d.io.records import Record
from planar3d.io.sources import classification_records
from planar3d.nets.load import load_classifier
from planar3d.training.fit import make_optimizer
from planar3d.training.fold import FoldPlan, FoldTask, Split, run_fold

__all__ = [
    "LABELS_NAME", "METRICS_NAME", "PREDICTIONS_NAME", "build_classifier_from_config", "class_probabilities",
    "dataset_labels", "read_predictions", "train_classifier_fold", "volume_sample"
]


PREDICTIONS_NAME = "predictions.csv"


METRICS_NAME = "metrics.csv"


LABELS_NAME = "labels.csv"




def dataset_labels(config: Config, records: Sequence[Record]) -> dict[str, int]:
    """``{patient_id: class}``: ``config.labels``, else the phantom's lesion-load target.

    Raises:
        Planar3DError: ``--data`` without ``--labels``.
        InputFileError: a bad labels table (see :func:`planar3d.data.labels.read_labels`).
    """

    if config.labels is not None:
        return read_labels(config.labels, records)
    if config.data is None:
        return lesion_load_labels(records)
    raise Planar3DError(f"--task classification needs --labels (a subject,label table) for --data {config.data}")


def volume_sample(volume: np.ndarray, channels: int) -> np.ndarray:
    """`(size, size, size)` -> `(size, size, size, channels)` float32 (grey repeated); a stack of
    modalities `(size, size, size, channels)` as it is."""
    volume = np.asarray(volume, dtype=np.float32)
    return volume if volume.ndim == 4 else np.repeat(volume[..., None], channels, axis=-1)


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
                yield (np.stack([volume_sample(volumes[i], channels) for i in chosen]),
                       np.asarray([labels[i] for i in chosen], dtype=np.int32))
            if epoch is None:
                return
            epoch += 1

    signature = (tf.TensorSpec((None, size, size, size, channels), tf.float32), tf.TensorSpec((None,), tf.int32))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    if first_epoch is None:  # a known length: Keras then does not warn that the input "ran out of data"
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(count / config.batch_size)))
    return dataset.prefetch(tf.data.AUTOTUNE)


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


def _compile_classifier(model, config: Config, n_classes: int, steps_per_epoch: int) -> None:
    import keras


    if n_classes == 2:  # one sigmoid unit
        loss, accuracy = "binary_crossentropy", keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        loss, accuracy = "sparse_categorical_crossentropy", keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=loss, metrics=[accuracy], jit_compile=False)


def class_probabilities(model, samples: np.ndarray) -> np.ndarray:
    """`(n, n_classes)` class probabilities (a one-unit sigmoid gives ``[1 - p, p]``)."""
    output = np.concatenate([np.asarray(model(sample[None], training=False), dtype=np.float64) for sample in samples])
    return np.concatenate([1.0 - output, output], axis=1) if output.shape[1] == 1 else output


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

    Same folds (:func:`planar3d.data.splits.fold_split`: ``config.split``), run-folder rules and resume as
    :func:`planar3d.training.segment.train_fold`.

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

    if config.task != "classification":
        raise Planar3DError(f"train_classifier_fold needs task='classification'. Received: task={config.task!r}")
    return run_fold(CLASSIFICATION, config, fold, out_dir, overwrite, resume, extra_callbacks, verbose)


def _check_classes(config: Config, records, split: Split) -> None:
    labels = dataset_labels(config, records)
    if len({labels[i] for i in split.train}) < 2:
        raise Planar3DError(f"fold {split.fold}: the training scans hold one class only ({labels[split.train[0]]})")


def _plan(config: Config, records, split: Split, by_id: dict) -> FoldPlan:
    labels = dataset_labels(config, records)
    n_classes = max(labels.values()) + 1
    steps = math.ceil(len(split.train) / config.batch_size)

    def build():
        model = build_classifier_from_config(config, n_classes)
        _compile_classifier(model, config, n_classes, steps)
        return model

    def datasets(first_epoch: int):
        return (_dataset([by_id[i].volume for i in split.train], [labels[i] for i in split.train], config, first_epoch),
                _dataset([by_id[i].volume for i in split.validation], [labels[i] for i in split.validation], config,
                         None), steps)

    def evaluate(fold_dir: Path) -> list[dict]:
        """The best epoch's predictions on the test scans: predictions.csv and metrics.csv."""
        best = load_classifier(fold_dir / "best.keras")
        test_cases = [by_id[i] for i in split.test]
        probabilities = class_probabilities(best, np.stack([volume_sample(c.volume, config.channels) for c in test_cases]))
        rows = _prediction_rows(split.fold, test_cases, [labels[i] for i in split.test], probabilities)
        write_rows(fold_dir / PREDICTIONS_NAME, rows)
        metrics = prediction_metrics(rows)
        write_rows(fold_dir / METRICS_NAME, [{"fold": split.fold,
                                              **{k: v for k, v in metrics.items() if k != "confusion_matrix"},
                                              "confusion_matrix": json.dumps(metrics["confusion_matrix"])}])
        print(f"fold {split.fold}: {metrics['n']} test scans, accuracy {metrics['accuracy']:.3f}, balanced accuracy "
              f"{metrics['balanced_accuracy']:.3f}, ROC AUC {metrics['roc_auc']:.3f}; outputs in {fold_dir}")
        return rows

    return FoldPlan(build=build, datasets=datasets, evaluate=evaluate, title=f"fold {split.fold} (classification)",
                    first_callbacks=lambda fold_dir: [_epoch_seeds_callback()],
                    record_files=lambda fold_dir: write_labels(fold_dir / LABELS_NAME, labels, overwrite=True))


#: classification's part of :func:`planar3d.training.fold.run_fold`.
def _labelled_records(config: Config) -> list[Record]:
    """The data set's records, its labels table checked first (a bad table is refused before the split)."""
    records = classification_records(config)
    dataset_labels(config, records)
    return records


CLASSIFICATION = FoldTask(
    records=_labelled_records,
    finished_rows=lambda fold_dir: read_predictions(fold_dir / PREDICTIONS_NAME),
    plan=lambda *args: _plan(*args),
    check=lambda *args: _check_classes(*args),
)
