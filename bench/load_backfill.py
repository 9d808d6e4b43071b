"""Load test: register many synthetic partitions and backfill them through real Dagster runs.

What it does, in a scratch folder (``--workdir``, default a temporary one):

1. writes ``--partitions`` synthetic partitions: small MR volumes (NIfTI, 16 x 48 x 48 voxels, one subject
   per partition) and tiles of one synthetic Landsat-like scene (64 px tiles), ``--tile-share`` of them tiles;
2. registers them: the datasets' inbox sensors add the dynamic partitions to a SQLite Dagster instance;
3. backfills every partition, one Dagster run per partition (what the project's backfill policy asks for):
   ``--run-workers`` long-lived processes each open the instance once and launch runs one after the other
   with ``dagster.execute_job``. ``--executor default`` (the default) sets no deployment file, so the runs
   use the project's default deployment (every step in the run's process); ``multiprocess`` (forkserver
   start method, the definitions preloaded), ``dask`` (a LocalCluster of ``--dask-workers`` processes
   started here) and ``in_process`` write the deployment file a user would. The instance is the project's
   local SQLite one (``dev_instance_yaml``: one consolidated event-log database). Medical runs: ingestion
   then preprocessing (recipe demo_mr: N4, reorientation, resampling, z-score, denoising). Tile runs: tile
   ingestion then analysis-ready tile;
4. checks that every partition has a materialisation of every asset (else it is *lost*) and prints
   partitions per minute, failed and lost counts, peak memory (RSS of this process and all its children,
   sampled every 0.25 s), and how a partition's wall time splits into imaging code (the ``runtime_s`` the
   stages report), the rest of its steps (Dagster step set-up, metadata, previews, checks) and the run's
   orchestration (run creation, step process start, event log writes).

    python bench/load_backfill.py --partitions 500                      # default deployment (in_process)
    python bench/load_backfill.py --partitions 2000 --max-minutes 15
    python bench/load_backfill.py --partitions 100 --executor multiprocess
    python bench/load_backfill.py --partitions 50 --executor dask
    python bench/load_backfill.py --partitions 20 --json out.json       # a quick look

Bounded: ``--max-minutes`` stops launching new runs after that long (the partitions not run are reported).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MEDICAL, TILES = "load_volumes", "load_tiles"
TILE_PX = 64
ASSETS = {MEDICAL: ["ingested_scans", "preprocessed"], TILES: ["scene_tiles", "analysis_ready_tiles"]}


# --- synthetic data ---------------------------------------------------------------------------------------
def write_volumes(inbox: Path, n: int, seed: int = 0) -> None:
    """``n`` subjects, each one NIfTI T1 (16 x 48 x 48 voxels of 1 x 1 x 3 mm): a bright ellipsoid with a
    smooth bias and noise, so N4 and the foreground mask have something to do."""
    import nibabel as nib

    z, y, x = np.mgrid[0:16, 0:48, 0:48].astype(np.float32)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        centre = np.array([8, 24, 24]) + rng.normal(0, 1.5, 3)
        inside = ((z - centre[0]) / 6) ** 2 + ((y - centre[1]) / 18) ** 2 + ((x - centre[2]) / 16) ** 2 < 1
        bias = 1 + 0.3 * (x / 48 - 0.5)
        data = (inside * 800 * bias + rng.normal(100, 25, inside.shape)).clip(0).astype(np.int16)
        folder = inbox / "nifti" / f"sub-{i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data.transpose(2, 1, 0), np.diag([1.0, 1.0, 3.0, 1.0])), folder / f"sub-{i:04d}_T1w.nii.gz")


def write_scene(inbox: Path, n_tiles: int) -> None:
    """One single-date synthetic Landsat-like scene cut into about ``n_tiles`` tiles of 64 px."""
    from imaging_pipelines.tools.demo.scenes import write_demo_scenes

    side = max(1, math.ceil(math.sqrt(n_tiles)))
    write_demo_scenes(inbox, n_scenes=1, size=side * TILE_PX, n_dates=1, seed=0)


# every file is complete before registration starts, so the inbox sensors need not wait for it to settle
QUIESCENCE = "inbox_checks:\n  quiescent_seconds: 0\n"


def write_catalog(folder: Path, with_tiles: bool) -> Path:
    catalog = folder / "catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    (catalog / f"{MEDICAL}.yaml").write_text(
        f"id: {MEDICAL}\ndomain: medical\ninbox: ../volumes\nformats: [nifti]\npartitioning: patient\n"
        "file_modality: MR\npreprocessing_recipe: demo_mr\n" + QUIESCENCE)
    if with_tiles:
        demo = (REPO / "data_catalog" / "demo_scenes.yaml").read_text()
        rs = demo[demo.index("remote_sensing:"):demo.index("  indices:")]
        rs = rs.replace("size: 128", f"size: {TILE_PX}").replace("overlap: 16", "overlap: 8")
        (catalog / f"{TILES}.yaml").write_text(
            f"id: {TILES}\ndomain: remote_sensing\ninbox: ../scenes\nformats: [geotiff]\npartitioning: tile\n"
            + QUIESCENCE + rs + "  indices: [ndvi, ndwi, ndbi]\n  coregister: false\n  composite: median\n"
            "  segmentation:\n    method: none\n")
    return catalog


def write_deployment(folder: Path, executor: str, address: str | None) -> Path | None:
    """The deployment file for ``executor``; None for ``default`` (no file: the project's default deployment)."""
    if executor == "default":
        return None
    path = folder / f"deployment-{executor}.yaml"
    if executor == "in_process":
        path.write_text("executor:\n  kind: in_process\n")
    elif executor == "dask":
        path.write_text(f"executor:\n  kind: dask\n  dask:\n    cluster:\n      existing: {{address: \"{address}\"}}\n")
    else:
        path.write_text("executor:\n  kind: multiprocess\n  max_concurrent: 1\n  start_method: forkserver\n")
    return path


# --- memory -----------------------------------------------------------------------------------------------
class PeakMemory(threading.Thread):
    """Peak of the summed RSS (bytes) of this process and every descendant, sampled every 0.25 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._halt.wait(0.25):
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


# --- runs -------------------------------------------------------------------------------------------------
_JOBS: dict = {}
_INSTANCE: list = []  # the run worker's one DagsterInstance


def _worker_init() -> None:
    """Once per run worker (a long-lived process): import the project, build the reconstructable
    per-partition jobs and open the Dagster instance that all of this worker's runs record in."""
    from dagster import DagsterInstance

    from imaging_pipelines.config.catalog import load_catalog
    from imaging_pipelines.dagster_layer.reconstructable import reconstructable_job

    for dataset in load_catalog():
        job = "patient_job" if dataset.domain == "medical" else "tile_job"
        _JOBS[dataset.id] = reconstructable_job(f"{dataset.id}__{job}")
    if not _INSTANCE:
        from imaging_pipelines.dagster_layer.local_runs import hold_sqlite_databases

        _INSTANCE.append(DagsterInstance.get())
        hold_sqlite_databases(_INSTANCE[0])  # as the headless run pool's workers do


def run_partition(dataset: str, partition: str) -> dict:
    """One Dagster run of the dataset's per-partition job for ``partition`` (in a run worker process)."""
    from dagster import AssetKey, execute_job

    from imaging_pipelines.dagster_layer.local_runs import QUIET_CONSOLE

    if dataset not in _JOBS or not _INSTANCE:
        _worker_init()
    start = time.perf_counter()
    with execute_job(_JOBS[dataset], _INSTANCE[0], run_config=QUIET_CONSOLE, raise_on_error=False,
                     tags={"dagster/partition": partition},
                     asset_selection=[AssetKey([dataset, a]) for a in ASSETS[dataset]]) as result:
        return {"dataset": dataset, "partition": partition, "run_id": result.run_id, "success": result.success,
                "wall_s": time.perf_counter() - start}


def step_and_imaging_seconds(instance, run_id: str) -> tuple[float, float]:
    """(seconds inside the run's steps, seconds the stages report as their own ``runtime_s``)."""
    from dagster import DagsterEventType

    steps, imaging = 0.0, 0.0
    starts = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and event.step_key in starts:
            steps += record.timestamp - starts[event.step_key]
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            value = event.step_materialization_data.materialization.metadata.get("runtime_s")
            imaging += float(getattr(value, "value", 0.0) or 0.0)
    return steps, imaging


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have been waited for."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def materialised(instance, dataset: str, asset: str) -> set[str]:
    from dagster import AssetKey

    return set(instance.get_materialized_partitions(AssetKey([dataset, asset])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=500, help="partitions to register and backfill (default 500)")
    parser.add_argument("--tile-share", type=float, default=0.2, help="share of the partitions that are scene tiles (default 0.2)")
    parser.add_argument("--executor", choices=["default", "multiprocess", "dask", "in_process"], default="default",
                        help="default (the default): no deployment file, the project's default deployment")
    parser.add_argument("--run-workers", type=int, default=2, help="runs in flight at once (default 2)")
    parser.add_argument("--dask-workers", type=int, default=2, help="dask: LocalCluster worker processes (default 2)")
    parser.add_argument("--max-minutes", type=float, default=60.0, help="stop launching runs after this long (default 60)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed at the end)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    scratch = None if args.workdir else tempfile.TemporaryDirectory(prefix="imaging-load-")
    work = (args.workdir or Path(scratch.name)).absolute()
    work.mkdir(parents=True, exist_ok=True)
    n_tiles = round(args.partitions * args.tile_share)
    n_volumes = args.partitions - n_tiles
    print(f"writing {n_volumes} volumes and a scene of ~{n_tiles} tiles into {work}", flush=True)
    write_volumes(work / "volumes", n_volumes)
    if n_tiles:
        write_scene(work / "scenes", n_tiles)
    home = work / "dagster_home"
    home.mkdir(exist_ok=True)
    from imaging_pipelines.dagster_layer.local_runs import dev_instance_yaml

    (home / "dagster.yaml").write_text(dev_instance_yaml(home))
    os.environ.setdefault("IMAGING_PIPELINES_PSEUDONYM_KEY", os.urandom(16).hex())  # synthetic data: any key
    os.environ.update({
        "DAGSTER_HOME": str(home), "IMAGING_PIPELINES_DATA_ROOTS": str(work),
        "IMAGING_PIPELINES_CATALOG": str(write_catalog(work, bool(n_tiles))),
        "IMAGING_PIPELINES_STORAGE_ROOT": str(work / "storage"),
    })

    cluster = None
    if args.executor == "dask":
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=args.dask_workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
    deployment = write_deployment(work, args.executor, cluster and cluster.scheduler_address)
    if deployment is None:
        os.environ.pop("IMAGING_PIPELINES_DEPLOYMENT", None)
    else:
        os.environ["IMAGING_PIPELINES_DEPLOYMENT"] = str(deployment)

    from dagster import DagsterInstance

    from imaging_pipelines.dagster_layer.local_runs import run_sensor_once
    from imaging_pipelines.dagster_layer.factory import build_definitions

    os.environ.setdefault("IMAGING_PIPELINES_ALLOW_DEVELOPMENT_KEY", "1")  # synthetic partitions: the public key is fine

    memory = PeakMemory()
    memory.start()
    t0 = time.perf_counter()
    defs = build_definitions()
    todo = []
    with DagsterInstance.get() as instance:
        for dataset in [MEDICAL] + ([TILES] if n_tiles else []):
            todo += [(dataset, r.partition_key) for r in run_sensor_once(defs, dataset, instance).run_requests]
    register_s = time.perf_counter() - t0
    todo = todo[: args.partitions]
    if not todo:
        print(f"no partition was registered from {work} (see the sensor messages above)", file=sys.stderr)
        return 1
    print(f"registered {len(todo)} partitions in {register_s:.1f} s; backfilling with the {args.executor} executor, "
          f"{args.run_workers} runs at a time", flush=True)

    load_before, cpu_before = os.getloadavg(), cpu_seconds()
    results, deadline = [], time.perf_counter() + args.max_minutes * 60
    t1 = time.perf_counter()
    with ProcessPoolExecutor(args.run_workers, initializer=_worker_init) as pool:
        pending = {pool.submit(run_partition, d, p): (d, p) for d, p in todo}
        for n, future in enumerate(as_completed(pending), 1):
            if future.cancelled():  # not started before --max-minutes
                continue
            try:
                results.append(future.result())
            except Exception as exc:  # noqa: BLE001 - a run worker that died is a failed partition
                d, p = pending[future]
                results.append({"dataset": d, "partition": p, "run_id": None, "success": False, "error": repr(exc)})
            done_runs = len(results)  # runs cancelled by --max-minutes are not counted
            if n % 25 == 0 or n == len(todo):
                rate = done_runs / (time.perf_counter() - t1) * 60
                print(f"  {done_runs}/{len(todo)} runs done ({rate:.1f} partitions/min)", flush=True)
            if time.perf_counter() > deadline:
                for f in pending:
                    f.cancel()
    backfill_s = time.perf_counter() - t1
    backfill_cpu_s = cpu_seconds() - cpu_before  # the run workers have exited (joined): their CPU is counted
    peak = memory.stop()
    if cluster is not None:
        cluster.close()

    with DagsterInstance.get() as instance:
        done = {d: {a: materialised(instance, d, a) for a in ASSETS[d]} for d in {d for d, _ in todo}}
        timing = [(r, *step_and_imaging_seconds(instance, r["run_id"])) for r in results if r.get("run_id")]
    ran = {(r["dataset"], r["partition"]) for r in results}
    failed = [r for r in results if not r["success"]]
    lost = [(d, p) for d, p in todo if (d, p) in ran and not all(p in done[d][a] for a in ASSETS[d])
            and not any(f["partition"] == p for f in failed)]
    per_partition = {
        "wall_s": statistics.mean(r["wall_s"] for r, _, _ in timing),
        "steps_s": statistics.mean(s for _, s, _ in timing),
        "imaging_s": statistics.mean(i for _, _, i in timing),
    }
    figures = {
        "executor": args.executor, "partitions": len(todo), "volumes": sum(d == MEDICAL for d, _ in todo),
        "tiles": sum(d == TILES for d, _ in todo), "run_workers": args.run_workers, "ran": len(ran),
        "not_run_time_limit": len(todo) - len(ran), "failed": len(failed), "lost": len(lost),
        "register_s": round(register_s, 1), "backfill_s": round(backfill_s, 1),
        "partitions_per_min": round(len(ran) / backfill_s * 60, 1), "peak_rss_mib": round(peak / 2**20),
        "per_partition_s": {k: round(v, 3) for k, v in per_partition.items()},
        "orchestration_share": round(1 - per_partition["imaging_s"] / per_partition["wall_s"], 3),
        "cores": os.cpu_count(),
        # CPU seconds (user + system, this process and the run workers) per partition run, and the rate the
        # cores would give if they did nothing else: less sensitive to other load than the wall-clock rate
        "cpu_s_per_partition": round(backfill_cpu_s / max(1, len(ran)), 3),
        "cpu_bound_partitions_per_min": round((os.cpu_count() or 1) * 60 * len(ran) / max(backfill_cpu_s, 1e-9), 1),
        # 1-minute load average when the backfill started and ended (the machine may be shared)
        "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(figures, indent=2))
    pp = per_partition
    print(f"\n{figures['ran']} of {len(todo)} partitions backfilled ({args.executor}) in {backfill_s / 60:.1f} min: "
          f"{figures['partitions_per_min']} partitions/min, {len(failed)} failed, {len(lost)} lost, "
          f"peak memory {figures['peak_rss_mib']} MiB")
    print(f"per partition (mean over runs): {pp['wall_s']:.2f} s wall = {pp['imaging_s']:.2f} s imaging code + "
          f"{pp['steps_s'] - pp['imaging_s']:.2f} s rest of the steps + {pp['wall_s'] - pp['steps_s']:.2f} s run orchestration")
    for f in failed[:5]:
        print(f"failed: {f['dataset']} {f['partition']} {f.get('error', '')}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if scratch is not None:
        scratch.cleanup()
    return 1 if failed or lost else 0


if __name__ == "__main__":
    sys.exit(main())
