"""Train the classifier or the segmenter with Ray Train: one CPU worker here, N GPU workers on a cluster.

    forgescan train classifier --data DATASET --output runs/classifier [--folds 5]
    forgescan train segmenter  --data DATASET --output runs/segmenter  [--masks MASKS]

The classifier runs stratified K-fold cross-validation (a checkpoint per fold,
the best fold copied to OUTPUT/classifier.safetensors); the segmenter holds out
a seeded validation split. Each run writes safetensors + model card, metrics as
JSON and pictures (confusion matrix, ROC, training curves).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from forensics import code_version
from forensics.model_card import (DEFAULT_CLASSIFIER_NAME, DEFAULT_SEGMENTER_ARCH, DEFAULT_SEGMENTER_ENCODER,
                                  MANIPULATION_CLASSES, NATIVE_CROPS, NATIVE_TILES, RESIZE_MODES, ModelCard)
from jobs.cli import run_module

MODELS = ("classifier", "segmenter")


_CARD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelCard)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from forensics.training import TrainSettings  # the optimisation defaults live there

    settings = TrainSettings()
    parser.add_argument("model", choices=MODELS, help="which model to train")
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True,
                      help="classifier: folder with real/ and fake/ subfolders, or OpenFake-style Parquet (file or folder); "
                           "segmenter: folder with images/ and masks/, or the images folder with --masks")
    data.add_argument("--masks", help="segmenter: mask folder (masks matched to images by file stem)")
    data.add_argument("--valid-data", help="segmenter: a separate validation set (same layout as --data)")
    data.add_argument("--valid-fraction", type=float, default=0.15, help="segmenter: share held out when --valid-data is not given")
    data.add_argument("--folds", type=int, default=5, help="classifier: K of stratified K-fold cross-validation")
    data.add_argument("--max-folds", type=int, help="classifier: train only the first N of the K folds (quick runs)")
    data.add_argument("--exclude-family", action="append", dest="exclude_families", metavar="FAMILY",
                      help="leave a family out of training and validation (repeat): classifier, a generator family's fakes; "
                           "segmenter, every image with a manipulation family (from the dataset's samples.csv). "
                           "A leave-one-family-out run, recorded in the card's training_data.excluded_families")
    model = parser.add_argument_group("model")
    model.add_argument("--input-size", type=int, default=_CARD_DEFAULTS["input_size"][0],
                       help=f"square model input in pixels, written to the card (default {_CARD_DEFAULTS['input_size'][0]})")
    model.add_argument("--resize-mode", choices=RESIZE_MODES,
                       help="how images become model input, written to the card and followed by the scanner: "
                            "classifier native_crops (default: native-resolution crops, which keep generator traces that "
                            "resizing erases), center_crop or resize; segmenter native_tiles (default: native-resolution "
                            "tiles stitched back at full size) or resize")
    model.add_argument("--crops", type=int, default=_CARD_DEFAULTS["crops"],
                       help=f"classifier, native_crops: crops scored per image (default {_CARD_DEFAULTS['crops']})")
    model.add_argument("--tile-overlap", type=int, default=_CARD_DEFAULTS["tile_overlap"],
                       help=f"segmenter, native_tiles: pixels shared by neighbouring tiles (default {_CARD_DEFAULTS['tile_overlap']})")
    model.add_argument("--max-tiles", type=int, default=_CARD_DEFAULTS["max_tiles"],
                       help="segmenter, native_tiles: larger images are reduced to fit this many tiles "
                            f"(default {_CARD_DEFAULTS['max_tiles']})")
    model.add_argument("--classifier-name", default=DEFAULT_CLASSIFIER_NAME,
                       help=f"timm model name (default {DEFAULT_CLASSIFIER_NAME})")
    model.add_argument("--arch", default=DEFAULT_SEGMENTER_ARCH, help=f"segmenter architecture, smp (default {DEFAULT_SEGMENTER_ARCH})")
    model.add_argument("--encoder", default=DEFAULT_SEGMENTER_ENCODER,
                       help=f"segmenter encoder, smp (default {DEFAULT_SEGMENTER_ENCODER}); resnet34 and vgg16_bn are also "
                            "tested end to end")
    model.add_argument("--classes", default="1",
                       help="segmenter classes: 1 for a binary segmenter (manipulated or not), or the class names by id, "
                            "comma-separated, id 0 first and authentic, e.g. "
                            f"{','.join(MANIPULATION_CLASSES)}; masks hold class ids (or white = class 1)")
    model.add_argument("--noise-residuals", action="store_true",
                       help="segmenter: the encoder also sees three SRM high-pass noise residuals of its input "
                            "(written to the card's architecture; the scan builds the same model)")
    model.add_argument("--backbone-weights", help="local safetensors with ImageNet features for the backbone/encoder")
    model.add_argument("--version", help="card version string (default: <architecture>-<date>)")
    optimisation = parser.add_argument_group("optimisation")
    optimisation.add_argument("--epochs", type=int, default=settings.epochs)
    optimisation.add_argument("--batch-size", type=int, default=settings.batch_size, help="per worker")
    optimisation.add_argument("--learning-rate", type=float, default=settings.learning_rate)
    optimisation.add_argument("--weight-decay", type=float, default=settings.weight_decay)
    optimisation.add_argument("--warmup-fraction", type=float, default=settings.warmup_fraction)
    optimisation.add_argument("--gradient-clip", type=float, default=settings.gradient_clip)
    optimisation.add_argument("--no-augment", action="store_true", help="switch off flip/resize/blur/JPEG augmentation")
    optimisation.add_argument("--manipulated-windows", type=float, metavar="P",
                              help="native-tile segmenters: share of training windows placed over a manipulated pixel, "
                                   f"e.g. 0.5 (default {settings.augment.manipulated_window_probability})")
    optimisation.add_argument("--target-fpr", type=float, default=settings.target_fpr,
                              help="false-positive rate for the card's thresholds")
    optimisation.add_argument("--target-pixel-fpr", type=float, default=settings.target_pixel_fpr,
                              help="segmenter: share of authentic pixels the card's pixel threshold may mark "
                                   f"(default {settings.target_pixel_fpr}; 1 = the best-F1 threshold)")
    optimisation.add_argument("--seed", type=int, default=settings.seed)
    cluster = parser.add_argument_group("Ray Train")
    cluster.add_argument("--num-workers", type=int, default=1,
                         help="training workers (one per GPU on a cluster); 0 runs the same loop in this process without "
                              "Ray (a single CPU or GPU, e.g. where a local Ray instance cannot start)")
    cluster.add_argument("--use-gpu", action="store_true")
    cluster.add_argument("--cpus-per-worker", type=float, default=1)
    cluster.add_argument("--threads", type=int, default=settings.threads, help="torch threads per worker (0: the node's CPUs / local workers)")
    cluster.add_argument("--loader-workers", type=int, default=settings.loader_workers, help="DataLoader processes per worker")
    cluster.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS or a local instance)")
    output = parser.add_argument_group("output")
    output.add_argument("--output", required=True, help="local folder for checkpoints, metrics and pictures")
    output.add_argument("--full-precision", action="store_true", help="store float32 weights (default float16, half the size)")


class TrainingFailed(RuntimeError):
    """A Ray Train run that ended in an error: the message says where its logs are."""


def worker_error(error: Exception) -> str:
    """The root cause in a Ray Train failure, without the traceback around it: the last `SomeError: message`
    line of Ray's error snippet (e.g. a DatasetError naming the image a worker could not decode)."""
    text = str(error).strip()
    causes = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", text, flags=re.MULTILINE)
    if not causes:
        return text.splitlines()[0] if text else type(error).__name__
    kind, message = causes[-1]
    return message if kind == "DatasetError" else f"{kind}: {message}"


