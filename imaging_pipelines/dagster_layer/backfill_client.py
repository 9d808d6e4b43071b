"""Launch and follow a partition backfill of one dataset on a running Dagster webserver (GraphQL API).

``imaging-pipelines backfill DATASET --all --wait`` asks the server (``make ui`` / ``dagster dev``) for the
dataset's partitioned assets and partitions, launches an asset backfill (mutation ``launchPartitionBackfill``
with ``partitionNames`` and ``assetSelection``) and, with ``--wait``, polls it until it is done. The
backfill daemon (started by ``dagster dev``) turns it into runs: one run per partition, as the assets'
``BackfillPolicy.multi_run(1)`` says, with the per-partition assets of that partition together in the run.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

TERMINAL_STATUSES = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
FINISHED_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
PARTITION_TAG = "dagster/partition"
DATASET_TAG = "imaging_pipelines/dataset"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
TOKEN_ENV = "IMAGING_PIPELINES_DAGSTER_TOKEN"  # bearer token for a webserver behind an authenticating proxy


def run_partition(tags: dict[str, str]) -> str | None:
    """The partition of a run: its partition tag, or the single key of the one-partition range that asset
    backfills under ``BackfillPolicy.multi_run(1)`` tag their runs with."""
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    start, end = (tags.get(t) for t in RANGE_TAGS)
    return start if start and start == end else None


class BackfillError(Exception):
    """A problem the command reports in one line (server unreachable, unknown dataset or partition, ...)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def graphql_url(url: str | None = None, host: str = "127.0.0.1", port: int = 3000) -> str:
    """The ``/graphql`` endpoint: ``url`` (the webserver's base URL, e.g. ``https://dagster.example.org``,
    ``/graphql`` appended unless given) or ``http://host:port/graphql``."""
    if not url:
        return f"http://{host}:{port}/graphql"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BackfillError(f"--url must be an http(s) URL such as https://dagster.example.org (got {url!r})")
    path = parsed.path.rstrip("/")
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path if path.endswith("/graphql")
                                    else path + "/graphql", parsed.query, ""))


class DagsterGraphQL:
    """A minimal client of the webserver's ``/graphql`` endpoint (standard library only).

    ``url``: the webserver's base URL (``https://...`` behind a TLS proxy; the system's CA certificates, or
    ``SSL_CERT_FILE``, verify it); else ``http://host:port``. ``token``: a bearer token sent as
    ``Authorization: Bearer ...`` (default ``IMAGING_PIPELINES_DAGSTER_TOKEN``); it is never sent over plain
    HTTP to a host other than the loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 3000, timeout_s: float = 60.0, url: str | None = None,
                 token: str | None = None):
        self.url = graphql_url(url, host, port)
        self.timeout_s = timeout_s
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        parsed = urllib.parse.urlsplit(self.url)
        if self.token and parsed.scheme != "https" and not _is_loopback(parsed.hostname or ""):
            raise BackfillError(f"refusing to send the bearer token over plain HTTP to {parsed.hostname}: "
                                "use an https:// --url (the reverse proxy of deploy/ terminates TLS)")

    @property
    def base_url(self) -> str:
        """The webserver's base URL (for links to its pages)."""
        return self.url.removesuffix("/graphql")

    def __call__(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            if exc.code in (401, 403):
                raise BackfillError(f"the webserver at {self.url} refused the request (HTTP {exc.code}): give a "
                                    f"valid bearer token with --token or {TOKEN_ENV}") from None
            raise BackfillError(f"the Dagster webserver at {self.url} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackfillError(
                f"cannot reach the Dagster webserver at {self.url} ({reason}); start it with `make ui` "
                "(or `dagster dev -w workspace.yaml`) or pass --url (or --host / --port)"
            ) from None
        if payload.get("errors"):
            raise BackfillError("GraphQL error: " + "; ".join(e.get("message", str(e)) for e in payload["errors"]))
        return payload["data"]


_ASSET_NODES = "{ assetNodes { assetKey { path } isPartitioned } }"
_PARTITION_KEYS = """query($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {
  ... on AssetNode { partitionKeysByDimension { partitionKeys } } ... on Error { message } } }"""
_LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }"""
_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { id status
    assetBackfillData { assetBackfillStatuses { __typename ... on AssetPartitionsStatusCounts {
      assetKey { path } numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized numPartitionsFailed } } }
    runs { runId status tags { key value } } }
  ... on Error { message } } }"""


@dataclass
class BackfillTarget:
    dataset: str
    assets: list[list[str]]  # asset key paths
    partitions: list[str]


@dataclass
class BackfillOutcome:
    backfill_id: str
    status: str
    materialised: list[str] = field(default_factory=list)  # partitions whose runs succeeded
    failed: list[str] = field(default_factory=list)  # partitions with a failed or canceled run
    pending: list[str] = field(default_factory=list)  # targeted partitions without a finished run
    counts: dict[str, dict] = field(default_factory=dict)  # asset -> targeted / in progress / materialised / failed


