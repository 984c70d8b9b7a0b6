#!/usr/bin/env python3
"""Load every shipped configuration through the real binaries (used by scripts/check-deploy).

  load_configs.py --bin-dir DIR [--repo-config DIR] [--layer-files FILE...]
                  [--rendered NAME=PATH...] [--own-key NAME...] [--self-test]

Each case runs `pixelfarm-scheduler check-config` and/or `pixelfarm-worker check-config`: the
binaries load their settings exactly as at start (PIXELFARM_CONFIG_DIR, PIXELFARM_ENV,
PIXELFARM__* variables, unknown keys refused) and run every check they make before connecting
(the worker: its tunables, the renderer and the model registry file, without loading weights),
connecting to nothing. Any failure fails the run.

  --repo-config DIR   every DIR/<env>.yaml layered on DIR/base.yaml, both binaries (the developer
                      setup; it may bootstrap API keys).
  --rendered N=PATH   rendered manifests (a multi-document file, or a folder of them: kustomize
                      output, the chart rendered per values file). For every scheduler, migrate
                      and worker container: a scratch root laid out as the container sees it --
                      the image's files and ENV (from deploy/docker/<binary>.Dockerfile's final
                      stage), each ConfigMap and Secret volume mounted at its mountPath (its
                      items, or all its keys), emptyDirs -- and the container's env (values,
                      ConfigMap and Secret keys from the same render, a placeholder for a Secret
                      created out of band, the pod name for a fieldRef); then the binary's
                      check-config from the image's WORKDIR. A Secret volume of a Secret created
                      out of band holds SECRET_FILES' test files where it has an entry (the
                      TEST ONLY content-credentials pair for pixelfarm-c2pa, so a worker proves
                      its content_credentials name the mounted files), else nothing.
                      A scheduler container must bootstrap no API key.
  --own-key N...      renders (names given to --rendered) whose every worker must sign content
                      credentials with a mounted key, not the TEST ONLY development key.
  --layer-files F...  without kustomize: each config layer F (PIXELFARM_ENV=<stem>) on the
                      image's files, both binaries; model registries (registry*.yaml) through a
                      diffusion worker that serves every model they list.
  --image-defaults    each image alone (no mounts, no env beyond its own): the scheduler must
                      bootstrap no API key -- config/local.yaml's dev-key stays out of images.
  --self-test         the check must reject a layer with worker.max_attempts, an image whose
                      files bootstrap an API key, a worker whose content_credentials name files
                      no volume mounts (and pass it with pixelfarm-c2pa mounted there), and,
                      under --own-key, a worker that signs with the development key.
"""
from __future__ import annotations

import argparse
import base64
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BINARIES = {"scheduler": "pixelfarm-scheduler", "worker": "pixelfarm-worker"}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
# What an out-of-band Secret (existingSecret, `kubectl create secret`) holds, by variable.
PLACEHOLDERS = {
    "PIXELFARM__DATABASE__URL": "postgres://pixelfarm:secret@postgres:5432/pixelfarm",
    "PIXELFARM__BROKER__URL": "amqp://pixelfarm:secret@rabbitmq:5672/%2f",
}
# What an out-of-band Secret mounted as a volume holds, by Secret name and key: a file of the
# repository (test material only; the real one is made with `kubectl create secret`).
CREDENTIALS = REPO / "services" / "image" / "credentials"  # README.md there: TEST ONLY
SECRET_FILES = {
    "pixelfarm-c2pa": {"signer.pem": CREDENTIALS / "cert-chain.pem", "signer.key": CREDENTIALS / "key.pem"},
}
NO_KEYS = "0 bootstrap api key(s)"
DEV_KEY = "TEST ONLY development key"


class Image:
    """Files, ENV and WORKDIR of a Dockerfile's final stage (COPY from the build context only)."""

    def __init__(self, dockerfile: Path) -> None:
        self.files: dict[str, Path] = {}  # container path -> repo file
        self.env: dict[str, str] = {}
        self.workdir = "/"
        lines, cur = [], ""
        for raw in dockerfile.read_text().splitlines():
            if raw.lstrip().startswith("#"):
                continue
            cur += raw.rstrip("\\").strip() + " "
            if not raw.rstrip().endswith("\\"):
                lines.append(cur.strip())
                cur = ""
        stage: list[str] = []
        for line in lines:
            if line.upper().startswith("FROM "):
                stage = []
            stage.append(line)
        for line in stage:
            word, _, rest = line.partition(" ")
            word = word.upper()
            if word == "WORKDIR":
                self.workdir = rest.strip()
            elif word == "ENV":
                for kv in shlex.split(rest):
                    k, _, v = kv.partition("=")
                    self.env[k] = v
            elif word == "COPY" and "--from=" not in rest:
                args = [a for a in shlex.split(rest) if not a.startswith("--")]
                *srcs, dest = args
                for src in srcs:
                    self._copy(REPO / src, dest, dest.endswith("/") or len(srcs) > 1)

    def _copy(self, src: Path, dest: str, into_dir: bool) -> None:
        if src.is_dir():
            for f in sorted(p for p in src.rglob("*") if p.is_file()):
                self.files[str(Path(dest) / f.relative_to(src))] = f
        else:
            self.files[str(Path(dest) / src.name) if into_dir else dest] = src