def run(args: argparse.Namespace) -> int:
    from forensics.training import DatasetError

    try:
        _settings(args)  # a bad setting fails here, before any data is read
        if args.model == "classifier":
            summary = train_classifier(args)
        else:
            summary = train_segmenter(args)
    except (DatasetError, ValueError) as error:
        print(f"forgescan train: {error}", file=sys.stderr)
        return 2
    except TrainingFailed as error:
        print(f"forgescan train: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


# --- the command line that reproduces a run ------------------------------------------------------------


def reproduce_command(args: argparse.Namespace) -> str:
    """The commands that reproduce this run, for the model card: the command that wrote `--backbone-weights`
    (recorded in the file by forensics.training.backbones), the `forgescan make-dataset` command recorded in
    the training data's dataset.json (each when it was made that way), then this command line."""
    from forensics.training.backbones import weights_command
    from jobs.make_dataset import chain_with_dataset

    weights = args.backbone_weights
    made_weights = weights_command(weights) if weights and "://" not in weights and Path(weights).is_file() else None
    return chain_with_dataset(made_weights or "", args.data, _this_command_line(args))


def _this_command_line(args: argparse.Namespace) -> str:
    program = Path(sys.argv[0]).name
    if program in ("forgescan", "cli.py"):
        return " ".join(["forgescan"] + [shlex.quote(a) for a in sys.argv[1:]])
    if program == "train.py":
        return " ".join(["python -m jobs.train"] + [shlex.quote(a) for a in sys.argv[1:]])
    # Called as a library (a notebook, a test): rebuild the command from the parsed arguments.
    options = []
    for name, value in vars(args).items():
        if name in ("model", "handler") or value in (None, False, []):
            continue
        flag = "--" + _REPEATED_FLAGS.get(name, name).replace("_", "-")
        for item in value if isinstance(value, list) else [value]:
            options.append(flag + ("" if item is True else f" {shlex.quote(str(item))}"))
    return " ".join(["forgescan train", args.model] + options)


_REPEATED_FLAGS = {"exclude_families": "exclude_family"}  # dest -> flag of the options given once per value


def _settings(args):
    from forensics.training import AugmentConfig, TrainSettings

    backbone_weights = args.backbone_weights
    if backbone_weights and "://" not in backbone_weights:
        if not Path(backbone_weights).is_file():
            raise ValueError(f"--backbone-weights {backbone_weights} does not exist; pass a local safetensors file.")
        backbone_weights = str(Path(backbone_weights).resolve())  # workers run in another directory

    return TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
        warmup_fraction=args.warmup_fraction, gradient_clip=args.gradient_clip, seed=args.seed, threads=args.threads,
        loader_workers=args.loader_workers, target_fpr=args.target_fpr, target_pixel_fpr=args.target_pixel_fpr, backbone_weights=backbone_weights,
        augment=AugmentConfig.none() if args.no_augment else AugmentConfig(**(
            {} if args.manipulated_windows is None else {"manipulated_window_probability": args.manipulated_windows})),
    )