def resolve_target(client: DagsterGraphQL, dataset: str, partitions: list[str] | None, all_partitions: bool,
                   assets: list[str] | None) -> BackfillTarget:
    """The dataset's partitioned assets (or the ``assets`` named: ``ingested_scans`` or ``ds/ingested_scans``)
    and the partitions (``partitions``, or every partition with ``all_partitions``), checked against the server."""
    if bool(partitions) == bool(all_partitions):
        raise BackfillError("give either --partitions K1,K2 or --all")
    nodes = client(_ASSET_NODES)["assetNodes"]
    datasets = sorted({n["assetKey"]["path"][0] for n in nodes if n["isPartitioned"] and len(n["assetKey"]["path"]) > 1})
    partitioned = [n["assetKey"]["path"] for n in nodes if n["isPartitioned"] and n["assetKey"]["path"][0] == dataset]
    if not partitioned:
        known = ", ".join(datasets) or "none"
        raise BackfillError(f"unknown dataset {dataset!r} on this server (datasets with partitions: {known})")
    if assets:
        by_name = {"/".join(p[1:]): p for p in partitioned}
        chosen, unknown = [], []
        for name in assets:
            name = name.strip().removeprefix(f"{dataset}/")
            (chosen.append(by_name[name]) if name in by_name else unknown.append(name))
        if unknown:
            raise BackfillError(f"unknown or unpartitioned asset(s) {unknown} of {dataset}; "
                                f"partitioned assets: {sorted(by_name)}")
        partitioned = chosen
    answer = client(_PARTITION_KEYS, {"path": partitioned[0]})["assetNodeOrError"]
    if "partitionKeysByDimension" not in answer:
        raise BackfillError(answer.get("message", "could not read the partitions"))
    existing = [k for dim in answer["partitionKeysByDimension"] for k in dim["partitionKeys"]]
    if all_partitions:
        if not existing:
            raise BackfillError(f"{dataset} has no partitions yet: let its inbox sensor or schedule scan the inbox first")
        keys = existing
    else:
        keys = list(dict.fromkeys(partitions))
        missing = [k for k in keys if k not in set(existing)]
        if missing:
            raise BackfillError(f"unknown partition(s) of {dataset}: {', '.join(missing)}")
    return BackfillTarget(dataset, partitioned, keys)


def launch_backfill(client: DagsterGraphQL, target: BackfillTarget) -> str:
    params = {
        "partitionNames": target.partitions,
        "assetSelection": [{"path": p} for p in target.assets],
        "title": f"imaging-pipelines backfill {target.dataset}",
        "description": f"{len(target.partitions)} partition(s) x {len(target.assets)} asset(s)",
        # its runs carry the dataset, for the per-dataset run limit of deploy/dagster.yaml
        "tags": [{"key": DATASET_TAG, "value": target.dataset}],
    }
    answer = client(_LAUNCH, {"params": params})["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(f"backfill not launched ({answer['__typename']}): {answer.get('message', '')}")
    return answer["backfillId"]


def backfill_outcome(client: DagsterGraphQL, backfill_id: str, partitions: list[str]) -> BackfillOutcome:
    answer = client(_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if answer["__typename"] != "PartitionBackfill":
        raise BackfillError(f"backfill {backfill_id}: {answer.get('message', answer['__typename'])}")
    outcome = BackfillOutcome(backfill_id, answer["status"])
    for status in (answer.get("assetBackfillData") or {}).get("assetBackfillStatuses", []):
        if status["__typename"] == "AssetPartitionsStatusCounts":
            outcome.counts["/".join(status["assetKey"]["path"])] = {
                "targeted": status["numPartitionsTargeted"], "in_progress": status["numPartitionsInProgress"],
                "materialised": status["numPartitionsMaterialized"], "failed": status["numPartitionsFailed"]}
    runs: dict[str, list[str]] = {}
    for run in answer.get("runs") or []:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        runs.setdefault(run_partition(tags) or "", []).append(run["status"])
    for key in partitions:
        statuses = runs.get(key, [])
        if any(s in ("FAILURE", "CANCELED") for s in statuses):
            outcome.failed.append(key)
        elif statuses and all(s == "SUCCESS" for s in statuses):
            outcome.materialised.append(key)
        else:
            outcome.pending.append(key)
    return outcome


def _all_requested(outcome: BackfillOutcome) -> bool:
    return bool(outcome.counts) and all(
        c["in_progress"] + c["materialised"] + c["failed"] >= c["targeted"] for c in outcome.counts.values())


def is_done(outcome: BackfillOutcome) -> bool:
    """Finished: the daemon marked the backfill done, or every targeted asset partition has been requested
    and every partition's runs have finished (the daemon marks it done on its next pass, up to 30 s later)."""
    return outcome.status in TERMINAL_STATUSES or (_all_requested(outcome) and not outcome.pending)


def wait_for_backfill(client: DagsterGraphQL, backfill_id: str, partitions: list[str], poll_s: float = 2.0,
                      timeout_s: float | None = None, progress: bool = True,
                      sleep: Callable[[float], None] = time.sleep) -> BackfillOutcome:
    """Poll until the backfill is done; a tqdm bar counts finished partitions (materialised or failed)."""
    from tqdm import tqdm

    start = time.time()
    with tqdm(total=len(partitions), desc=f"backfill {backfill_id}", unit="partition", disable=not progress) as bar:
        while True:
            outcome = backfill_outcome(client, backfill_id, partitions)
            done = len(outcome.materialised) + len(outcome.failed)
            bar.update(done - bar.n)
            bar.set_postfix(ok=len(outcome.materialised), failed=len(outcome.failed), status=outcome.status)
            if is_done(outcome):
                return outcome
            if timeout_s is not None and time.time() - start > timeout_s:
                raise BackfillError(f"backfill {backfill_id} not done after {timeout_s:.0f} s (status {outcome.status})")
            sleep(poll_s)


def summary_lines(outcome: BackfillOutcome) -> list[str]:
    lines = [f"backfill {outcome.backfill_id}: {outcome.status}; {len(outcome.materialised)} partition(s) "
             f"materialised, {len(outcome.failed)} failed" + (f", {len(outcome.pending)} not run" if outcome.pending else "")]
    for asset, c in outcome.counts.items():
        lines.append(f"  {asset:<48} {c['materialised']}/{c['targeted']} materialised, {c['failed']} failed")
    lines += [f"  FAILED {k}" for k in outcome.failed]
    lines += [f"  NOT RUN {k}" for k in outcome.pending]
    return lines
