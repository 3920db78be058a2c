"""Crystal-system accuracy of the DiffractionCNN and ResNet-18 on held-out crystals.

The workflow's diffraction rules, end to end in one process, at a size chosen
on the command line (a GPU run for the issue's done-when; ``--tiny`` checks
the code paths on a CPU in a minute)::

    python benchmarks/diffraction_accuracy.py --out results/bench/diffraction \
        --crystals 3000 --images 1 --pretrain-crystals 3000 --device cuda --workers 8

and a short CPU run of the two classifiers alone, tested on fold 0::

    OMP_NUM_THREADS=1 python benchmarks/diffraction_accuracy.py --out /tmp/bench \
        --crystals 1500 --images 1 --only-folds 0 --stages cnn --epochs-cnn 8

Accuracy follows the number of *crystals* far more than the number of
patterns per crystal (the patterns of one session differ only in rotation
and noise), so a large run should spend its budget on crystals.

Stages (each writes its tables before the next starts, so a run cut short
keeps what it finished; ``--stages`` picks them): synthesis (in parallel),
StratifiedGroupKFold split over crystals, DiffractionCNN per fold +
evaluation (``cnn``), ResNet-18 pretraining on crystals of its own (Bravais
lattices, ``pretrain``), ResNet-18 by transfer per fold + evaluation
(``resnet``; from random weights without ``pretrain``), the transfer
strategies against labelled-set size (``transfer``, first fold), optionally
the DiffractionCNN on ``low_index`` zone axes (first fold).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import pandas as pd

from grainflow.diffraction.evaluate import evaluate_classifier
from grainflow.diffraction.representation import DEFAULT_REPRESENTATION, FORMS
from grainflow.diffraction.simulate import synthesize_diffraction_specimen
from grainflow.diffraction.train import (
    classifier_config,
    pretrain,
    train_diffraction_fold,
    transfer_run,
)
from grainflow.io.hdf5 import write_specimen
from grainflow.seeds import derive_seed
from grainflow.splits import make_manifest, read_manifest, write_manifest

LOG = logging.getLogger("diffraction_accuracy")


def _specimen(job):
    name, settings, seed, task, path = job
    samples, spec = synthesize_diffraction_specimen(name, settings, seed=seed, task=task)
    write_specimen(path, samples, task="diffraction", specimen=name, specimen_params=spec)
    return path


def synthesize(out: Path, settings: dict, crystals: int, seed: int, pool: Pool) -> list[str]:
    jobs = [
        (
            f"s{i:03d}",
            settings,
            derive_seed(seed, "synthesize", "diffraction", f"s{i:03d}"),
            "diffraction",
            str(out / f"s{i:03d}.h5"),
        )
        for i in range(crystals)
    ]
    return pool.map(_specimen, jobs, chunksize=4)


def pretraining_file(
    out: Path, settings: dict, crystals: int, images: int, seed: int, pool: Pool
) -> Path:
    # the same crystals and seeds as grainflow.diffraction.simulate.pretraining_samples
    n_sessions = settings.get("sessions_per_specimen", 2)
    s = {**settings, "images_per_session": -(-images // n_sessions)}
    jobs = [
        (
            f"s{i:04d}",
            s,
            derive_seed(seed, "crystal", i),
            "pretrain",
            str(out / "pretrain" / f"s{i:04d}.h5"),
        )
        for i in range(crystals)
    ]
    (out / "pretrain").mkdir(parents=True, exist_ok=True)
    paths = pool.map(_specimen, jobs, chunksize=4)
    from grainflow.io.hdf5 import read_specimen

    samples = [x for p in paths for x in read_specimen(p).samples[:images]]
    path = out / "pretrain.h5"
    write_specimen(path, samples, task="diffraction", specimen="pretrain")
    return path


def evaluate(out: Path, arch: str, manifest: Path, folds, device: str) -> dict:
    ckpts = {k: out / "models" / arch / f"fold{k}" / "best.pt" for k in folds}
    pred, tables = evaluate_classifier(manifest, ckpts, device=device)
    d = out / "metrics" / arch
    d.mkdir(parents=True, exist_ok=True)
    for name, table in {"predictions": pred, **tables}.items():
        table.to_csv(d / f"{name}.tsv", sep="\t", index=False, float_format="%.6g")
    LOG.info(
        "%s\n%s\n%s\n%s",
        arch,
        tables["summary"].to_string(index=False),
        tables["per_class"].to_string(index=False),
        tables["breakdown"].to_string(index=False),
    )
    return {
        "summary": tables["summary"].to_dict("records"),
        "per_class": tables["per_class"].to_dict("records"),
    }


def train_folds(out, arch_name, arch, manifest, folds, shared, args, pretrained=""):
    for k in folds:
        d = out / "models" / arch_name / f"fold{k}"
        t = time.perf_counter()
        train_diffraction_fold(
            manifest,
            k,
            arch=arch,
            shared=shared,
            pretrained=pretrained,
            best_path=d / "best.pt",
            history_path=d / "history.tsv",
            last_path=d / "last.pt",
            val_specimens_per_class=args.val_per_class,
            validation_seed=derive_seed(args.seed, "validation"),
            rotate=bool(args.rotate),
            representation={"spot": args.spot_form, "ring": args.ring_form},
            seed=derive_seed(args.seed, arch_name, k),
            threads=args.threads,
        )
        LOG.info("%s fold %d trained in %.0f s", arch_name, k, time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--crystals", type=int, default=3000)
    p.add_argument("--sessions", type=int, default=2)
    p.add_argument("--images", type=int, default=1, help="patterns per session")
    p.add_argument("--zone-axes", default="principal")
    p.add_argument("--pretrain-crystals", type=int, default=3000)
    p.add_argument("--pretrain-images", type=int, default=4)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--val-per-class", type=int, default=5)
    p.add_argument("--epochs-cnn", type=int, default=40)
    p.add_argument("--epochs-resnet", type=int, default=15)
    p.add_argument("--epochs-pretrain", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--transfer-sizes", default="50,200,1000")
    p.add_argument("--transfer-steps", type=int, default=300)
    p.add_argument("--strategies", default="frozen,finetune,full,scratch")
    p.add_argument("--low-index", action="store_true", help="also: the CNN on low-index zones")
    p.add_argument("--rotate", type=int, default=1)
    p.add_argument(
        "--spot-form",
        default=DEFAULT_REPRESENTATION["spot"],
        choices=FORMS,
        help="form of the spot patterns (diffraction.representation.spot)",
    )
    p.add_argument(
        "--ring-form",
        default=DEFAULT_REPRESENTATION["ring"],
        choices=FORMS,
        help="form of the ring patterns (diffraction.representation.ring)",
    )
    p.add_argument("--only-folds", default="", help="train and test only these folds, e.g. 0")
    p.add_argument(
        "--stages",
        default="cnn,pretrain,resnet,transfer",
        help="of cnn, pretrain, resnet, transfer; resnet without pretrain starts "
        "from random weights",
    )
    p.add_argument("--settings", default="{}", help="JSON: more synthesize.diffraction keys")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--seed", type=int, default=20261122)
    p.add_argument("--tiny", action="store_true", help="a 1-minute check of the code paths")
    args = p.parse_args(argv)
    if args.tiny:
        args.crystals, args.pretrain_crystals, args.images = 12, 48, 2
        args.epochs_cnn = args.epochs_resnet = args.epochs_pretrain = 1
        args.val_per_class, args.transfer_sizes, args.transfer_steps = 1, "2", 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(out / "run.log")],
    )
    settings = {
        "sessions_per_specimen": args.sessions,
        "images_per_session": args.images,
        "zone_axes": args.zone_axes,
        **json.loads(args.settings),
    }
    stages = set(filter(None, args.stages.split(",")))
    folds = (
        [int(k) for k in args.only_folds.split(",")] if args.only_folds else list(range(args.folds))
    )
    shared = {
        "device": args.device,
        "batch_size": args.batch_size,
        "num_workers": args.workers,
        "progress": False,
        "deterministic": False,
    }
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "seconds": {}}

    def save():
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))

    t0 = time.perf_counter()
    pretraining = "pretrain" in stages and ({"resnet", "transfer"} & stages)
    with Pool(args.processes) as pool:
        files = synthesize(out / "data", settings, args.crystals, args.seed, pool)
        manifest = out / "split.tsv"
        write_manifest(
            make_manifest(files, folds=args.folds, stratify_by="crystal_system"), manifest
        )
        if pretraining:
            pre = pretraining_file(
                out,
                settings,
                args.pretrain_crystals,
                args.pretrain_images,
                derive_seed(args.seed, "pretrain"),
                pool,
            )
        if args.low_index:
            low = synthesize(
                out / "low_index",
                {**settings, "zone_axes": "low_index"},
                args.crystals,
                derive_seed(args.seed, "low"),
                pool,
            )
    results["seconds"]["synthesis"] = time.perf_counter() - t0
    save()
    representation = {"spot": args.spot_form, "ring": args.ring_form}

    cnn = {"model": "diffraction_cnn", "epochs": args.epochs_cnn}
    if "cnn" in stages:
        t = time.perf_counter()
        train_folds(out, "diffraction_cnn", cnn, manifest, folds, shared, args)
        results["diffraction_cnn"] = evaluate(out, "diffraction_cnn", manifest, folds, args.device)
        results["seconds"]["diffraction_cnn"] = time.perf_counter() - t
        save()

    pre_ckpt = out / "models" / "pretrain" / "best.pt"
    if pretraining:
        t = time.perf_counter()
        _, kwargs, config = classifier_config(
            {"model": "resnet18", "epochs": args.epochs_pretrain},
            shared=shared,
            threads=args.threads,
            seed=derive_seed(args.seed, "pretrain-train"),
        )
        r = pretrain(
            pre,
            model_kwargs=kwargs,
            config=config,
            best_path=pre_ckpt,
            history_path=pre_ckpt.with_name("history.tsv"),
            last_path=pre_ckpt.with_name("last.pt"),
            rotate=bool(args.rotate),
            representation=representation,
            seed=args.seed,
        )
        results["pretrain"] = {"best_epoch": r.best_epoch, "val_accuracy_bravais": r.best_score}
        results["seconds"]["pretrain"] = time.perf_counter() - t
        save()

    if "resnet" in stages:
        t = time.perf_counter()
        resnet = {"model": "resnet18", "epochs": args.epochs_resnet, "transfer": "full"}
        train_folds(
            out,
            "resnet18",
            resnet,
            manifest,
            folds,
            shared,
            args,
            pretrained=str(pre_ckpt) if pretraining else "",
        )
        results["resnet18"] = evaluate(out, "resnet18", manifest, folds, args.device)
        results["seconds"]["resnet18"] = time.perf_counter() - t
        save()

    if "transfer" in stages and pretraining:
        t = time.perf_counter()
        rows = []
        table = read_manifest(manifest)
        for strategy in filter(None, args.strategies.split(",")):
            for n in map(int, args.transfer_sizes.split(",")):
                _, _, config = classifier_config(
                    {"model": "resnet18"},
                    shared=shared,
                    threads=args.threads,
                    seed=derive_seed(args.seed, strategy, n),
                )
                rows.append(
                    transfer_run(
                        table,
                        folds[0],
                        strategy=strategy,
                        n_per_class=n,
                        steps=args.transfer_steps,
                        config=config,
                        pretrained=str(pre_ckpt),
                        out_dir=out / "transfer" / strategy / f"n{n}",
                        val_specimens_per_class=args.val_per_class,
                        validation_seed=derive_seed(args.seed, "validation"),
                        rotate=bool(args.rotate),
                        representation=representation,
                        device=args.device,
                        seed=derive_seed(args.seed, "transfer", strategy, n),
                    )
                )
                LOG.info("transfer %s", rows[-1])
                pd.DataFrame(rows).to_csv(out / "transfer.tsv", sep="\t", index=False)
        results["transfer"] = rows
        results["seconds"]["transfer"] = time.perf_counter() - t
        save()

    if args.low_index:
        t = time.perf_counter()
        low_manifest = out / "split_low_index.tsv"
        write_manifest(
            make_manifest(low, folds=args.folds, stratify_by="crystal_system"), low_manifest
        )
        d = out / "models" / "cnn_low_index" / f"fold{folds[0]}"
        train_diffraction_fold(
            low_manifest,
            folds[0],
            arch=cnn,
            shared=shared,
            best_path=d / "best.pt",
            history_path=d / "history.tsv",
            last_path=d / "last.pt",
            val_specimens_per_class=args.val_per_class,
            validation_seed=derive_seed(args.seed, "validation"),
            rotate=bool(args.rotate),
            representation=representation,
            seed=args.seed,
            threads=args.threads,
        )
        pred, tables = evaluate_classifier(
            low_manifest, {folds[0]: d / "best.pt"}, device=args.device
        )
        pred.to_csv(out / "low_index_predictions.tsv", sep="\t", index=False)
        tables["breakdown"].to_csv(out / "low_index_breakdown.tsv", sep="\t", index=False)
        results["cnn_low_index"] = tables["summary"].to_dict("records")
        LOG.info(
            "low index\n%s\n%s",
            tables["summary"].to_string(index=False),
            tables["breakdown"].to_string(index=False),
        )
        results["seconds"]["low_index"] = time.perf_counter() - t
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