class Runner:
    def __init__(self, bin_dir: Path, scratch: Path) -> None:
        self.bins = {k: (bin_dir / v).resolve() for k, v in BINARIES.items()}
        for b in self.bins.values():
            if not b.is_file():
                sys.exit(f"load_configs: {b} is missing (cargo build -p pixelfarm-scheduler -p pixelfarm-worker)")
        self.images = {k: Image(REPO / "deploy" / "docker" / f"{k}.Dockerfile") for k in BINARIES}
        self.scratch = scratch
        self.failures: list[str] = []
        self.cases = 0

    def run(self, label: str, binary: str, env: dict[str, str], cwd: Path,
            no_keys: bool = False, own_key: bool = False, expect_refusal: str = "") -> tuple[bool, str]:
        """check-config of `binary`; records a failure unless it passes (and, with `no_keys`,
        bootstraps no API key; with `own_key`, a worker signs with a configured key) -- or, with
        `expect_refusal`, unless it is refused with that text in the output."""
        self.cases += 1
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn", **env}
        p = subprocess.run([str(self.bins[binary]), "check-config"], env=full, cwd=cwd,
                           capture_output=True, text=True, timeout=60)
        out = (p.stdout + p.stderr).strip()
        ok = p.returncode == 0
        why = "" if ok else f"exit {p.returncode}"
        if ok and no_keys and binary == "scheduler" and NO_KEYS not in p.stdout:
            ok, why = False, "a container config bootstraps an API key (scheduler.tenants[].api_keys)"
        if ok and own_key and binary == "worker" and DEV_KEY in p.stdout:
            ok, why = False, (f"the worker signs with the {DEV_KEY} (kustomize: components/content-credentials"
                              " mounts one; the chart: contentCredentials.existingSecret)")
        head = f"{label}: {BINARIES[binary]} check-config"
        if expect_refusal:
            last = out.splitlines()[-1] if out else ""
            if ok or expect_refusal not in out:
                print(f"  FAIL {head}: accepted, or refused without `{expect_refusal}`\n         {last}")
                self.failures.append(f"{head}: not refused as it must be ({expect_refusal})")
            else:
                print(f"  ok   {head}: refused as it must be\n         {last}")
            return ok, out
        if ok:
            print(f"  ok   {head}")
            for line in p.stdout.splitlines():
                if line.startswith(("warning:", "settings ok", "worker.content_credentials", "worker.registry")) or "api key" in line:
                    print(f"         {line}")
        else:
            print(f"  FAIL {head}: {why}\n" + "\n".join("         " + l for l in out.splitlines()))
            self.failures.append(f"{head}: {why}: {out.splitlines()[-1] if out else ''}")
        return ok, out

    def root_for_image(self, label: str, binary: str) -> Path:
        root = Path(tempfile.mkdtemp(prefix="root-", dir=self.scratch))
        for dest, src in self.images[binary].files.items():
            t = root / dest.lstrip("/")
            t.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, t)
        (root / self.images[binary].workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        return root

    def in_root(self, root: Path, env: dict[str, str]) -> dict[str, str]:
        """Absolute paths in variables point into the scratch root."""
        return {k: str(root / v.lstrip("/")) if v.startswith("/") else v for k, v in env.items()}

    # ------------------------------------------------------------------ cases
    def repo_config(self, d: Path) -> None:
        d = d.resolve()
        envs = sorted(p.stem for p in d.glob("*.yaml") if p.name != "base.yaml")
        for env in envs:
            for binary in BINARIES:
                self.run(f"{d.relative_to(REPO)}/{env}.yaml on base.yaml", binary,
                         {"PIXELFARM_CONFIG_DIR": str(d), "PIXELFARM_ENV": env}, REPO)

    def image_defaults(self) -> None:
        for binary, img in self.images.items():
            root = self.root_for_image("image", binary)
            self.run(f"{binary} image alone (env from its Dockerfile)", binary,
                     self.in_root(root, img.env), root / img.workdir.lstrip("/"), no_keys=True)

    def layer_files(self, files: list[Path]) -> None:
        for f in files:
            rel = f.resolve().relative_to(REPO)
            text = f.read_text()
            if f.name.startswith("registry"):
                reg = yaml.safe_load(text) or {}
                models = ",".join(sorted((reg.get("models") or {}).keys())) or "test"
                root = self.root_for_image(str(rel), "worker")
                shutil.copy(f, root / "registry.yaml")
                env = {**self.in_root(root, self.images["worker"].env),
                       "PIXELFARM__WORKER__RENDERER": "diffusion",
                       "PIXELFARM__WORKER__REGISTRY": str(root / "registry.yaml"),
                       "PIXELFARM__WORKER__MODELS": models}
                self.run(f"{rel} (diffusion worker serving {models})", "worker", env,
                         root / self.images["worker"].workdir.lstrip("/"))
                continue
            for binary in BINARIES:
                img = self.images[binary]
                root = self.root_for_image(str(rel), binary)
                cfg_dir = Path(img.env.get("PIXELFARM_CONFIG_DIR", img.workdir + "/config"))
                t = root / str(cfg_dir).lstrip("/") / f.name
                t.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, t)
                env = {**self.in_root(root, img.env), "PIXELFARM_ENV": f.stem}
                self.run(f"{rel} on the {binary} image", binary, env,
                         root / img.workdir.lstrip("/"), no_keys=True)

    def rendered(self, name: str, path: Path, own_key: bool = False) -> None:
        files = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
        docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict)]
        cms = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
        secrets: dict[str, dict[str, str]] = {}
        for d in docs:
            if d.get("kind") == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()}
                data.update(d.get("stringData") or {})
                secrets[d["metadata"]["name"]] = data
        found = 0
        for d in docs:
            if d.get("kind") not in WORKLOADS:
                continue
            spec = d["spec"]["template"]["spec"]
            comp = (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component", "")
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            for c in spec.get("containers") or []:
                binary = {"scheduler": "scheduler", "migrate": "scheduler", "worker": "worker"}.get(comp)
                if binary is None:
                    binary = next((b for b in BINARIES if b in str(c.get("image", ""))), None)
                if binary is None:
                    continue
                found += 1
                label = f"{name} {d['kind']}/{d['metadata']['name']} container {c['name']}"
                self.container(label, binary, c, volumes, cms, secrets, d["metadata"]["name"], own_key)
        if not found:
            self.failures.append(f"{name}: no scheduler or worker container in {path}")

    @staticmethod
    def volume_files(v: dict, cms: dict, secrets: dict) -> dict[str, str] | str | None:
        """What a ConfigMap or Secret volume shows, by path in it: the rendered object's keys,
        or SECRET_FILES' for a Secret created out of band; None for an emptyDir or a Secret
        whose content is unknown here (laid out empty); a string saying what is wrong."""
        if "configMap" in v:
            src, kind, name = v["configMap"], "ConfigMap", v["configMap"]["name"]
            data = cms.get(name)
            if data is None:
                return f"ConfigMap {name} is not in the render"
        elif "secret" in v:
            src, kind, name = v["secret"], "Secret", v["secret"]["secretName"]
            data = secrets.get(name)
            if data is None and name in SECRET_FILES:
                data = {k: f.read_text() for k, f in SECRET_FILES[name].items()}
            if data is None:
                return None
        else:
            return None
        items = {i["path"]: i["key"] for i in src.get("items") or []} or {k: k for k in data}
        missing = sorted(k for k in items.values() if k not in data)
        if missing:
            return f"{kind} {name} has no key {', '.join(missing)}"
        return {p: data[k] for p, k in items.items()}

    def container(self, label: str, binary: str, c: dict, volumes: dict, cms: dict,
                  secrets: dict, pod: str, own_key: bool = False, expect_refusal: str = "") -> None:
        img = self.images[binary]
        root = self.root_for_image(label, binary)
        for m in c.get("volumeMounts") or []:
            target = root / m["mountPath"].lstrip("/")
            files = self.volume_files(volumes.get(m["name"]) or {}, cms, secrets)
            if isinstance(files, dict) and m.get("subPath") and m["subPath"] not in files:
                files = f"subPath {m['subPath']} is not in it"
            if isinstance(files, str):
                self.failures.append(f"{label}: volume {m['name']}: {files}")
                return
            if files is None:
                target.mkdir(parents=True, exist_ok=True)
            elif m.get("subPath"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(files[m["subPath"]])
            else:
                if target.exists():
                    shutil.rmtree(target)  # a volume hides what the image has there
                for p, text in files.items():
                    (target / p).parent.mkdir(parents=True, exist_ok=True)
                    (target / p).write_text(text)
        env = dict(img.env)
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
                continue
            vf = e.get("valueFrom") or {}
            if "fieldRef" in vf:
                env[e["name"]] = f"{pod}-0"
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                ref = vf.get("secretKeyRef") or vf["configMapKeyRef"]
                source = (secrets if "secretKeyRef" in vf else cms).get(ref["name"])
                if source is not None and ref["key"] in source:
                    env[e["name"]] = source[ref["key"]]
                elif source is None and not ref.get("optional"):
                    env[e["name"]] = PLACEHOLDERS.get(e["name"], "placeholder")
                elif not ref.get("optional"):
                    self.failures.append(f"{label}: {e['name']}: key {ref['key']} is not in {ref['name']}")
                    return
        self.run(label, binary, self.in_root(root, env), root / img.workdir.lstrip("/"), no_keys=True,
                 own_key=own_key, expect_refusal=expect_refusal)

    def self_test(self) -> None:
        """The check must refuse what the binaries would not start with."""
        bad = Path(tempfile.mkdtemp(prefix="bad-", dir=self.scratch))
        shutil.copy(REPO / "config" / "base.yaml", bad / "base.yaml")
        env = {"PIXELFARM_CONFIG_DIR": str(bad), "PIXELFARM_ENV": "kubernetes"}
        (bad / "kubernetes.yaml").write_text("worker:\n  max_attempts: 3\n")
        for binary in BINARIES:
            self.run("self-test: worker.max_attempts", binary, env, bad,
                     expect_refusal="unknown field `max_attempts`")
        (bad / "kubernetes.yaml").write_text("scheduler:\n  tenants: [{name: dev, api_keys: [dev-key]}]\n")
        self.run("self-test: a bootstrap API key in a container config", "scheduler", env, bad,
                 no_keys=True, expect_refusal="1 bootstrap api key(s)")
        # A worker container as components/content-credentials makes it, but for the mount.
        c = {"env": [
            {"name": "PIXELFARM__WORKER__CONTENT_CREDENTIALS__CERT_FILE", "value": "/etc/pixelfarm/c2pa/signer.pem"},
            {"name": "PIXELFARM__WORKER__CONTENT_CREDENTIALS__KEY_FILE", "value": "/etc/pixelfarm/c2pa/signer.key"},
        ]}
        self.container("self-test: content_credentials files no volume mounts", "worker", c, {}, {}, {},
                       "self-test", expect_refusal="worker.content_credentials.cert_file: cannot read")
        mounted = {**c, "volumeMounts": [{"name": "c2pa", "mountPath": "/etc/pixelfarm/c2pa", "readOnly": True}]}
        self.container("self-test: the same with Secret pixelfarm-c2pa mounted there", "worker", mounted,
                       {"c2pa": {"secret": {"secretName": "pixelfarm-c2pa"}}}, {}, {}, "self-test", own_key=True)
        self.container("self-test: --own-key, no key configured", "worker", {}, {}, {}, {}, "self-test",
                       own_key=True, expect_refusal=DEV_KEY)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", required=True, type=Path)
    p.add_argument("--repo-config", type=Path)
    p.add_argument("--image-defaults", action="store_true")
    p.add_argument("--layer-files", nargs="*", type=Path, default=[])
    p.add_argument("--rendered", nargs="*", default=[], metavar="NAME=PATH")
    p.add_argument("--own-key", nargs="*", default=[], metavar="NAME")
    p.add_argument("--self-test", action="store_true")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="load-configs-") as scratch:
        r = Runner(a.bin_dir, Path(scratch))
        if a.self_test:
            r.self_test()
        if a.repo_config:
            r.repo_config(a.repo_config)
        if a.image_defaults:
            r.image_defaults()
        r.layer_files(a.layer_files)
        names = set()
        for spec in a.rendered:
            name, _, path = spec.partition("=")
            names.add(name)
            r.rendered(name, Path(path), own_key=name in a.own_key)
        r.failures += [f"--own-key {n}: no --rendered {n}" for n in sorted(set(a.own_key) - names)]
    if r.failures:
        print(f"FAILED: {len(r.failures)} configuration(s) do not load:", file=sys.stderr)
        for f in r.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print(f"  OK: {r.cases} check-config runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
