"""Every Kubernetes overlay renders, validates against the Kubernetes schemas offline, and keeps the
promises operators rely on (non-root read-only containers, probes, a drain window)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "deploy" / "overlays").iterdir())
JOBS = sorted(f"../jobs/{p.name}" for p in (ROOT / "deploy" / "jobs").iterdir())  # recoveries, retention
KUBERNETES_VERSION = "1.30.0"


# kubectl with its built-in kustomize, from the virtualenv (requirements/dev.lock), not the machine.
KUBECTL = str(Path(sys.executable).parent / "kubectl")


def render(overlay: str) -> str:
    return subprocess.run([KUBECTL, "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
                          check=True, capture_output=True, text=True).stdout


def documents(overlay: str) -> list[dict]:
    """The rendered overlay's resources, parsed."""
    return [d for d in yaml.safe_load_all(render(overlay)) if d]


@pytest.mark.parametrize("overlay", OVERLAYS + JOBS)
def test_overlay_renders_and_validates_against_kubernetes_schemas(overlay, tmp_path):
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render(overlay))
    validator = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validator), "--strict", "-k", KUBERNETES_VERSION, str(rendered)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_are_hardened_probed_and_drain_before_the_kill(overlay):
    docs = documents(overlay)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"webhook-gateway", "billing", "notifier"}
    grace = int(next(d for d in docs if d["kind"] == "ConfigMap"
                     and d["metadata"]["name"] == "payments-config")["data"]["SHUTDOWN_GRACE_SECONDS"])
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["terminationGracePeriodSeconds"] > grace
        for container in spec["containers"] + spec.get("initContainers", []):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
        main = spec["containers"][0]
        assert "readinessProbe" in main and "livenessProbe" in main, name
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("HorizontalPodAutoscaler", "webhook-gateway") in kinds
    assert {n for k, n in kinds if k == "PodDisruptionBudget"} == {"webhook-gateway", "billing", "notifier"}
    # billing-recovery: for the pods of the opt-in recovery in deploy/jobs; payments-retention: the jobs of
    # partition upkeep and retention, which every overlay runs.
    assert {n for k, n in kinds if k == "NetworkPolicy"} == {"webhook-gateway", "billing", "notifier",
                                                            "billing-recovery", "payments-retention"}
    assert {n for k, n in kinds if k == "CronJob"} == {"billing-retention", "notifier-retention"}


def _workload(doc: dict) -> dict:
    """The spec that holds the pod template: a Deployment's or Job's own, a CronJob's job template's."""
    return doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]


def _pod(doc: dict) -> dict:
    return _workload(doc)["template"]