def _version(args, architecture: str) -> str:
    return args.version or f"{architecture}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M}"


# --- Ray Train ------------------------------------------------------------------------------------------


def _ray_train_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; the chief saves the checkpoint and hands it to Ray as a directory."""
    import ray.train
    import ray.train.torch
    import torch

    from forensics.model_card import ModelCard
    from forensics.training import TrainSettings, WorkerContext, train_model

    train_context = ray.train.get_context()
    world_size = train_context.get_world_size()
    settings = TrainSettings.from_dict(config["settings"])
    if not settings.threads:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, train_context.get_local_world_size())))
    context = WorkerContext(
        rank=train_context.get_world_rank(), world_size=world_size, device=ray.train.torch.get_device(),
        wrap_model=ray.train.torch.prepare_model if world_size > 1 else (lambda model: model),
    )
    result = train_model(ModelCard.from_dict(config["card"]), config["train_samples"], config["valid_samples"], settings,
                         context, report=lambda metrics: ray.train.report(metrics), description=config["description"])
    if result is None:
        ray.train.report({"done": True})
        return
    with tempfile.TemporaryDirectory() as directory:
        save_run(result, Path(directory), half=config["half"])
        ray.train.report({"done": True}, checkpoint=ray.train.Checkpoint.from_directory(directory))


def save_run(result, directory: Path, half: bool) -> None:
    """What a training run leaves: the checkpoint (weights + card), the history and the validation outputs."""
    from forensics.checkpoint import save_checkpoint

    save_checkpoint(result.model, result.card, Path(directory) / "model.safetensors", half=half)
    (Path(directory) / "history.json").write_text(json.dumps(result.history, indent=2))
    np.savez_compressed(Path(directory) / "validation.npz", **result.validation)


def fit_in_process(args, card, train_samples, valid_samples, output: Path, name: str) -> Path:
    """`--num-workers 0`: the training loop in this process (no Ray); returns the folder holding the checkpoint."""
    import torch

    from forensics.inference import pick_device
    from forensics.training import WorkerContext, train_model

    settings = _settings(args)
    device = pick_device("cuda" if args.use_gpu else "cpu")
    if not settings.threads:
        torch.set_num_threads(os.cpu_count() or 1)
    result = train_model(card, train_samples, valid_samples, settings, WorkerContext(device=device), description=name)
    destination = output / name
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    save_run(result, destination, half=not args.full_precision)
    return destination


def start_ray(address: str) -> None:
    """Join the Ray cluster at `address`, or start a private instance for ``local`` (no dashboard, and so no
    State API: its workers print only the errors of Ray Train's placement-group cleaner)."""
    import ray

    private = address == "local"
    ray.init(address=address, include_dashboard=False, log_to_driver=True,
             runtime_env={"worker_process_setup_hook": _quiet_placement_group_cleaner} if private else None)


def _quiet_placement_group_cleaner() -> None:
    """Ray Train's placement-group cleaner asks the State API about every second whether the run's controller
    is alive; without a dashboard every answer is a warning (2,633 lines in one 20-epoch run) that buries the
    progress bars. Runs in each worker process of a private instance: only the cleaner's errors are printed."""
    import logging

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def fit_with_ray_train(args, card, train_samples, valid_samples, output: Path, name: str) -> Path:
    """Train one model through `TorchTrainer` (or in this process with --num-workers 0); returns the local
    folder holding the chief's checkpoint."""
    if args.num_workers == 0:
        return fit_in_process(args, card, train_samples, valid_samples, output, name)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        # "local" starts a private instance; plain ray.init() would join any Ray instance running on this machine.
        start_ray(args.ray_address or os.environ.get("RAY_ADDRESS") or "local")
    config = {
        "card": card.to_dict(), "train_samples": train_samples, "valid_samples": valid_samples,
        "settings": _settings(args).to_dict(), "half": not args.full_precision, "description": name,
    }
    trainer_run_name = f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    trainer = TorchTrainer(
        _ray_train_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=args.num_workers, use_gpu=args.use_gpu,
                                     resources_per_worker={"CPU": args.cpus_per_worker}),
        run_config=RunConfig(name=trainer_run_name,
                             storage_path=str((output / "ray_results").resolve())),
    )
    from ray.train import TrainingFailedError

    run_folder = output / "ray_results" / trainer_run_name
    try:
        result = trainer.fit()
        failure = getattr(result, "error", None)  # a Result that carries the error instead of raising it
    except TrainingFailedError as error:
        failure = error
    if failure is not None:
        raise TrainingFailed(f"Training {name} failed in a worker: {worker_error(failure)} The full traceback is in the "
                             f"workers' logs under {run_folder} and Ray's session logs (/tmp/ray/session_latest/logs); "
                             "fix the cause and rerun the same command.") from failure
    destination = output / name
    if destination.exists():
        shutil.rmtree(destination)
    with result.checkpoint.as_directory() as directory:
        shutil.copytree(directory, destination)
    return destination


