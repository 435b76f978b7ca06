"""What an ensemble costs against one model: members that share a frozen ImageNet encoder vs members run apart.

Five planar res-u-nets with the VGG16 ImageNet encoder (frozen in training, so bit-identical in
every fold and seed model) and five different decoders segment one preprocessed phantom scan
(``--size``³, crop ``auto``, streamed encoder, ``--precision``) three ways, interleaved in one
process so drift hits all alike: one member alone; the five as ``predict_members`` runs them
(the encoder's features computed once, only the decoders apart); and the five one after the
other (``predict_volume`` per member, as before). Ratios are to the single model measured in
the same run; the shared pass's outputs are checked equal to the members' own.

    python benchmarks/bench_ensemble.py [--size 128] [--members 5] [--repeats 3] [--precision float32]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import interleaved_medians, machine, peak_rss_gb  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args(argv)

    import numpy as np

    from planar3d.data.preprocess import preprocess
    from planar3d.inference.predict import predict_members, predict_volume, shares_encoder
    from planar3d.io.datasets import find_dataset
    from planar3d.io.nifti import load_scan
    from planar3d.io.phantom import ensure_phantom
    from planar3d.nets.model import build_model

    start = time.perf_counter()
    models = [build_model((16, args.size, args.size, 1), encoder_weights="imagenet", seed=seed)
              for seed in range(args.members)]
    assert shares_encoder(models), "the members' ImageNet encoders differ"
    record = find_dataset(ensure_phantom())[0]
    volume, _, _ = preprocess(load_scan(record.flair), size=args.size)
    options = dict(crop="auto", precision=args.precision)
    shared = predict_members(models, volume, **options)
    for mine, model in zip(shared, models):
        np.testing.assert_array_equal(mine, predict_volume(model, volume, **options))
    setup = time.perf_counter() - start

    timings = interleaved_medians({
        "one model": lambda: predict_volume(models[0], volume, **options),
        f"{args.members} members, one encoder pass (predict_members)": lambda: predict_members(models, volume, **options),
        f"{args.members} members one after the other": lambda: [predict_volume(m, volume, **options) for m in models],
    }, repeats=args.repeats)
    base = timings["one model"]
    print(f"# Ensemble cost: {args.members} members vs one model\n")
    print(f"Machine: {machine()}.\n")
    print(f"Scan: phantom {record.patient_id} preprocessed to {args.size}³; crop auto, streamed encoder, "
          f"{args.precision}; median of {args.repeats} interleaved runs after a warm-up; setup and the equality "
          f"check {setup:.0f} s; peak memory {peak_rss_gb():.1f} GB.\n")
    print("| inference | median wall | × one model |\n|---|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.2f} s | {seconds / base:.2f} |")
    print("\nThe shared pass's outputs equal each member's own predict_volume exactly (checked above).")


if __name__ == "__main__":
    main()