def _containers(doc: dict) -> list[dict]:
    spec = _pod(doc)["spec"]
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_serving_containers_hold_grpc_keys_and_only_the_notifier_the_mail_password(overlay):
    # A server refuses to start without the TLS files the shared config names; migrations, retention and
    # recovery read none, so their containers get neither a key nor the mail password to lose.
    docs = documents(overlay)
    for job in JOBS:
        docs += documents(job)
    docs = list({(d["kind"], d["metadata"]["name"]): d for d in docs}.values())  # jobs the overlay also runs
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "payments-config")
    folders = {str(Path(config["data"][name]).parent)
               for name in ("GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CA_FILE")}
    servers, others = [], []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job", "CronJob"):
            continue
        secrets = {v["name"]: v["secret"]["secretName"] for v in _pod(doc)["spec"].get("volumes", []) if "secret" in v}
        for container in _containers(doc):
            mounted = {m["mountPath"]: secrets.get(m["name"]) for m in container.get("volumeMounts", [])}
            env_secrets = {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
            if doc["kind"] == "Deployment" and container in _pod(doc)["spec"]["containers"]:
                assert folders <= set(mounted), (doc["metadata"]["name"], container["name"])
                servers.append((doc["metadata"]["name"], "payments-smtp" in env_secrets))
            else:
                assert not any(s and s.endswith("-grpc-tls") for s in mounted.values()), (
                    doc["metadata"]["name"], container["name"])
                assert "payments-smtp" not in env_secrets, (doc["metadata"]["name"], container["name"])
                others.append(container["args"][0])
    assert sorted(servers) == [("billing", False), ("notifier", True), ("webhook-gateway", False)]
    assert sorted(others) == sorted(["migrate", "migrate", "retention", "retention", "recover-stripe-events",
                                     "recover-razorpay-events"])


@pytest.mark.parametrize("job", JOBS)
def test_jobs_are_hardened_confined_and_run_again_only_when_it_can_help(job):
    docs = documents(job)
    [job_doc] = [d for d in docs if d["kind"] in ("Job", "CronJob")]
    pod = _pod(job_doc)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    for container in _containers(job_doc):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
    # Exit 2 is a setting or range the command cannot run with: running it again would not help.
    assert {"action": "FailJob", "onExitCodes": {"containerName": _containers(job_doc)[0]["name"], "operator": "In",
                                                  "values": [2]}} in _workload(job_doc)["podFailurePolicy"]["rules"]
    if job_doc["kind"] == "CronJob":
        assert job_doc["spec"]["concurrencyPolicy"] == "Forbid"  # two runs would only do the work twice
    prod = documents("prod")
    label = pod["metadata"]["labels"]["app.kubernetes.io/name"]
    assert any(d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": label} for d in prod)
    images = {c["image"] for c in _containers(job_doc)}
    assert images <= {c["image"] for d in prod if d["kind"] == "Deployment" for c in _containers(d)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_grpc_server_gets_a_policy_that_loads_and_keeps_the_gateway_to_ingest(overlay, tmp_path):
    from boxcost.billing.v1 import billing_pb2
    from boxcost.notifier.v1 import notifier_pb2
    from servicekit.authz import server_policy

    docs = documents(overlay)
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "payments-config")
    mount = str(Path(config["data"]["GRPC_POLICY_FILE"]).parent)
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for server, contract in (("billing", billing_pb2.DESCRIPTOR), ("notifier", notifier_pb2.DESCRIPTOR)):
        pod = deployments[server]["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if v.get("configMap", {}).get("name", "").startswith(f"{server}-policy")]
        mounts = pod["containers"][0]["volumeMounts"]
        assert any(m["name"] == volume["name"] and m["mountPath"] == mount for m in mounts)
        policy_file = tmp_path / f"{server}.yaml"
        policy_file.write_text(maps[volume["configMap"]["name"]]["data"]["policy.yaml"])
        policy = server_policy(False, str(policy_file), [contract])
        gateway = [c for c in policy.callers if c.name == "webhook-gateway"]
        if server == "billing":
            assert [sorted(c.methods) for c in gateway] == [["boxcost.billing.v1.BillingService/IngestEvents"]]
        else:
            assert gateway == []
        # Replays, retries, dead letters and tenant assignment are granted to the operator alone.
        for name in ("ReplayWebhookEvents", "RetryRefusedEmails", "AssignTransactionTenant", "RetryEmails"):
            granted = {c.name for c in policy.callers
                       if any(c.may_call(f"{s.full_name}/{name}") for s in contract.services_by_name.values()
                              if name in s.methods_by_name)}
            assert granted <= {"payments-operator"}, (server, name, granted)


def test_an_overlay_without_its_policy_files_does_not_render(tmp_path):
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy)
    (copy / "overlays" / "prod" / "policies" / "billing.yaml").unlink()
    result = subprocess.run([KUBECTL, "kustomize", str(copy / "overlays" / "prod")], capture_output=True, text=True)
    assert result.returncode != 0 and "policies/billing.yaml" in result.stderr


@pytest.mark.parametrize(("overlay", "livemode"), [("prod", "true"), ("dev", "false")])
def test_each_overlay_applies_stripe_events_of_its_own_mode_only(overlay, livemode):
    config = next(d for d in documents(overlay)
                  if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "payments-config")
    assert config["data"]["STRIPE_LIVEMODE"] == livemode


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_are_headless_dialled_by_dns_and_replicas_spread_over_nodes(overlay):
    docs = documents(overlay)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert services["billing"]["spec"]["clusterIP"] == "None" and services["notifier"]["spec"]["clusterIP"] == "None"
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "payments-config")
    assert config["data"]["BILLING_ADDR"] == "dns:///billing:50051"
    assert config["data"]["NOTIFIER_ADDR"] == "dns:///notifier:50052"
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        [term] = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