# --- the two models -------------------------------------------------------------------------------------


def train_classifier(args) -> dict[str, Any]:
    from forensics.checkpoint import load_checkpoint, save_checkpoint
    from forensics.model_card import default_classifier_card
    from forensics.models import build_model
    from forensics.training import find_labelled_images, fingerprint_samples, stratified_folds, without_families
    from forensics.training.reports import write_classifier_report

    samples = without_families(find_labelled_images(args.data), args.exclude_families or ())
    labels = np.array([s.label for s in samples])
    folds = stratified_folds(labels, args.folds, args.seed)[: args.max_folds or args.folds]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    card = default_classifier_card((args.input_size, args.input_size)).replace(
        architecture={"name": args.classifier_name},
        resize_mode=args.resize_mode or NATIVE_CROPS,
        crops=args.crops,
        version=_version(args, args.classifier_name),
        trained=True,
        training_data={"source": str(args.data), **fingerprint_samples(samples),
                       **({"excluded_families": sorted(args.exclude_families)} if args.exclude_families else {})},
        reproduce=reproduce_command(args),
        code_version=code_version(),
        notes=f"Trained by `forgescan train classifier` with {args.folds}-fold cross-validation; "
              "this file is the fold with the best validation ROC-AUC.",
    )
    build_model(card)  # a wrong --classifier-name fails here, with the valid choices, not inside a worker
    fold_folders = []
    for index, (train_index, valid_index) in enumerate(folds):
        fold_card = card.replace(training_data={**card.training_data, "fold": index, "folds": args.folds})
        fold_folders.append(fit_with_ray_train(args, fold_card, [samples[i] for i in train_index],
                                               [samples[i] for i in valid_index], output, f"fold_{index}"))
    summary = write_classifier_report(fold_folders, output)
    best = fold_folders[summary["best_fold"]]
    model, best_card = load_checkpoint(best / "model.safetensors")
    final_card = best_card.replace(metrics={**best_card.metrics, "cross_validation": summary["overall"],
                                            "folds": summary["per_fold"]})
    save_checkpoint(model, final_card, output / "classifier.safetensors", half=not args.full_precision)
    summary["checkpoint"] = str(output / "classifier.safetensors")
    return summary


