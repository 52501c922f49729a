"""``taskgate adapters publish DIR --name NAME``: publish what ``taskgate tune`` wrote into an
adapter store, as the next version of NAME (atomic: complete or absent).

    taskgate adapters publish /work/adapter --name support-bot --adapter-store /mnt/shared/adapters
    taskgate adapters publish out/topics --name topics --model-store model-store   (-> .adapters/)

This is how a tuning run outside the gateway (a Kubernetes Job, a person) reaches serving: a
gateway reading the same store finds the new version on the next request that names the adapter
(``name`` reads the store's ``current.json`` per request; ``name@N`` its folder), with no restart.
Base model, method, metrics and what serving needs (labels, verbalizer, tasks) come from the
run's ``tuning.json``; ``--base-model`` names the serving model id when it differs from the
one the run recorded. Exit 0 prints the reference (``name@N``); a refusal exits 2 with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_REFUSED = 2
TUNING_FILE = "tuning.json"  # what run_tuning writes beside the weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="adapters_command", required=True)
    publish = actions.add_parser("publish", help="publish a tuned adapter folder as a new version")
    publish.add_argument("folder", type=Path, help="the folder `taskgate tune --output` wrote")
    publish.add_argument("--name", required=True, help="the adapter's name (requests use name or name@N)")
    where = publish.add_mutually_exclusive_group()
    where.add_argument("--adapter-store", type=Path, help="the adapter store folder")
    where.add_argument(
        "--model-store",
        type=Path,
        help="the gateway's model store: publish into its .adapters/ (env TASKGATE_MODEL_STORE)",
    )
    publish.add_argument("--base-model", help="the serving model id it tunes (default: tuning.json's)")
    publish.add_argument("--job-id", help="recorded with the version (e.g. the Kubernetes Job's name)")


def adapter_store_root(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Path:
    environ = dict(os.environ) if environ is None else environ
    if args.adapter_store is not None:
        return Path(args.adapter_store)
    store = args.model_store or environ.get("TASKGATE_MODEL_STORE")
    if not store:
        raise ValueError(
            "name the store: --adapter-store DIR or --model-store DIR (env TASKGATE_MODEL_STORE)"
        )
    return Path(store) / ".adapters"


def read_tuning(folder: Path) -> dict[str, Any]:
    path = folder / TUNING_FILE
    try:
        about = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{folder} holds no {TUNING_FILE}: publish the folder `taskgate tune` wrote"
        ) from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(about, dict) or not isinstance(about.get("method"), str):
        raise ValueError(f"{path} names no tuning method")
    return about


def run(args: argparse.Namespace) -> int:
    from adapters.jobs.manager import adapter_extra  # what serving reads, as the job manager keeps it
    from adapters.store import AdapterStore, AdapterStoreError

    folder: Path = args.folder
    try:
        root = adapter_store_root(args)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder")
        about = read_tuning(folder)
        base_model = args.base_model or about.get("base_model")
        if not isinstance(base_model, str) or not base_model:
            raise ValueError(f"{folder / TUNING_FILE} names no base model: give --base-model")
        raw_metrics = about.get("metrics") or {}
        metrics = {
            str(k): float(v)
            for k, v in raw_metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        version = AdapterStore(root).publish(
            args.name,
            folder,
            base_model=base_model,
            method=about["method"],
            job_id=args.job_id,
            metrics=metrics,
            extra=adapter_extra(folder),
        )
    except (ValueError, AdapterStoreError, OSError) as exc:
        print(f"taskgate adapters publish: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    print(f"published {version.reference} (base model {base_model}, {about['method']}) in {root}", flush=True)
    return 0
