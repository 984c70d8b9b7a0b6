#!/usr/bin/env python3
"""Render and validate pixelfarm deployment manifests (used by scripts/check-deploy).

  validate.py chart CHART_DIR VALUES.yaml... --out DIR [--kube-version V]...
      helm lint --strict + render (helm-python-sdk) per values file, then the
      manifest checks below on the rendered documents, plus per-values-file
      expectations and negative renders that must fail.
  validate.py manifests FILE... --out DIR [--kube-version V]...
      the manifest checks on already-rendered YAML (kustomize output).

Manifest checks:
  * built-in kinds: `kubernetes-validate --strict -k V` (offline schemas);
    a kind it has no schema for is an error unless it is one of the CRDs below;
  * CRDs (ScaledObject, TriggerAuthentication, ServiceMonitor, PodMonitor,
    PrometheusRule): jsonschema against deploy/schemas/*.json;
  * pixelfarm invariants: non-root/read-only/no-caps/seccomp security
    contexts, /tmp and model-cache emptyDirs, probes, resources,
    terminationGracePeriodSeconds > drain grace, GPU requests == limits,
    autoscaler targets/queues/replica bounds, PDB/Service selectors, configMap
    references, migration hook annotations;
  * model registry (workers): PIXELFARM__WORKER__RENDERER is diffusion or
    test-pattern; a diffusion worker mounts a ConfigMap file at
    PIXELFARM__WORKER__REGISTRY (outside /app/config/); with the rendered set
    at hand, that file parses as the worker's registry (known keys, families,
    sources, required files, every sha256 64 lowercase hex), cache_dir lies in
    an emptyDir, device cuda has a GPU, and every model of
    PIXELFARM__WORKER__MODELS is in it.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "deploy" / "schemas"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring-servicemonitor.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring-podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring-prometheusrule.json",
}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
# What each chart ci values file must produce: {kind: count} (exact), and
# "absent" kinds. Keeps the ci files honest about what they claim to cover.
# "findings": problems this values file must produce (substrings of the error),
# which then do not fail the run: the chart defaults ship an empty modelRegistry
# (a placeholder to fill in, like the dev credentials), so the default sd15
# pool has no registered model -- the check must notice.
CHART_EXPECT = {
    "default-values.yaml": {"Deployment": 2, "ScaledObject": 1, "TriggerAuthentication": 1,
                            "Secret": 2, "Job": 1, "PodDisruptionBudget": 2, "ConfigMap": 2,
                            "absent": ["HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"],
                            "findings": ["serves model sd15, which its registry does not list"]},
    "multi-pool-gpu-values.yaml": {"Deployment": 4, "ScaledObject": 2, "TriggerAuthentication": 1,
                                   "PodDisruptionBudget": 4, "Job": 1, "ConfigMap": 2,
                                   "absent": ["Secret", "HorizontalPodAutoscaler"]},
    "keda-off-values.yaml": {"Deployment": 3, "HorizontalPodAutoscaler": 2, "ConfigMap": 1,
                             "absent": ["ScaledObject", "TriggerAuthentication"]},
    "monitoring-on-values.yaml": {"ServiceMonitor": 1, "PodMonitor": 1, "PrometheusRule": 1,
                                  "NetworkPolicy": 2, "ScaledObject": 1,
                                  "absent": ["TriggerAuthentication"]},
    # check_tls checks the TLS wiring of the scheduler's pods and ServiceMonitor.
    "tls-values.yaml": {"Deployment": 2, "ServiceMonitor": 1, "scheduler_tls": True,
                        "absent": ["PodMonitor"]},
}
# Values that must make the chart refuse to render.
CHART_MUST_FAIL = {
    "no secret source": {"secrets": {"create": False, "existingSecret": ""}},
    "pool without models": {"workerPools": [{"name": "x", "models": []}]},
    "pool name not a DNS label": {"workerPools": [{"name": "SD_15", "models": ["sd15"]}]},
    "minReplicas > maxReplicas": {"workerPools": [{"name": "a", "models": ["m"],
                                                   "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}]},
    "unknown keda trigger": {"keda": {"trigger": "sqs"}},
    "scheduler tls without its Secret": {"scheduler": {"tls": {"enabled": True}}},
    "content-credentials mountPath not absolute": {"contentCredentials": {
        "existingSecret": "pixelfarm-c2pa", "mountPath": "etc/pixelfarm/c2pa"}},
    "unknown renderer": {"workerDefaults": {"renderer": "dall-e"}},
    "registry sha256 not 64 hex": {"modelRegistry": {"models": {"sd15": {
        "family": "sd15", "source": "s3://m/sd15", "files": {"unet/diffusion_pytorch_model.safetensors": "abc123"}}}}},
    "pool model missing from registry": {"modelRegistry": {"models": {"sd15": {
        "family": "sd15", "source": "s3://m/sd15", "files": {"tokenizer/tokenizer.json": "0" * 64}}}},
        "workerPools": [{"name": "xl", "models": ["sdxl"]}]},
    "sdxl registry without its second text encoder": {"modelRegistry": {"models": {"sdxl": {
        "family": "sdxl", "source": "s3://m/sdxl", "files": {f: "0" * 64 for f in (
            "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors", "tokenizer/tokenizer.json")}}}},
        "workerPools": [{"name": "xl", "models": ["sdxl"]}]},
}
# The worker's model registry (services/diffusion/src/registry.rs).
RENDERERS = ("diffusion", "test-pattern")
REGISTRY_KEYS = {"cache_dir", "max_loaded", "max_batch", "fused_batches", "device", "models",
                 "loras", "max_lora_sets", "controlnets", "max_controlnets"}
MODEL_KEYS = {"family", "source", "checkpoint", "files"}
# A LoRA or ControlNet entry: one file of one family.
ADAPTER_KEYS = {"family", "source", "sha256"}
SOURCE = re.compile(r"file:///.*|s3://[^/]+(/.*)?")
FAMILIES = ("tiny", "tiny-xl", "sd15", "sd21", "sdxl", "sdxl-turbo", "shapes")
LAYOUT = ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
          "text_encoder/model.safetensors", "tokenizer/tokenizer.json")
# SDXL families read a second text encoder and tokenizer, and only from the diffusers layout.
XL_FAMILIES = ("tiny-xl", "sdxl", "sdxl-turbo")
XL_LAYOUT = LAYOUT + ("text_encoder_2/model.safetensors", "tokenizer_2/tokenizer.json")
SHA256 = re.compile(r"[0-9a-f]{64}")


class Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")


def load_docs(text: str, where: str, ck: Checker) -> list[dict]:
    docs = []
    try:
        for d in yaml.safe_load_all(text):
            if d is None:
                continue
            if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                ck.err(where, f"document is not a Kubernetes object: {str(d)[:80]}")
                continue
            docs.append(d)
    except yaml.YAMLError as e:
        ck.err(where, f"invalid YAML: {e}")
    return docs


def ident(d: dict) -> str:
    return f"{d['kind']}/{d.get('metadata', {}).get('name', '?')}"


def pod_spec(d: dict) -> dict | None:
    if d["kind"] in WORKLOADS:
        return d.get("spec", {}).get("template", {}).get("spec", {})
    return None


def env_map(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", []) or []}


def check_workload(d: dict, where: str, ck: Checker) -> None:
    spec = pod_spec(d)
    w = f"{where} {ident(d)}"
    labels = d.get("metadata", {}).get("labels", {}) or {}
    component = labels.get("app.kubernetes.io/component", "")
    psc = spec.get("securityContext", {}) or {}
    if psc.get("runAsNonRoot") is not True:
        ck.err(w, "pod securityContext.runAsNonRoot must be true")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        ck.err(w, "pod securityContext.seccompProfile.type must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        ck.err(w, "automountServiceAccountToken must be false (pixelfarm never talks to the API server)")
    volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
    for c in spec.get("containers", []) or []:
        cw = f"{w} container {c.get('name')}"
        sc = c.get("securityContext", {}) or {}
        if sc.get("readOnlyRootFilesystem") is not True:
            ck.err(cw, "readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            ck.err(cw, "allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            ck.err(cw, "capabilities.drop must contain ALL")
        res = c.get("resources") or {}
        if not (res.get("requests") or {}).get("memory") or not (res.get("limits") or {}).get("memory"):
            ck.err(cw, "resources.requests.memory and resources.limits.memory are required")
        gpu_req = (res.get("requests") or {}).get("nvidia.com/gpu")
        gpu_lim = (res.get("limits") or {}).get("nvidia.com/gpu")
        if gpu_req is not None and str(gpu_req) != str(gpu_lim):
            ck.err(cw, f"nvidia.com/gpu requests ({gpu_req}) must equal limits ({gpu_lim})")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", []) or []}
        tmp = mounts.get("/tmp")
        if not tmp or "emptyDir" not in volumes.get(tmp["name"], {}):
            ck.err(cw, "/tmp must be an emptyDir mount (read-only root filesystem)")
        env = env_map(c)
        if component in ("scheduler", "worker"):
            probes = {"scheduler": ("/readyz", "/healthz"), "worker": ("/readyz", "/healthz")}[component]
            rp = ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
            lp = ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("path")
            if (rp, lp) != probes:
                ck.err(cw, f"probes must be readiness {probes[0]} / liveness {probes[1]}, got {rp} / {lp}")
            for key in ("PIXELFARM__DATABASE__URL", "PIXELFARM__BROKER__URL"):
                if "secretKeyRef" not in ((env.get(key) or {}).get("valueFrom") or {}):
                    ck.err(cw, f"{key} must come from a Secret (valueFrom.secretKeyRef)")
            cfg = next((m for m in mounts.values() if m["mountPath"].startswith("/app/config/")), None)
            if not cfg or "configMap" not in volumes.get(cfg["name"], {}):
                ck.err(cw, "config layer must be mounted from a ConfigMap under /app/config/")
        if component == "scheduler":
            check_tls(c, mounts, volumes, cw, ck)
        if component == "worker":
            if not (env.get("PIXELFARM__WORKER__MODELS") or {}).get("value"):
                ck.err(cw, "PIXELFARM__WORKER__MODELS must list the pool's models")
            wid = ((env.get("PIXELFARM__WORKER__ID") or {}).get("valueFrom") or {}).get("fieldRef", {})
            if wid.get("fieldPath") != "metadata.name":
                ck.err(cw, "PIXELFARM__WORKER__ID must be the pod name (fieldRef metadata.name)")
            drain = int((env.get("PIXELFARM__WORKER__DRAIN_GRACE_SECONDS") or {}).get("value", 30))
            tgp = spec.get("terminationGracePeriodSeconds")
            if not isinstance(tgp, int) or tgp < drain + 5:
                ck.err(w, f"terminationGracePeriodSeconds ({tgp}) must be >= drain grace ({drain}) + 5s margin")
            cache = [m for m in mounts.values() if m["mountPath"].startswith("/var/cache/pixelfarm")]
            if not cache or "emptyDir" not in volumes.get(cache[0]["name"], {}):
                ck.err(cw, "worker needs an emptyDir model cache under /var/cache/pixelfarm")
            renderer = (env.get("PIXELFARM__WORKER__RENDERER") or {}).get("value")
            if renderer not in RENDERERS:
                ck.err(cw, f"PIXELFARM__WORKER__RENDERER must be one of {', '.join(RENDERERS)}, got {renderer!r}")
            if renderer == "diffusion":
                src = registry_source(c, volumes)
                if isinstance(src, str):
                    ck.err(cw, src)


def check_tls(c: dict, mounts: dict, volumes: dict, cw: str, ck: Checker) -> None:
    """A scheduler serving TLS (PIXELFARM__SCHEDULER__TLS__*_FILE) reads both files from one
    Secret mounted as a folder (a subPath mount never sees a renewal), and its probes use
    HTTPS; one in plain TCP has no HTTPS probe."""
    env = env_map(c)
    files = [(env.get(k) or {}).get("value") for k in
             ("PIXELFARM__SCHEDULER__TLS__CERT_FILE", "PIXELFARM__SCHEDULER__TLS__KEY_FILE")]
    tls = any(files)
    for probe in ("readinessProbe", "livenessProbe"):
        scheme = ((c.get(probe) or {}).get("httpGet") or {}).get("scheme", "HTTP")
        if (scheme == "HTTPS") != tls:
            ck.err(cw, f"{probe} scheme {scheme} on a scheduler {'serving' if tls else 'without'} TLS")
    if not tls:
        return
    if not all(files):
        ck.err(cw, "PIXELFARM__SCHEDULER__TLS__CERT_FILE and __KEY_FILE must both be set")
        return
    dirs = {str(Path(f).parent) for f in files}
    m = mounts.get(dirs.pop()) if len(dirs) == 1 else None
    if m is None or m.get("subPath") or "secret" not in volumes.get(m["name"], {}):
        ck.err(cw, f"the TLS files {files} must be in one folder mounted from a Secret (no subPath)")


def registry_source(c: dict, volumes: dict) -> tuple[str, str] | str:
    """(ConfigMap name, key) of the file at PIXELFARM__WORKER__REGISTRY, or what is wrong."""
    path = ((env_map(c).get("PIXELFARM__WORKER__REGISTRY") or {}).get("value") or "")
    if not path.startswith("/"):
        return f"renderer diffusion needs PIXELFARM__WORKER__REGISTRY (an absolute path), got {path!r}"
    if path.startswith("/app/config/"):
        return f"registry {path} must not be in the layered config dir /app/config/"
    parent, base = path.rsplit("/", 1)
    for m in c.get("volumeMounts", []) or []:
        mp = m["mountPath"].rstrip("/")
        cm = volumes.get(m["name"], {}).get("configMap")
        if mp == path and m.get("subPath"):
            key_path = m["subPath"]
        elif mp == (parent or "/") and not m.get("subPath"):
            key_path = base
        else:
            continue
        if cm is None:
            return f"registry {path} is mounted from volume {m['name']}, which is not a ConfigMap"
        items = cm.get("items")
        if items:
            key = next((i["key"] for i in items if i.get("path") == key_path), None)
            if key is None:
                return f"registry {path}: ConfigMap volume {m['name']} has no item with path {key_path}"
        else:
            key = key_path
        return cm["name"], key
    return f"no volumeMount puts a file at PIXELFARM__WORKER__REGISTRY {path}"


def check_registry(text: str, where: str, ck: Checker) -> dict | None:
    """Parse a registry file the way the worker does (deny_unknown_fields + validate())."""
    try:
        reg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        ck.err(where, f"registry is not valid YAML: {e}")
        return None
    if not isinstance(reg, dict) or not isinstance(reg.get("models"), dict):
        ck.err(where, "registry must be a mapping with a `models` mapping")
        return None
    for k in sorted(set(reg) - REGISTRY_KEYS):
        ck.err(where, f"registry: unknown key {k!r}")
    for k in ("max_loaded", "max_batch", "max_lora_sets", "max_controlnets"):
        if k in reg and (not isinstance(reg[k], int) or reg[k] < 1):
            ck.err(where, f"registry: {k} must be an integer >= 1, got {reg[k]!r}")
    if reg.get("device", "cpu") not in ("cpu", "cuda"):
        ck.err(where, f"registry: device must be cpu or cuda, got {reg.get('device')!r}")
    for name, e in reg["models"].items():
        mw = f"{where} model {name}"
        if not isinstance(e, dict):
            ck.err(mw, "entry must be a mapping")
            continue
        for k in sorted(set(e) - MODEL_KEYS):
            ck.err(mw, f"unknown key {k!r}")
        if e.get("family") not in FAMILIES:
            ck.err(mw, f"family {e.get('family')!r} is not one of {', '.join(FAMILIES)}")
        src = str(e.get("source", ""))
        if not SOURCE.fullmatch(src):
            ck.err(mw, f"source {src!r}: accepted file:///dir or s3://bucket/prefix")
        files = e.get("files")
        if not isinstance(files, dict) or not files:
            ck.err(mw, "files must map every file to its sha256")
            continue
        for f, sha in files.items():
            if str(f).startswith("/") or any(p in ("", "..") for p in str(f).split("/")):
                ck.err(mw, f"file {f!r} must be a relative path inside the model folder")
            if not isinstance(sha, str) or not SHA256.fullmatch(sha):
                ck.err(mw, f"files[{f}]: sha256 {sha!r} is not 64 lowercase hex digits")
        xl = e.get("family") in XL_FAMILIES
        if xl and e.get("checkpoint"):
            ck.err(mw, "SDXL families load from the diffusers folder layout only; remove checkpoint")
        required = (e["checkpoint"], LAYOUT[3]) if e.get("checkpoint") else XL_LAYOUT if xl else LAYOUT
        for f in required:
            if f not in files:
                ck.err(mw, f"files has no {f} (every file the model reads needs its sha256)")
    for section, what in (("loras", "lora"), ("controlnets", "controlnet")):
        for name, e in (reg.get(section) or {}).items():
            lw = f"{where} {what} {name}"
            if not isinstance(e, dict) or set(e) != ADAPTER_KEYS:
                ck.err(lw, f"entry must have exactly the keys {', '.join(sorted(ADAPTER_KEYS))}")
                continue
            if e["family"] not in FAMILIES or e["family"] == "shapes":
                ck.err(lw, f"family {e['family']!r}: accepted the SD families of {', '.join(FAMILIES)}")
            if not SOURCE.fullmatch(str(e["source"])):
                ck.err(lw, f"source {e['source']!r}: accepted file:///path or s3://bucket/key")
            if not SHA256.fullmatch(str(e["sha256"])):
                ck.err(lw, f"sha256 {e['sha256']!r} is not 64 lowercase hex digits")
    return reg


def check_worker_registry(d: dict, configmaps: dict, where: str, ck: Checker) -> None:
    """A diffusion worker's registry, read from the rendered ConfigMap, against its pod."""
    if (d.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component") != "worker":
        return
    spec = pod_spec(d)
    volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
    for c in spec.get("containers", []) or []:
        env = env_map(c)
        if (env.get("PIXELFARM__WORKER__RENDERER") or {}).get("value") != "diffusion":
            continue
        src = registry_source(c, volumes)
        if isinstance(src, str):
            continue  # reported by check_workload
        cm_name, key = src
        w = f"{where} {ident(d)} registry ConfigMap/{cm_name}[{key}]"
        text = ((configmaps.get(cm_name) or {}).get("data") or {}).get(key)
        if text is None:
            if cm_name in configmaps:
                ck.err(w, "key not in the ConfigMap")
            continue  # a missing ConfigMap is reported with the volumes
        reg = check_registry(text, w, ck)
        if reg is None:
            continue
        for m in filter(None, ((env.get("PIXELFARM__WORKER__MODELS") or {}).get("value") or "").split(",")):
            if m not in reg["models"]:
                ck.err(w, f"pool serves model {m}, which its registry does not list "
                          f"({', '.join(sorted(reg['models'])) or 'no models'})")
        empty = [m["mountPath"].rstrip("/") for m in c.get("volumeMounts", []) or []
                 if "emptyDir" in volumes.get(m["name"], {})]
        cache = str(reg.get("cache_dir", ""))
        remote = any(str((e or {}).get("source", "")).startswith("s3://") for e in reg["models"].values())
        if remote and not any(cache == p or cache.startswith(p + "/") for p in empty):
            ck.err(w, f"cache_dir {cache or '(default: /tmp/pixelfarm-models)'} is not inside an emptyDir mount "
                      f"({', '.join(empty)}); s3:// models are downloaded there")
        if reg.get("device") == "cuda" and not ((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu"):
            ck.err(w, "device cuda but the container has no nvidia.com/gpu limit")


def matches(selector: dict, labels: dict) -> bool:
    ml = (selector or {}).get("matchLabels") or {}
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def check_set(docs: list[dict], where: str, ck: Checker, hooks: bool = False) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        name = d.get("metadata", {}).get("name", "")
        if len(name) > 63 and d["kind"] in ("Service", "Deployment", "Job"):
            ck.err(where, f"{ident(d)}: name longer than 63 characters")
        if name in by_kind.setdefault(d["kind"], {}):
            ck.err(where, f"duplicate {ident(d)}")
        by_kind[d["kind"]][name] = d
    deployments = by_kind.get("Deployment", {})
    pod_labels = {n: (d["spec"]["template"]["metadata"].get("labels") or {}) for n, d in deployments.items()}
    configmaps = set(by_kind.get("ConfigMap", {}))
    for d in docs:
        if pod_spec(d) is not None:
            check_workload(d, where, ck)
            check_worker_registry(d, by_kind.get("ConfigMap", {}), where, ck)
            for v in pod_spec(d).get("volumes", []) or []:
                cm = (v.get("configMap") or {}).get("name")
                if cm and cm not in configmaps:
                    ck.err(where, f"{ident(d)}: volume {v['name']} references missing ConfigMap {cm}")
        if d["kind"] == "Deployment":
            sel = d["spec"]["selector"]
            if not matches(sel, pod_labels[d["metadata"]["name"]]):
                ck.err(where, f"{ident(d)}: selector does not match its pod template labels")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        if not any(matches(pdb["spec"].get("selector"), l) for l in pod_labels.values()):
            ck.err(where, f"PodDisruptionBudget/{name} selects no Deployment's pods")
    for name, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector") or {}
        targets = [n for n, l in pod_labels.items() if all(l.get(k) == v for k, v in sel.items())]
        if not targets:
            ck.err(where, f"Service/{name} selects no Deployment's pods")
            continue
        ports = {p.get("name") for c in deployments[targets[0]]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for p in svc["spec"].get("ports", []):
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
                ck.err(where, f"Service/{name}: targetPort {p['targetPort']} is not a container port")
    autoscaled: dict[str, str] = {}
    for kind in ("ScaledObject", "HorizontalPodAutoscaler"):
        for name, so in by_kind.get(kind, {}).items():
            ref = so["spec"].get("scaleTargetRef", {}).get("name")
            w = f"{where} {kind}/{name}"
            if ref not in deployments:
                ck.err(w, f"scaleTargetRef {ref} is not a rendered Deployment")
                continue
            if ref in autoscaled:
                ck.err(w, f"Deployment {ref} already scaled by {autoscaled[ref]}")
            autoscaled[ref] = f"{kind}/{name}"
            if "replicas" in deployments[ref]["spec"]:
                ck.err(w, f"Deployment {ref} sets spec.replicas although an autoscaler owns it")
            if kind == "ScaledObject":
                lo, hi = so["spec"].get("minReplicaCount", 0), so["spec"].get("maxReplicaCount", 100)
            else:
                lo, hi = so["spec"].get("minReplicas", 1), so["spec"]["maxReplicas"]
                if lo < 1:
                    ck.err(w, "HPA minReplicas must be >= 1 (an HPA cannot scale to zero)")
            if lo > hi:
                ck.err(w, f"min replicas {lo} > max replicas {hi}")
            c0 = deployments[ref]["spec"]["template"]["spec"]["containers"][0]
            models = set(((env_map(c0).get("PIXELFARM__WORKER__MODELS") or {}).get("value") or "").split(","))
            if kind == "ScaledObject":
                queues = set()
                for t in so["spec"].get("triggers", []):
                    md = t.get("metadata", {})
                    if t.get("type") == "rabbitmq":
                        queues.add(md.get("queueName"))
                        auth = (t.get("authenticationRef") or {}).get("name")
                        if auth not in by_kind.get("TriggerAuthentication", {}):
                            ck.err(w, f"rabbitmq trigger authenticationRef {auth} is not rendered")
                    elif t.get("type") == "prometheus":
                        q = md.get("query", "")
                        if "pixelfarm_backlog_jobs" not in q:
                            ck.err(w, "prometheus trigger must query pixelfarm_backlog_jobs")
                        for m in models:
                            if not re.search(r'model=~"[^"]*\b' + re.escape(m) + r'\b', q):
                                ck.err(w, f"prometheus trigger query does not select model {m}")
                if queues and queues != {f"pixelfarm.jobs.{m}" for m in models}:
                    ck.err(w, f"rabbitmq queues {sorted(queues)} != pixelfarm.jobs.<model> for models {sorted(models)}")
            else:
                exprs = {e["key"]: set(e.get("values", [])) for m in so["spec"].get("metrics", [])
                         for e in (((m.get("external") or {}).get("metric") or {}).get("selector") or {}).get("matchExpressions", [])}
                if exprs.get("model") != models:
                    ck.err(w, f"External metric selector models {exprs.get('model')} != pool models {models}")
    if hooks:
        for name, job in by_kind.get("Job", {}).items():
            ann = job["metadata"].get("annotations") or {}
            if set((ann.get("helm.sh/hook") or "").split(",")) != {"pre-install", "pre-upgrade"}:
                ck.err(where, f"Job/{name}: must be a pre-install,pre-upgrade hook")
            if job["spec"]["template"]["spec"]["containers"][0].get("args") != ["migrate"]:
                ck.err(where, f"Job/{name}: must run `pixelfarm-scheduler migrate`")
            # Secrets the hook reads must exist before it: a hook Secret of lower weight,
            # or one that is not part of the release at all (existingSecret).
            for e in job["spec"]["template"]["spec"]["containers"][0].get("env", []):
                ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
                sec = by_kind.get("Secret", {}).get(ref)
                if sec is not None:
                    sann = sec["metadata"].get("annotations") or {}
                    if "pre-install" not in (sann.get("helm.sh/hook") or "") or \
                            int(sann.get("helm.sh/hook-weight", 0)) >= int(ann.get("helm.sh/hook-weight", 0)):
                        ck.err(where, f"Job/{name} reads Secret {ref}, which is not created before the hook runs")


def validate_crds(docs: list[dict], where: str, ck: Checker) -> int:
    n = 0
    for d in docs:
        key = (d["apiVersion"], d["kind"])
        if key not in CRD_SCHEMAS:
            continue
        n += 1
        schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
        v = jsonschema.Draft202012Validator(schema)
        for e in sorted(v.iter_errors(d), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in e.absolute_path) or "(root)"
            ck.err(where, f"{ident(d)}: {path}: {e.message}")
    return n


def kube_validate(files: list[Path], versions: list[str], ck: Checker) -> None:
    if not files:
        return
    for ver in versions:
        proc = subprocess.run(["kubernetes-validate", "-k", ver, "--strict", "--quiet", *map(str, files)],
                              capture_output=True, text=True)
        out = (proc.stdout + proc.stderr).strip()
        for line in out.splitlines():
            if "Couldn't find schema" in line or line.startswith("ERROR"):
                ck.err(f"kubernetes-validate {ver}", line)
        if proc.returncode != 0 and not any(ver in e for e in ck.errors):
            ck.err(f"kubernetes-validate {ver}", f"exit {proc.returncode}: {out[-2000:]}")


def write_docs(docs: list[dict], outdir: Path) -> tuple[list[Path], int]:
    outdir.mkdir(parents=True, exist_ok=True)
    builtin = []
    for i, d in enumerate(docs):
        if (d["apiVersion"], d["kind"]) in CRD_SCHEMAS:
            continue
        p = outdir / f"{i:03d}-{d['kind'].lower()}-{d['metadata'].get('name', 'x')}.yaml"
        p.write_text(yaml.safe_dump(d, sort_keys=False))
        builtin.append(p)
    return builtin, len(docs) - len(builtin)


def check_monitors(docs: list[dict], where: str, ck: Checker) -> None:
    """A ServiceMonitor of a scheduler serving TLS scrapes over HTTPS."""
    tls = any(env_map(c).get("PIXELFARM__SCHEDULER__TLS__CERT_FILE")
              for d in docs if pod_spec(d) is not None for c in pod_spec(d).get("containers") or [])
    for d in docs:
        if d["kind"] != "ServiceMonitor":
            continue
        for e in d["spec"].get("endpoints", []):
            if (e.get("scheme") == "https") != tls or (tls and not e.get("tlsConfig")):
                ck.err(where, f"{ident(d)}: scheme {e.get('scheme', 'http')} "
                              f"(tlsConfig {'set' if e.get('tlsConfig') else 'unset'}) for a scheduler "
                              f"{'serving' if tls else 'without'} TLS")


def cmd_chart(a: argparse.Namespace, ck: Checker) -> list[Path]:
    import helm_python  # type: ignore

    chart_dir = Path(a.chart)
    chart = helm_python.Chart.load(str(chart_dir))
    builtin_all: list[Path] = []
    alerts = yaml.safe_load((chart_dir / "files" / "alerts.yaml").read_text())
    for vf in a.values:
        vf = Path(vf)
        where = f"chart[{vf.name}]"
        values = yaml.safe_load(vf.read_text()) or {}
        for kv in a.kube_version:
            report = helm_python.lint(str(chart_dir), values, strict=True, kube_version=f"v{kv}")
            for m in report.get("messages", []):
                if int(m.get("severity", 0)) >= 2:
                    ck.err(where, f"helm lint (k8s {kv}): {m.get('path')}: {m.get('error')}")
            for e in report.get("errors", []) or []:
                ck.err(where, f"helm lint (k8s {kv}): {e}")
        try:
            rendered = chart.render(values, name="pf", namespace="pixelfarm", is_install=True)
        except Exception as e:  # noqa: BLE001
            ck.err(where, f"render failed: {e}")
            continue
        docs = []
        for tname, text in sorted(rendered.items()):
            if tname.endswith("NOTES.txt"):
                continue
            docs += load_docs(text, f"{where} {tname}", ck)
        for d in docs:
            if d.get("metadata", {}).get("namespace") not in ("pixelfarm", None) and d["kind"] != "ConfigMap":
                ck.err(where, f"{ident(d)}: namespace must be the release namespace")
        n_before = len(ck.errors)
        check_set(docs, where, ck, hooks=True)
        check_monitors(docs, where, ck)
        found = ck.errors[n_before:]
        for want in (CHART_EXPECT.get(vf.name) or {}).get("findings", []):
            hits = [e for e in found if want in e]
            if not hits:
                ck.err(where, f"expected finding not reported: {want}")
            for e in hits:
                print(f"  {where}: expected finding: {e}")
                ck.errors.remove(e)
        ncrd = validate_crds(docs, where, ck)
        builtin, _ = write_docs(docs, Path(a.out) / vf.stem)
        builtin_all += builtin
        counts: dict[str, int] = {}
        for d in docs:
            counts[d["kind"]] = counts.get(d["kind"], 0) + 1
        exp = CHART_EXPECT.get(vf.name)
        if exp is None:
            ck.err(where, "no expectations for this ci values file in deploy/checks/validate.py CHART_EXPECT")
        else:
            if exp.get("scheduler_tls") and not any(
                    env_map(c).get("PIXELFARM__SCHEDULER__TLS__CERT_FILE")
                    for d in docs if pod_spec(d) is not None for c in pod_spec(d).get("containers") or []):
                ck.err(where, "expected a scheduler serving TLS, rendered none")
            for kind, n in exp.items():
                if kind in ("findings", "scheduler_tls"):
                    continue
                if kind == "absent":
                    for k in n:
                        if counts.get(k):
                            ck.err(where, f"expected no {k}, rendered {counts[k]}")
                elif counts.get(kind, 0) != n:
                    ck.err(where, f"expected {n} {kind}, rendered {counts.get(kind, 0)}")
        for d in docs:
            if d["kind"] == "PrometheusRule" and d["spec"] != alerts:
                ck.err(where, "PrometheusRule spec differs from files/alerts.yaml")
        print(f"  {where}: {len(docs)} objects ({ncrd} custom resources) "
              + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for label, bad in CHART_MUST_FAIL.items():
        try:
            chart.render(bad, name="pf", namespace="pixelfarm", is_install=True)
        except Exception:  # noqa: BLE001
            continue
        ck.err("chart", f"render with invalid values ({label}) should fail but succeeded")
    print(f"  chart: {len(CHART_MUST_FAIL)} invalid value sets correctly refused")
    return builtin_all


def cmd_manifests(a: argparse.Namespace, ck: Checker) -> list[Path]:
    builtin_all: list[Path] = []
    for idx, f in enumerate(a.files):
        f = Path(f)
        where = f"manifests[{f.name}]"
        docs = load_docs(f.read_text(), where, ck)
        if not docs:
            ck.err(where, "no objects")
        if a.files_only:
            for d in docs:
                if pod_spec(d) is not None:
                    check_workload(d, where, ck)
        else:
            check_set(docs, where, ck)
        ncrd = validate_crds(docs, where, ck)
        builtin, _ = write_docs(docs, Path(a.out) / f"{idx:02d}-{f.stem}")
        builtin_all += builtin
        print(f"  {where}: {len(docs)} objects ({ncrd} custom resources)")
    return builtin_all


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("chart")
    c.add_argument("chart")
    c.add_argument("values", nargs="+")
    m = sub.add_parser("manifests")
    m.add_argument("files", nargs="+")
    m.add_argument("--files-only", action="store_true",
                   help="files are single manifests, not a rendered set: skip cross-object checks")
    for s in (c, m):
        s.add_argument("--out", required=True)
        s.add_argument("--kube-version", action="append", default=None)
    a = p.parse_args()
    a.kube_version = a.kube_version or ["1.30.0"]
    ck = Checker()
    builtin = cmd_chart(a, ck) if a.cmd == "chart" else cmd_manifests(a, ck)
    kube_validate(builtin, a.kube_version, ck)
    if ck.errors:
        print(f"FAILED: {len(ck.errors)} problem(s):", file=sys.stderr)
        for e in ck.errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"  OK: {len(builtin)} built-in objects valid for Kubernetes {', '.join(a.kube_version)} (strict)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