def parse_classes(value: str) -> tuple[str, ...]:
    """--classes: `1` (binary: no class list) or comma-separated class names by id, authentic first."""
    value = str(value).strip()
    if value == "1":
        return ()
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if value.isdigit() or len(names) < 2:
        raise ValueError(f"--classes {value}: pass 1 for a binary segmenter, or name the classes by id, comma-separated, "
                         f"authentic first, e.g. --classes {','.join(MANIPULATION_CLASSES)}")
    return names


def train_segmenter(args) -> dict[str, Any]:
    from forensics.checkpoint import load_checkpoint, save_checkpoint
    from forensics.model_card import default_segmenter_card
    from forensics.models import build_model
    from forensics.training import (
        find_image_mask_pairs, fingerprint_samples, holdout_split, manipulation_families_of, without_manipulation_families,
    )
    from forensics.training.reports import write_segmenter_report

    pairs = find_image_mask_pairs(args.data, args.masks)
    if args.exclude_families:
        pairs = without_manipulation_families(pairs, manipulation_families_of(args.data, pairs), args.exclude_families)
    if args.valid_data:
        train_pairs, valid_pairs = pairs, find_image_mask_pairs(args.valid_data)
    else:
        train_index, valid_index = holdout_split(len(pairs), args.valid_fraction, args.seed)
        train_pairs, valid_pairs = [pairs[i] for i in train_index], [pairs[i] for i in valid_index]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    classes = parse_classes(args.classes)
    architecture = {"arch": args.arch, "encoder_name": args.encoder, "classes": max(1, len(classes)),
                    **({"noise_residuals": True} if args.noise_residuals else {})}
    card = default_segmenter_card((args.input_size, args.input_size)).replace(
        architecture=architecture,
        classes=classes,
        resize_mode=args.resize_mode or NATIVE_TILES,
        tile_overlap=args.tile_overlap,
        max_tiles=args.max_tiles,
        version=_version(args, f"{args.arch.lower()}-{args.encoder}"),
        trained=True,
        training_data={"source": str(args.data), "train_pairs": len(train_pairs), "valid_pairs": len(valid_pairs),
                       **fingerprint_samples(train_pairs),
                       **({"excluded_families": sorted(args.exclude_families)} if args.exclude_families else {})},
        reproduce=reproduce_command(args),
        code_version=code_version(),
        notes=f"Trained by `forgescan train segmenter` ({'cross-entropy + Dice over ' + str(len(classes)) + ' classes' if classes else 'BCE + Dice'}); "
              "temperature and thresholds fitted on the validation split.",
    )
    build_model(card)  # a wrong --arch / --encoder fails here, with the valid choices, not inside a worker
    folder = fit_with_ray_train(args, card, train_pairs, valid_pairs, output, "run")
    summary = write_segmenter_report(folder, output)
    model, trained_card = load_checkpoint(folder / "model.safetensors")
    save_checkpoint(model, trained_card, output / "segmenter.safetensors", half=not args.full_precision)
    summary["checkpoint"] = str(output / "segmenter.safetensors")
    return summary


if __name__ == "__main__":
    sys.exit(run_module("jobs.train"))
