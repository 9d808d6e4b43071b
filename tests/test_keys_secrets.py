"""Keys and secrets: no pseudonym key means no definitions (outside the demo), the development key shows in
metadata, credentials never reach run snapshots or the webserver, and the backfill client speaks HTTPS with a
bearer token."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from dagster import DagsterInstance

from imaging_pipelines.config.deployment import DeploymentError, parse_deployment
from imaging_pipelines.core.secrets import SecretReferenceError, resolve_env_refs
from imaging_pipelines.core.privacy import (
    ALLOW_DEVELOPMENT_KEY_ENV,
    DEVELOPMENT_KEY_STATUS,
    PSEUDONYM_KEY_ENV,
    PseudonymKeyError,
    key_status,
    pseudonymise,
)
from imaging_pipelines.dagster_layer.backfill_client import BackfillError, DagsterGraphQL, graphql_url
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.dagster_layer.resources import ImagingStorage
from tests.dagster_server import free_port, persistent_dagster_home, start_server, stop_server
from tests.test_ui_server import graphql
from tests.pipeline_helpers import materialization_metadata, run_pipeline, write_patient

SENTINEL_KEY = "AKIAPLANTEDSENTINEL7"
SENTINEL_SECRET = "planted-secret-sentinel-0f3c9d"


def test_definitions_refuse_to_load_without_a_pseudonym_key(workspace, monkeypatch):
    monkeypatch.delenv(ALLOW_DEVELOPMENT_KEY_ENV, raising=False)
    monkeypatch.delenv(PSEUDONYM_KEY_ENV, raising=False)
    with pytest.raises(PseudonymKeyError, match=f"{PSEUDONYM_KEY_ENV} is not set.*{ALLOW_DEVELOPMENT_KEY_ENV}=1"):
        build_definitions()
    with pytest.raises(PseudonymKeyError):
        pseudonymise("PID-1")  # nothing can make a pseudonym under no key either
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "   ")
    with pytest.raises(PseudonymKeyError, match="is empty"):
        build_definitions()
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "short")
    with pytest.raises(PseudonymKeyError, match="too short"):
        build_definitions()
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "a-long-random-secret-for-this-test")
    assert build_definitions() is not None and key_status().startswith("secret")
    development = pseudonymise("PID-1")
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "another-long-random-secret-value")
    assert pseudonymise("PID-1") != development  # the key really keys the hash


def test_deployment_setting_opts_into_the_development_key(workspace, tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_DEVELOPMENT_KEY_ENV, raising=False)
    monkeypatch.delenv(PSEUDONYM_KEY_ENV, raising=False)
    file = tmp_path / "deployment.yaml"
    file.write_text("privacy: {allow_development_key: true}\n")
    assert build_definitions(deployment=file) is not None
    assert key_status() == DEVELOPMENT_KEY_STATUS


def test_development_key_shows_in_every_materialisation(workspace, tmp_path, monkeypatch):
    monkeypatch.delenv(PSEUDONYM_KEY_ENV, raising=False)  # the suite's opt-in (conftest) is in force
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    write_patient(workspace / "inbox" / "case_a", "PID-A")
    with DagsterInstance.ephemeral() as instance:
        _, runs = run_pipeline(instance)
        (key,) = runs
        assert runs[key].success
        from dagster import DagsterEventType, EventRecordsFilter

        records = instance.get_event_records(EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION))
        assert len(records) >= 2  # ingestion and the stages after it
        for record in records:
            assert record.asset_materialization.metadata["pseudonym_key"].value == DEVELOPMENT_KEY_STATUS
        assert materialization_metadata(instance, "test_ds", key)["pseudonym_key"].value == DEVELOPMENT_KEY_STATUS


@pytest.mark.parametrize("options, field", [
    ({"secret": SENTINEL_SECRET}, "secret"),
    ({"key": SENTINEL_KEY, "endpoint_url": "http://minio:9000"}, "key"),
    ({"client_kwargs": {"aws_secret_access_key": SENTINEL_SECRET}}, "client_kwargs.aws_secret_access_key"),
    ({"token": SENTINEL_SECRET}, "token"),
])
def test_deployment_refuses_plain_credentials(options, field):
    with pytest.raises(DeploymentError) as err:
        parse_deployment({"storage": {"root": "s3://b/p", "storage_options": options}}, "deploy.yaml")
    message = str(err.value)
    assert "deploy.yaml: storage.storage_options" in message and field in message and "{env: VARIABLE}" in message
    assert SENTINEL_SECRET not in message and SENTINEL_KEY not in message
    with pytest.raises(ValueError, match="plain values"):
        ImagingStorage(root="s3://b/p", storage_options=options).root_path()


def test_env_references_resolve_only_in_the_process(monkeypatch):
    options = {"endpoint_url": "http://minio:9000", "key": {"env": "TEST_KEY_VAR"},
               "client_kwargs": {"aws_secret_access_key": {"env": "TEST_SECRET_VAR"}}}
    deployment = parse_deployment({"storage": {"storage_options": options}}, "deploy.yaml")
    assert deployment.storage.storage_options == options  # the reference, not the value, is configuration
    with pytest.raises(SecretReferenceError, match="TEST_KEY_VAR"):
        resolve_env_refs(options)
    monkeypatch.setenv("TEST_KEY_VAR", SENTINEL_KEY)
    monkeypatch.setenv("TEST_SECRET_VAR", SENTINEL_SECRET)
    assert resolve_env_refs(options) == {"endpoint_url": "http://minio:9000", "key": SENTINEL_KEY,
                                         "client_kwargs": {"aws_secret_access_key": SENTINEL_SECRET}}


def test_no_deployment_secret_in_instance_storage_or_graphql(workspace, tmp_path, monkeypatch):
    """A deployment whose credentials are env references: a run is made and a real webserver serves the
    instance; neither the sqlite files nor the GraphQL answers (resources, run config, snapshots) hold them."""
    home = persistent_dagster_home(tmp_path, monkeypatch)
    monkeypatch.setenv("TEST_KEY_VAR", SENTINEL_KEY)
    monkeypatch.setenv("TEST_SECRET_VAR", SENTINEL_SECRET)
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text(f"storage:\n  root: {workspace / 'storage'}\n"
                          "  storage_options: {key: {env: TEST_KEY_VAR}, secret: {env: TEST_SECRET_VAR}}\n")
    monkeypatch.setenv("IMAGING_PIPELINES_DEPLOYMENT", str(deployment))
    write_patient(workspace / "inbox" / "case_a", "PID-A")
    with DagsterInstance.get() as instance:
        _, runs = run_pipeline(instance)
    assert all(r.success for r in runs.values())

    port = free_port()
    proc = start_server("webserver", port, tmp_path / "webserver.log")
    try:
        answers = [
            json.dumps(graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError {"
                           " ... on RepositoryLocation { repositories { allTopLevelResourceDetails { name"
                           " configFields { name } configuredValues { key value type } } } } } } } } }")),
            json.dumps(graphql(port, "{ runsOrError { ... on Runs { results { runId runConfigYaml tags { key value }"
                           " executionPlan { steps { key } } } } } }")),
        ]
    finally:
        stop_server(proc)
    assert "TEST_SECRET_VAR" in answers[0] and "TEST_KEY_VAR" in answers[0]  # the storage config is served...
    assert '"runId"' in answers[1]
    for answer in answers:  # ...but only the references, never the values
        assert SENTINEL_SECRET not in answer and SENTINEL_KEY not in answer
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    for path in files:
        data = path.read_bytes()
        assert SENTINEL_SECRET.encode() not in data and SENTINEL_KEY.encode() not in data, path


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _Recorder.seen.append({"path": self.path, "authorization": self.headers.get("authorization")})
        ok = self.headers.get("authorization") == "Bearer right-token"
        body = json.dumps({"data": {"assetNodes": []}} if ok else {"error": "unauthorised"}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_backfill_client_sends_the_bearer_token_and_refuses_it_over_plain_http(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/dagster"
    try:
        monkeypatch.setenv("IMAGING_PIPELINES_DAGSTER_TOKEN", "right-token")
        assert DagsterGraphQL(url=base)("{ assetNodes { isPartitioned } }") == {"assetNodes": []}
        assert _Recorder.seen[-1] == {"path": "/dagster/graphql", "authorization": "Bearer right-token"}
        with pytest.raises(BackfillError, match="refused the request \\(HTTP 401\\).*--token"):
            DagsterGraphQL(url=base, token="wrong-token")("{ assetNodes { isPartitioned } }")
    finally:
        server.shutdown()
    with pytest.raises(BackfillError, match="plain HTTP"):
        DagsterGraphQL(url="http://dagster.example.org", token="right-token")
    assert DagsterGraphQL(url="https://dagster.example.org", token="t").url == "https://dagster.example.org/graphql"
    assert graphql_url(None, "10.0.0.1", 3001) == "http://10.0.0.1:3001/graphql"
    with pytest.raises(BackfillError, match="http\\(s\\) URL"):
        graphql_url("ftp://x")


def _self_signed(folder) -> tuple[str, str]:
    """(certificate, key) PEM files for 127.0.0.1, made with `cryptography`."""
    import datetime
    import ipaddress

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_backfill_client_over_https_with_a_bearer_token(tmp_path, monkeypatch):
    import ssl

    cert, key = _self_signed(tmp_path)
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_port}"
    try:
        with pytest.raises(BackfillError, match="CERTIFICATE_VERIFY_FAILED"):  # an unknown CA is not trusted
            DagsterGraphQL(url=url, token="right-token")("{ assetNodes { isPartitioned } }")
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # the private CA of deploy/README.md
        assert DagsterGraphQL(url=url, token="right-token")("{ assetNodes { isPartitioned } }") == {"assetNodes": []}
        assert _Recorder.seen[-1] == {"path": "/graphql", "authorization": "Bearer right-token"}
    finally:
        server.shutdown()
