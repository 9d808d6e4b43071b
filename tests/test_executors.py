"""Execution engines by configuration: the deployment file, the multiprocess and Dask executors running real
partitions, and the Kubernetes executor's config checked against dagster-k8s (no cluster here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from dagster import AssetKey, DagsterEventType, execute_job, instance_for_test, validate_run_config

from imaging_pipelines.config.paths import DEFAULT_CATALOG_DIR
from imaging_pipelines.dagster_layer.local_runs import QUIET_CONSOLE, run_sensor_once
from imaging_pipelines.dagster_layer.executors import (
    K8S_CONFIG_TAG,
    executor_for,
    executor_run_config,
    gpu_op_tags,
)
from imaging_pipelines.dagster_layer.reconstructable import reconstructable_job
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.config.deployment import (
    DEPLOYMENT_ENV,
    DeploymentError,
    default_max_concurrent,
    load_deployment,
)
from imaging_pipelines.core.storage import partition_store_path, storage_root
from imaging_pipelines.core.privacy import pseudonymise
from tests.pipeline_helpers import write_patient

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = [REPO / "deploy" / f"{kind}.yaml" for kind in ("multiprocess", "dask", "k8s")]
STAGES = ["ingested_scans", "preprocessed"]
SELECTION = [AssetKey(["test_ds", s]) for s in STAGES]


def write_deployment(folder: Path, text: str, name: str = "deployment.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# --- the deployment file ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_deployments_load(path):
    deployment = load_deployment(path)
    assert deployment.source == str(path)
    assert deployment.executor.kind == {"multiprocess.yaml": "multiprocess", "dask.yaml": "dask", "k8s.yaml": "k8s"}[path.name]
    definition, config = executor_run_config(deployment)  # also checked against the executor's config schema
    assert definition.name == deployment.executor.kind
    assert executor_for(deployment).name == deployment.executor.kind
    gpu_op_tags(deployment)


def test_deployment_selected_by_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(DEPLOYMENT_ENV, raising=False)
    default = load_deployment()
    assert default.executor.kind == "in_process" and default.storage.root is None and not gpu_op_tags(default)
    assert executor_run_config(default)[1] == {}
    path = write_deployment(tmp_path, """\
        executor: {kind: in_process}
        storage: {root: memory://stores, storage_options: {skip_instance_cache: true}}
    """)
    monkeypatch.setenv(DEPLOYMENT_ENV, str(path))
    deployment = load_deployment()
    assert deployment.executor.kind == "in_process" and deployment.source == str(path)
    assert deployment.storage.storage_options == {"skip_instance_cache": True}


@pytest.mark.parametrize("text, field, message", [
    ("executor: {kind: multiproces}", "executor.kind", "Input should be"),
    ("executor: {kind: dask, max_concurent: 3}", "executor.max_concurent", "Extra inputs are not permitted"),
    ("executors: {kind: dask}", "executors", "Extra inputs are not permitted"),
    ("storage: {root: s3://b, options: {}}", "storage.options", "Extra inputs are not permitted"),
    ("executor: {kind: multiprocess, max_concurrent: 0}", "executor.max_concurrent", "greater than or equal to 1"),
    ("executor: {kind: multiprocess, dask: {cluster: {local: {}}}}", "executor.dask", "only used with kind: dask"),
    ("executor: {kind: dask, start_method: spawn}", "executor.start_method", "only used with kind: multiprocess"),
    ("executor: {kind: multiprocess, preload_modules: [x]}", "executor.preload_modules", "start_method: forkserver"),
    ("executor: {kind: dask, dask: {cluster: {}}}", "executor.dask.cluster", "exactly one of"),
    ("executor: {kind: dask, dask: {cluster: {existing: {adress: x}}}}", "executor.dask.cluster.existing.adress",
     "Extra inputs are not permitted"),
    ("executor: {kind: k8s, k8s: {job_namespace: imaging, job_imag: x}}", "executor.k8s.job_imag",
     'unexpected config entry "job_imag"'),
    ("executor: {kind: k8s, k8s: {max_concurrent: many}}", "executor.k8s.max_concurrent", "Invalid scalar"),
    ("gpu_steps: {k8s: {container_confg: {}}}", "gpu_steps.k8s.container_confg", 'unexpected config entry'),
    ("gpu_steps: {k8s: {pod_spec_config: {node_selectr: {a: b}}}}", "gpu_steps.k8s.pod_spec_config",
     "Unexpected keys in model class V1PodSpec"),
    ("- executor", "-", "must be a mapping"),
    ("executor: [", "-", "not valid YAML"),
])
def test_invalid_deployments_are_refused_naming_file_and_field(tmp_path, text, field, message):
    path = write_deployment(tmp_path, text + "\n")
    with pytest.raises(DeploymentError) as caught:
        build_definitions(DEFAULT_CATALOG_DIR, deployment=path)  # what loading the code location does
    assert any(f == str(path) and fld == field and message in msg for f, fld, msg in caught.value.errors), caught.value
    assert f"{path}: {field}: " in str(caught.value)


def test_missing_deployment_file_is_named(tmp_path):
    with pytest.raises(DeploymentError, match=f"{tmp_path / 'nope.yaml'}: -: cannot read"):
        load_deployment(tmp_path / "nope.yaml")


# --- definitions without a deployment ---------------------------------------------------------------------


def test_definitions_without_deployment_run_steps_in_process(tmp_path, monkeypatch):
    monkeypatch.delenv(DEPLOYMENT_ENV, raising=False)
    defs = build_definitions(DEFAULT_CATALOG_DIR)
    job = defs.resolve_job_def("demo_cohort__patient_job")
    assert job.executor_def.name == "in_process"
    # the multiprocess executor (no longer the default) still defaults to default_max_concurrent() steps
    multiprocess = build_definitions(DEFAULT_CATALOG_DIR, deployment=str(write_deployment(tmp_path, "executor: {kind: multiprocess}\n")))
    (resolved,) = validate_run_config(multiprocess.resolve_job_def("demo_cohort__patient_job"))["execution"].values()
    assert resolved["max_concurrent"] == default_max_concurrent()
    for assets_def in defs.resolve_asset_graph().assets_defs:
        if assets_def.is_executable:
            assert K8S_CONFIG_TAG not in assets_def.op.tags


def test_code_location_loads_with_deployment_from_environment():
    """`import imaging_pipelines.definitions` as the code server does, with a deployment file selected."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_PIPELINES_")}
    env[DEPLOYMENT_ENV] = str(REPO / "deploy" / "k8s.yaml")
    env["IMAGING_PIPELINES_PSEUDONYM_KEY"] = "a-production-like-secret-for-this-test"  # no dev-key opt-in here
    code = ("from imaging_pipelines.definitions import defs; "
            "j = defs.resolve_job_def('demo_cohort__patient_job'); print(j.executor_def.name)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "k8s"


# --- multiprocess: a real partition through step subprocesses ---------------------------------------------


def step_pids(instance, run_id: str) -> dict[str, int]:
    return {r.dagster_event.step_key: r.dagster_event.pid for r in instance.all_logs(run_id)
            if r.dagster_event and r.dagster_event.event_type == DagsterEventType.STEP_START}


def assert_materialised(instance, key: str) -> None:
    for stage in STAGES:
        assert (partition_store_path(storage_root(), "test_ds", stage, key) / "zarr.json").exists()
        records = instance.fetch_materializations(AssetKey(["test_ds", stage]), limit=10).records
        mine = [r for r in records if r.partition_key == key]
        assert len(mine) == 1, f"{stage} {key}: {len(mine)} materialisation(s)"


def test_multiprocess_executor_runs_a_partition(workspace, tmp_path, monkeypatch):
    write_patient(workspace / "inbox" / "case_a", "PID-A")
    deployment = write_deployment(tmp_path, "executor: {kind: multiprocess, max_concurrent: 2, start_method: spawn}\n")
    monkeypatch.setenv(DEPLOYMENT_ENV, str(deployment))  # step processes inherit the environment
    defs = build_definitions()
    job = defs.resolve_job_def("test_ds__patient_job")
    assert job.executor_def.name == "multiprocess"
    (resolved,) = validate_run_config(job)["execution"].values()
    assert resolved["max_concurrent"] == 2 and "spawn" in resolved["start_method"]
    (tmp_path / "dagster_home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        (request,) = run_sensor_once(defs, "test_ds", instance).run_requests
        key = request.partition_key
        recon = reconstructable_job("test_ds__patient_job", catalog=os.environ["IMAGING_PIPELINES_CATALOG"],
                                    deployment=str(deployment))
        result = execute_job(recon, instance, run_config=QUIET_CONSOLE, tags={"dagster/partition": key},
                             asset_selection=SELECTION)
        assert result.success
        pids = step_pids(instance, result.run_id)
        assert set(pids) == {f"test_ds__{s}" for s in STAGES}
        assert os.getpid() not in pids.values()  # each step ran in its own subprocess
        assert len(set(pids.values())) == 2
        engine = [r.user_message for r in instance.all_logs(result.run_id) if r.dagster_event
                  and r.dagster_event.event_type == DagsterEventType.ENGINE_EVENT]
        assert any("multiprocess executor" in m for m in engine)
        assert_materialised(instance, key)


# --- Dask: two partitions at once on a LocalCluster started here ------------------------------------------


@pytest.fixture
def dask_cluster(workspace):
    """Two worker processes on 127.0.0.1, started after `workspace` has set the IMAGING_PIPELINES_* variables
    (the workers inherit them)."""
    from distributed import Client, LocalCluster

    from imaging_pipelines.core.child_signals import workers_terminable

    with workers_terminable():  # an earlier in-process run may have left SIGTERM ignored (core.child_signals)
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=40)
    client = Client(cluster)
    try:
        yield SimpleNamespace(client=client, address=cluster.scheduler_address)
    finally:
        client.close()
        cluster.close(timeout=30)


def test_dask_executor_runs_partitions_on_the_cluster(workspace, tmp_path, dask_cluster):
    """Two good partitions, then a bad one: its ingestion fails and its preprocessing is reported
    skipped (not run on a missing store)."""
    client, address = dask_cluster.client, dask_cluster.address
    write_patient(workspace / "inbox" / "case_a", "PID-A")
    write_patient(workspace / "inbox" / "case_b", "PID-B", seed=1)
    bad = write_patient(workspace / "inbox" / "case_bad", "PID-BAD", seed=2)
    data = bad[2].read_bytes()
    bad[2].write_bytes(data[: len(data) // 2])  # truncated DICOM: ingestion fails that partition
    deployment = write_deployment(tmp_path, f"""\
        executor:
          kind: dask
          dask: {{cluster: {{existing: {{address: "{address}"}}}}}}
    """)
    defs = build_definitions(deployment=deployment)
    assert defs.resolve_job_def("test_ds__patient_job").executor_def.name == "dask"
    worker_pids = set(client.run(os.getpid).values())
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    (tmp_path / "dagster_home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        keys = sorted(r.partition_key for r in run_sensor_once(defs, "test_ds", instance).run_requests)
        bad_key = pseudonymise("PID-BAD", "dicom-patient-id")
        keys.remove(bad_key)
        assert len(keys) == 2
        recon = reconstructable_job("test_ds__patient_job", catalog=os.environ["IMAGING_PIPELINES_CATALOG"],
                                    deployment=str(deployment))

        def run(key):
            return execute_job(recon, instance, run_config=QUIET_CONSOLE, tags={"dagster/partition": key},
                               asset_selection=SELECTION)

        # One after the other: Dagster's execute_job is not thread-safe (two at once in one process deadlock
        # on the logging lock); runs launched by the UI each have their own process. That two runs of the
        # same job cannot share Dask task keys is checked on the keys the scheduler saw, below.
        results = {key: run(key) for key in keys}
        for key, result in results.items():
            assert result.success, key
            assert instance.get_run_by_id(result.run_id).tags["dagster/partition"] == key
            pids = step_pids(instance, result.run_id)
            assert set(pids) == {f"test_ds__{s}" for s in STAGES}
            assert set(pids.values()) <= worker_pids  # the steps ran in the Dask workers
            assert_materialised(instance, key)
        failed = run(bad_key)
        assert not failed.success
        events = {(e.event_type, e.step_key) for e in failed.all_events}
        assert (DagsterEventType.STEP_FAILURE, "test_ds__ingested_scans") in events
        assert (DagsterEventType.STEP_SKIPPED, "test_ds__preprocessed") in events
        assert (DagsterEventType.STEP_START, "test_ds__preprocessed") not in events
        seen = client.run_on_scheduler(lambda dask_scheduler: {str(t[0]) for t in dask_scheduler.transition_log})
        for result in results.values():
            for stage in STAGES:
                assert f"test_ds__patient_job.test_ds__{stage}.{result.run_id}" in seen


# --- Kubernetes: configuration checked by dagster-k8s, no cluster -------------------------------------------


GPU_ASSETS = {"demo_cohort/segmentation_model", "demo_cohort/segmentation", "demo_cohort/nnunet_dataset",
              "demo_scenes/land_cover_model", "demo_scenes/tile_segmentation"}


@pytest.fixture(scope="module")
def k8s_defs():
    return build_definitions(DEFAULT_CATALOG_DIR, deployment=REPO / "deploy" / "k8s.yaml")


def test_k8s_run_config_is_accepted_by_dagster_k8s(k8s_defs):
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor

    deployment = load_deployment(REPO / "deploy" / "k8s.yaml")
    definition, config = executor_run_config(deployment)
    assert definition is k8s_job_executor
    assert validate_config(k8s_job_executor.config_schema.config_type, config).success
    assert config["job_namespace"] == "imaging" and config["max_concurrent"] == 8
    job = k8s_defs.resolve_job_def("demo_cohort__patient_job")
    assert job.executor_def.name == "k8s"
    (resolved,) = validate_run_config(job)["execution"].values()  # the run config every run of the job gets
    assert resolved["job_image"] == config["job_image"] and resolved["env_config_maps"] == ["imaging-pipelines-env"]
    # a wrong key: refused by dagster-k8s's schema, and by the definitions with file and field
    bad = validate_config(k8s_job_executor.config_schema.config_type, {**config, "job_imag": "x"})
    assert not bad.success and 'unexpected config entry "job_imag"' in bad.errors[0].message


def test_gpu_steps_carry_the_k8s_tag(k8s_defs):
    from dagster_k8s.job import get_user_defined_k8s_config

    tagged = set()
    for assets_def in k8s_defs.resolve_asset_graph().assets_defs:
        if not assets_def.is_executable:
            continue
        name = "/".join(next(iter(assets_def.keys)).path)
        if assets_def.op.pool == "gpu":
            tagged.add(name)
            user_config = get_user_defined_k8s_config(assets_def.op.tags)  # dagster-k8s's own parsing
            assert user_config.container_config["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert user_config.pod_spec_config["node_selector"] == {"accelerator": "nvidia"}
        else:
            assert K8S_CONFIG_TAG not in assets_def.op.tags, name
    assert GPU_ASSETS <= tagged


def test_k8s_step_jobs_render_with_gpu_requests(k8s_defs, monkeypatch):
    """The Kubernetes Job dagster-k8s would create for a GPU step and a CPU step, built with its own code
    (executor from the resolved run config, step tags from the execution plan), with no cluster."""
    import kubernetes
    from dagster import DagsterInstance
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.executor.init import InitExecutorContext
    from dagster_k8s import k8s_job_executor
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config

    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda *a, **k: None)  # no cluster here
    job = k8s_defs.resolve_job_def("demo_cohort__patient_job")
    (resolved,) = validate_run_config(job)["execution"].values()
    with DagsterInstance.ephemeral() as instance:
        executor = k8s_job_executor.executor_creation_fn(
            InitExecutorContext(job=InMemoryJob(job), executor_def=k8s_job_executor, executor_config=resolved,
                                instance=instance))
    handler = executor._step_handler
    steps = {s.key: s for s in create_execution_plan(job, run_config={}).steps}
    launcher = SimpleNamespace(job_image=None, dagster_home="/opt/dagster/dagster_home",
                               instance_config_map="dagster-instance", postgres_password_secret=None)

    def pod_spec(step_key: str) -> dict:
        context = handler._executor_container_context.merge(
            K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(steps[step_key].tags)))
        assert context.namespace == "imaging"
        k8s_job = construct_dagster_k8s_job(context.get_k8s_job_config(handler._executor_image, launcher),
                                            ["dagster", "api", "execute_step"], f"dagster-step-{step_key[-20:]}",
                                            user_defined_k8s_config=context.run_k8s_config)
        return kubernetes.client.ApiClient().sanitize_for_serialization(k8s_job)["spec"]["template"]["spec"]

    gpu = pod_spec("demo_cohort__segmentation")
    (container,) = gpu["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"] == "registry.example.org/imaging-pipelines:latest"
    assert gpu["nodeSelector"] == {"accelerator": "nvidia"}
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"configMapRef": {"name": "imaging-pipelines-env"}} in container["envFrom"]
    cpu = pod_spec("demo_cohort__preprocessed")
    assert "nodeSelector" not in cpu and "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]
    assert cpu["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "4Gi"}  # step_k8s_config


def test_dask_resources_tag_reaches_gpu_steps(tmp_path):
    from dagster_dask.executor import get_dask_resource_requirements

    path = write_deployment(tmp_path, """\
        executor: {kind: dask, dask: {cluster: {existing: {address: "tcp://scheduler:8786"}}}}
        gpu_steps: {dask_resources: {GPU: 1}}
    """)
    defs = build_definitions(DEFAULT_CATALOG_DIR, deployment=path)
    segmentation = defs.resolve_assets_def(AssetKey(["demo_cohort", "segmentation"]))
    assert get_dask_resource_requirements(segmentation.op.tags) == {"GPU": 1.0}
    preprocessed = defs.resolve_assets_def(AssetKey(["demo_cohort", "preprocessed"]))
    assert get_dask_resource_requirements(preprocessed.op.tags) == {}
    assert json.loads(segmentation.op.tags["dagster-dask/resource_requirements"]) == {"GPU": 1.0}
