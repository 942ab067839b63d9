# SPDX-License-Identifier: Apache-2.0
"""Checks the deployment artifacts (docker/, deploy/) with what runs here, without a container
engine or a cluster. `make check-deploy` runs it (and `make test` runs that):

    /usr/bin/python3 tests/deploy/check_deploy.py --build build

1. Every YAML manifest parses (yaml.safe_load_all); Kubernetes objects have apiVersion, kind and a
   name; the kustomization lists files that exist; ports, port names, labels, ConfigMap, Secret and
   claim names agree across Deployment, Service, PDB, ServiceMonitor and the config files; compose
   services, build targets, mounts and ports agree with the Dockerfile and docker/cpmd.json.
2. The Dockerfile builds the way the project does: its Debian/Ubuntu packages come from
   deploy/debian-packages.txt through docker/packages.sh (no package of that list is named in the
   Dockerfile), it builds with `make -o deps build` (so the CMake configure line is the Makefile's;
   checked with `make -n`), its extra -D options are options of CMakeLists.txt, its COPY sources
   exist and .dockerignore leaves them in, and docker/stage-runtime.sh stages a real build of this
   machine (binaries start, every library resolves to a package).
3. docker/fetch-model.sh leaves a complete checkpoint alone, and downloads into and then refuses an
   incomplete one (missing file, truncated shard), with stub CLIs recording the command line.
4. promtool check config / check rules / test rules; systemd-analyze verify of the unit.
5. A real cpmd (the build's, tiny random checkpoint from `cpm-tool mkmodel`) starts with each
   shipped config file; the health services named by the Kubernetes probes and the Dockerfile's
   HEALTHCHECK answer SERVING; OCR requests, adapter loads/evictions/unloads and a short fine-tuning
   job (4 examples of tests/data/train/fit32 uploaded, 4 steps, run to SUCCEEDED) fill its metrics.
   Every metric the dashboard and the alert rules query exists in its scrape (or is listed below
   with its reason); every dashboard query returns data from a real Prometheus scraping it (except
   those that use only metrics listed below); the alert rules load there without errors and none
   fires for the healthy daemon.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Metrics whose family cpmd declares but fills only on a CUDA device (the CPU scrape here has the
# `# TYPE` line and no samples). Checked with samples on a GPU host by tests/deploy/gpu_image_stage.sh.
CUDA_ONLY = {"cpm_gpu_memory_allocated_bytes", "cpm_gpu_memory_reserved_bytes", "cpm_gpu_memory_total_bytes"}
# Metrics the alert rules or the dashboard use that cpmd does not export yet, each with what it waits
# for: a rule stays silent and a dashboard query that uses only these metrics may return nothing
# until cpmd exports them. deploy/README.md must name each, and each must be used. Once the daemon
# declares one (its `# TYPE` line is in the scrape), this check fails until it is removed here and
# from the README, and the exercise in check_live must then give it samples. Empty since cpmd
# exports the cpm_train_* families (server/training_metrics.h), which the exercise fills with a
# fine-tuning job run through cpm.v1.Training.
WAITING = {}
# Series Prometheus makes for every target itself; fine in alert rules.
SYNTHETIC = {"up"}
# Files of deploy/kubernetes deliberately kept out of the kustomization (its header says why).
KUSTOMIZE_EXCLUDED = {"secret.yaml", "servicemonitor.yaml"}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"  FAIL: {msg}")


def ok(msg):
    print(f"  ok: {msg}")


def path(*parts):
    return os.path.join(ROOT, *parts)


def read(*parts):
    with open(path(*parts)) as f:
        return f.read()


def port_of(address):
    return int(address.rsplit(":", 1)[1])


# ------------------------------------------------------------------------------------------------
# 1. manifests

def yaml_files():
    out = []
    for top in ("docker", "deploy"):
        for dirpath, _, files in os.walk(path(top)):
            out += [os.path.join(dirpath, f) for f in files if f.endswith((".yml", ".yaml"))]
    return sorted(out)


def load_yaml_docs(p):
    with open(p) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def check_yaml():
    print("YAML manifests")
    docs = {}
    for p in yaml_files():
        rel = os.path.relpath(p, ROOT)
        try:
            docs[rel] = load_yaml_docs(p)
        except yaml.YAMLError as e:
            fail(f"{rel}: not valid YAML: {e}")
            continue
        if not docs[rel]:
            fail(f"{rel}: empty")
    ok(f"{len(docs)} files parse with yaml.safe_load_all")
    for rel, ds in docs.items():
        if not rel.startswith("deploy/kubernetes/") or rel.endswith("kustomization.yaml"):
            continue
        for d in ds:
            if not (isinstance(d, dict) and d.get("apiVersion") and d.get("kind")
                    and d.get("metadata", {}).get("name")):
                fail(f"{rel}: a document without apiVersion, kind or metadata.name")
    return docs


def daemon_config_keys():
    src = read("server", "config.cpp")
    keys = set(re.findall(r'\{"(\w+)",\s*(?:nullptr|&DaemonConfig::)', src))
    if len(keys) < 5:
        fail("server/config.cpp: could not read the table of config keys")
    readme = read("deploy", "README.md")
    for k in sorted(keys):
        if f"| `{k}` / `--{k.replace('_', '-')}` |" not in readme:
            fail(f"deploy/README.md's configuration reference lacks the key {k} (server/config.cpp has it)")
    return keys


def check_config_json(name, text, keys):
    try:
        cfg = json.loads(text)
    except ValueError as e:
        fail(f"{name}: not valid JSON: {e}")
        return None
    unknown = sorted(set(cfg) - keys)
    if unknown:
        fail(f"{name}: keys cpmd does not know: {unknown} (server/config.cpp knows {sorted(keys)})")
    return cfg


def by_kind(docs, kind, name=None):
    for rel, ds in docs.items():
        if rel.startswith("deploy/kubernetes/"):
            for d in ds:
                if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name):
                    return d
    return None


def check_kubernetes(docs, keys):
    print("Kubernetes manifests")
    kdir = path("deploy", "kubernetes")
    kust = load_yaml_docs(os.path.join(kdir, "kustomization.yaml"))[0]
    listed = set(kust.get("resources", []))
    for r in sorted(listed):
        if not os.path.isfile(os.path.join(kdir, r)):
            fail(f"kustomization.yaml lists {r}, which does not exist")
    present = {f for f in os.listdir(kdir) if f.endswith(".yaml") and f != "kustomization.yaml"}
    for f in sorted(present - listed - KUSTOMIZE_EXCLUDED):
        fail(f"deploy/kubernetes/{f} is neither in kustomization.yaml nor a documented exclusion")
    ok(f"kustomization lists {len(listed)} files that exist; left out on purpose: {sorted(KUSTOMIZE_EXCLUDED)}")

    dep = by_kind(docs, "Deployment", "cpmd")
    svc = by_kind(docs, "Service", "cpmd")
    cm = by_kind(docs, "ConfigMap", "cpmd-config")
    pdb = by_kind(docs, "PodDisruptionBudget")
    smon = by_kind(docs, "ServiceMonitor")
    secret = by_kind(docs, "Secret")
    if not all([dep, svc, cm, pdb, smon, secret]):
        fail("deploy/kubernetes lacks one of Deployment, Service, ConfigMap, PDB, ServiceMonitor, Secret")
        return None
    cfg = check_config_json("ConfigMap cpmd-config cpmd.json", cm["data"]["cpmd.json"], keys)
    if cfg is None:
        return None
    grpc_port, metrics_port = port_of(cfg["listen"]), port_of(cfg["metrics_listen"])

    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    c = next(c for c in spec["containers"] if c["name"] == "cpmd")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if ports.get("grpc") != grpc_port or ports.get("metrics") != metrics_port:
        fail(f"container ports {ports} differ from the ConfigMap's listen/metrics_listen "
             f"({grpc_port}, {metrics_port})")
    probes = {}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        g = c.get(kind, {}).get("grpc")
        if not g:
            fail(f"{kind} is not a gRPC health probe")
            continue
        if g["port"] != grpc_port:
            fail(f"{kind} probes port {g['port']}, cpmd listens on {grpc_port}")
        probes[kind] = g.get("service", "")
    ann = pod["metadata"].get("annotations", {})
    if ann.get("prometheus.io/port") != str(metrics_port) or ann.get("prometheus.io/path") != "/metrics":
        fail(f"prometheus.io annotations {ann} do not name port {metrics_port} and /metrics")
    if c["resources"]["limits"].get("nvidia.com/gpu") != 1:
        fail("the cpmd container does not ask for exactly one nvidia.com/gpu")
    for arg_i, a in enumerate(c.get("args", [])):
        if a == "--config":
            cfg_path = c["args"][arg_i + 1]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    if not cfg_path.startswith(mounts.get("config", "?") + "/"):
        fail(f"--config {cfg_path} is not inside the ConfigMap mount {mounts.get('config')}")
    if not cfg["data_dir"].startswith(mounts.get("data", "?")):
        fail(f"data_dir {cfg['data_dir']} is not on the data claim ({mounts.get('data')})")
    if not cfg["model"].startswith(mounts.get("models", "?") + "/"):
        fail(f"model {cfg['model']} is not on the models claim ({mounts.get('models')})")
    init = spec["initContainers"][0]
    env = {e["name"]: e.get("value") for e in init["env"]}
    if env.get("CPM_MODEL_DIR") != cfg["model"]:
        fail(f"the init container fills {env.get('CPM_MODEL_DIR')}, cpmd loads {cfg['model']}")
    vols = {v["name"]: v for v in spec["volumes"]}
    if vols["config"]["configMap"]["name"] != cm["metadata"]["name"]:
        fail("the config volume does not name the ConfigMap")
    if vols["secrets"]["secret"]["secretName"] != secret["metadata"]["name"]:
        fail("the secrets volume does not name the Secret")
    claims = {d["metadata"]["name"] for d in docs.get("deploy/kubernetes/pvc.yaml", [])}
    for v in ("data", "models"):
        if vols[v]["persistentVolumeClaim"]["claimName"] not in claims:
            fail(f"volume {v} names a claim that pvc.yaml does not define")
    if spec["securityContext"].get("runAsUser") != 10001 or not spec["securityContext"].get("runAsNonRoot"):
        fail("the pod does not run as the image's non-root user 10001")

    for sp in svc["spec"]["ports"]:
        if sp["targetPort"] not in ports:
            fail(f"Service port {sp['name']} targets {sp['targetPort']}, not a container port name")
    if not set(svc["spec"]["selector"].items()) <= set(labels.items()):
        fail("the Service selector does not select the pod")
    if not set(pdb["spec"]["selector"]["matchLabels"].items()) <= set(labels.items()):
        fail("the PDB selector does not select the pod")
    if not set(smon["spec"]["selector"]["matchLabels"].items()) <= set(svc["metadata"]["labels"].items()):
        fail("the ServiceMonitor does not select the Service")
    if {e["port"] for e in smon["spec"]["endpoints"]} - {p["name"] for p in svc["spec"]["ports"]}:
        fail("the ServiceMonitor names a port the Service does not have")
    images = {i["name"] for i in kust.get("images", [])}
    for con in spec["containers"] + spec["initContainers"]:
        if con["image"] not in images:
            fail(f"container {con['name']} image {con['image']} is not in the kustomization's images")
    ok(f"ports {grpc_port}/{metrics_port}, probes {probes}, names and selectors agree")

    kubectl = shutil.which("kubectl")
    if kubectl:
        r = subprocess.run([kubectl, "kustomize", kdir], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"kubectl kustomize: {r.stderr.strip()}")
        else:
            kinds = [d["kind"] for d in yaml.safe_load_all(r.stdout) if d]
            ok(f"kubectl kustomize renders {len(kinds)} objects: {', '.join(kinds)}")
    else:
        print("  skipped: kubectl kustomize (no kubectl here; not part of deploy/debian-packages.txt)")
    return {"config": cfg, "probes": probes}


def dockerfile_stages(text):
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M))


def check_compose(docs, keys):
    print("compose")
    compose = docs["docker/compose.yaml"][0]
    dockerfile = read("docker", "Dockerfile")
    stages = dockerfile_stages(dockerfile)
    img_cfg = check_config_json("docker/cpmd.json", read("docker", "cpmd.json"), keys)
    services = compose["services"]
    named_volumes = set(compose.get("volumes", {}))
    for name, s in services.items():
        b = s.get("build")
        if b:
            if os.path.normpath(os.path.join(path("docker"), b["context"])) != ROOT:
                fail(f"compose service {name} does not build from the repository root")
            if b["dockerfile"] != "docker/Dockerfile" or b.get("target") not in stages:
                fail(f"compose service {name} builds target {b.get('target')}, stages are {sorted(stages)}")
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                if not os.path.exists(os.path.normpath(os.path.join(path("docker"), src))):
                    fail(f"compose service {name} mounts {src}, which does not exist")
            elif src not in named_volumes:
                fail(f"compose service {name} mounts volume {src}, not declared")
    cpmd = services["cpmd"]
    grpc_port = port_of(img_cfg["listen"])
    if not any(p.endswith(f":{grpc_port}") for p in cpmd.get("ports", [])):
        fail(f"compose does not publish cpmd's gRPC port {grpc_port}")
    devs = cpmd["deploy"]["resources"]["reservations"]["devices"]
    if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devs):
        fail("compose reserves no NVIDIA GPU for cpmd")
    if services["model-fetch"]["environment"]["CPM_MODEL_DIR"] != img_cfg["model"]:
        fail("compose's model-fetch fills another directory than docker/cpmd.json's model")
    prom = load_yaml_docs(path("deploy", "prometheus", "prometheus.yml"))[0]
    targets = [t for sc in prom["scrape_configs"] if sc["job_name"] == "cpmd"
               for st in sc.get("static_configs", []) for t in st["targets"]]
    if f"cpmd:{port_of(img_cfg['metrics_listen'])}" not in targets:
        fail(f"deploy/prometheus/prometheus.yml does not scrape cpmd:{port_of(img_cfg['metrics_listen'])}")
    dash_prov = load_yaml_docs(path("deploy", "grafana", "provisioning", "dashboards", "cpmd.yaml"))[0]
    gm = [v for v in services["grafana"]["volumes"] if "cpmd-dashboard.json" in v][0]
    if not gm.split(":")[1].startswith(dash_prov["providers"][0]["options"]["path"] + "/"):
        fail("Grafana's dashboard provider does not read where compose mounts the dashboard")
    ok(f"services {sorted(services)}: build targets, mounts, ports and the scrape target agree")
    return img_cfg


# ------------------------------------------------------------------------------------------------
# 2. Dockerfile against the project's own scripts

def list_packages():
    out = []
    for line in read("deploy", "debian-packages.txt").splitlines():
        line = re.sub(r"#.*", "", line).strip()
        if line:
            out.append(line)
    return out


def dockerfile_instructions(text):
    """(instruction, argument) pairs with continuation lines joined."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        cur += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            instr, _, arg = cur.strip().partition(" ")
            out.append((instr.upper(), arg.strip()))
            cur = ""
    return out


def dockerignore_excludes(rel):
    pats = [p.strip() for p in read(".dockerignore").splitlines() if p.strip() and not p.startswith("#")]
    import fnmatch
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for p in pats:
            if p.startswith("!"):
                continue
            if fnmatch.fnmatch(prefix, p.lstrip("/")) or (p.startswith("**/") and fnmatch.fnmatch(parts[i - 1], p[3:])):
                return p
    return None


def check_dockerfile(build_dir, img_cfg):
    print("Dockerfile against the project's scripts")
    text = read("docker", "Dockerfile")
    instrs = dockerfile_instructions(text)
    runs = [a for i, a in instrs if i == "RUN"]
    pkgs = set(list_packages())

    # Packages: only through docker/packages.sh and the list.
    copies = [a for i, a in instrs if i == "COPY"]
    if not any("deploy/debian-packages.txt" in a and "docker/packages.sh" in a for a in copies):
        fail("the Dockerfile does not copy deploy/debian-packages.txt and docker/packages.sh")
    apt_runs = [r for r in runs if "apt-get install" in r]
    if not any("packages.sh" in r and "debian-packages.txt" in r for r in apt_runs):
        fail("no apt-get install of the Dockerfile takes its packages from docker/packages.sh")
    for r in apt_runs:
        words = set(re.findall(r"[A-Za-z0-9][A-Za-z0-9.+-]+", re.sub(r"\$\([^)]*\)", " ", r)))
        named = sorted(words & pkgs)
        if named:
            fail(f"the Dockerfile names packages of deploy/debian-packages.txt itself: {named}")
    m = re.search(r"packages\.sh\s+\S*debian-packages\.txt\s+([^)]*)\)", text)
    args = m.group(1).split() if m else []
    r = subprocess.run([path("docker", "packages.sh"), path("deploy", "debian-packages.txt"), *args],
                       capture_output=True, text=True)
    chosen = r.stdout.split()
    if r.returncode != 0:
        fail(f"docker/packages.sh {' '.join(args)}: {r.stderr.strip()}")
    else:
        need = {"cmake", "ninja-build", "libgrpc++-dev", "protobuf-compiler-grpc", "libabsl-dev",
                "libcivetweb-dev", "libsentencepiece-dev", "libopencv-dev", "libpng-dev"}
        if need - set(chosen):
            fail(f"the image's package selection lacks {sorted(need - set(chosen))}")
        if "libtorch-dev" in chosen:
            fail("the image would install Debian's CPU-only libtorch-dev")
        ok(f"apt installs {len(chosen)} packages of deploy/debian-packages.txt "
           f"({' '.join(args)}), none named in the Dockerfile")

    # Build: the Makefile's commands.
    build_run = [r for r in runs if "make " in r and " build" in r]
    if len(build_run) != 1 or "make -o deps build" not in build_run[0]:
        fail("the Dockerfile does not build with `make -o deps build`")
        return
    cm = re.search(r'CMAKE_ARGS="(.*?)" ', build_run[0])
    cmake_args = cm.group(1) if cm else ""
    options = set(re.findall(r"^option\((\w+)", read("CMakeLists.txt"), re.M))
    for d in re.findall(r"-D(\w+)=", cmake_args):
        if not (d in options or d.startswith("CMAKE_")):
            fail(f"CMAKE_ARGS sets -D{d}, which is no option() of CMakeLists.txt")
    concrete = re.sub(r"\$\(.*?\)\)?'\)", "/opt/torch/share/cmake", cmake_args)
    concrete = re.sub(r"\$\{\w+\}", "ON", concrete).replace("$(", "")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry = subprocess.run(["make", "--no-print-directory", "-n", "-o", "deps", "build", "BUILD=/build",
                          "JOBS=4", f"CMAKE_ARGS={concrete}"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    lines = [l for l in dry.stdout.splitlines() if l.strip()]
    makefile = read("Makefile")
    mk_cfg = re.search(r"^\t(cmake -S \. -B \$\(BUILD\) .*?)\$\(CMAKE_ARGS\)", makefile, re.M)
    if dry.returncode != 0 or "install-deps" in dry.stdout:
        fail(f"`make -n -o deps build` ran the installer or failed: {dry.stdout}{dry.stderr}")
    elif not mk_cfg or not lines or not lines[0].startswith(
            mk_cfg.group(1).replace("$(BUILD)", "/build").strip()):
        fail(f"the image's configure line {lines[:1]} is not the Makefile's")
    else:
        ok(f"the image configures with the Makefile's line: {lines[0]}")
    if "docker/stage-runtime.sh /build /stage" not in build_run[0]:
        fail("the Dockerfile does not stage the runtime with docker/stage-runtime.sh")

    # COPY sources exist and are in the build context.
    for a in copies:
        if "--from=" in a:
            continue
        srcs = [s for s in a.split()[:-1] if not s.startswith("--")]
        for s in srcs:
            if s == ".":
                continue
            if not os.path.exists(path(s)):
                fail(f"COPY {s}: no such file")
            excl = dockerignore_excludes(s)
            if excl:
                fail(f"COPY {s}: .dockerignore excludes it ({excl})")
    for must in ("build", "build-deploy", ".deps", "var"):
        if not dockerignore_excludes(must):
            fail(f".dockerignore lets {must}/ into the build context")

    # Runtime stage: user, volumes, ports, health check, config.
    rt = text[text.rindex("AS runtime"):]
    user = re.search(r"^USER\s+(\d+):(\d+)", rt, re.M)
    if not user or user.group(1) == "0":
        fail("the runtime stage does not run as a numeric non-root USER")
    expose = set(int(p) for p in re.search(r"^EXPOSE\s+(.*)$", rt, re.M).group(1).split())
    if expose != {port_of(img_cfg["listen"]), port_of(img_cfg["metrics_listen"])}:
        fail(f"EXPOSE {expose} differs from docker/cpmd.json's ports")
    vols = set(json.loads(re.search(r"^VOLUME\s+(\[.*\])", rt, re.M).group(1)))
    if img_cfg["data_dir"] not in vols or os.path.dirname(img_cfg["model"]) not in vols:
        fail(f"VOLUME {vols} does not cover data_dir and the model's directory")
    if "COPY docker/cpmd.json /etc/cpmd/cpmd.json" not in rt or '"/etc/cpmd/cpmd.json"' not in rt:
        fail("the runtime stage does not install and use docker/cpmd.json")
    ok(f"runtime stage: USER {user.group(0).split()[1] if user else '?'}, EXPOSE {sorted(expose)}, VOLUME {sorted(vols)}")

    # docker/stage-runtime.sh on this machine's build.
    with tempfile.TemporaryDirectory(prefix="cpm-stage-") as stage:
        r = subprocess.run([path("docker", "stage-runtime.sh"), build_dir, stage],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"docker/stage-runtime.sh on {build_dir}: {r.stderr.strip()}")
            return
        rp = open(os.path.join(stage, "opt/cpmd/share/runtime-packages.txt")).read().split()
        for want in ("libgrpc++1.51", "libprotobuf32", "libsentencepiece0", "libcivetweb1"):
            if not any(p.startswith(want) for p in rp):
                fail(f"stage-runtime.sh: runtime packages lack {want}: {rp}")
        v = subprocess.run([os.path.join(stage, "opt/cpmd/bin/cpmd"), "--version"], capture_output=True,
                           text=True)
        if v.returncode != 0:
            fail(f"the staged cpmd does not start: {v.stderr.strip()}")
        ok(f"stage-runtime.sh on {os.path.relpath(build_dir, ROOT)}: {len(rp)} runtime packages "
           f"({' '.join(rp)}); staged `{v.stdout.strip()}`")


# ------------------------------------------------------------------------------------------------
# 3. fetch-model.sh

def check_fetch_model(tiny):
    print("docker/fetch-model.sh")
    with tempfile.TemporaryDirectory(prefix="cpm-fetch-") as tmp:
        bindir = os.path.join(tmp, "bin")
        os.makedirs(bindir)
        calls = os.path.join(tmp, "calls")
        for cli in ("hf", "modelscope"):
            p = os.path.join(bindir, cli)
            with open(p, "w") as f:
                f.write(f'#!/bin/sh\necho "{cli} $*" >> {calls}\n')
            os.chmod(p, 0o755)
        model = os.path.join(tmp, "models", "MiniCPM-o-2_6")
        shutil.copytree(tiny, model)
        env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"], CPM_MODEL_DIR=model)
        script = path("docker", "fetch-model.sh")

        def run(**extra):
            if os.path.exists(calls):
                os.remove(calls)
            r = subprocess.run([script], env=dict(env, **extra), capture_output=True, text=True)
            made = open(calls).read().strip() if os.path.exists(calls) else ""
            return r, made

        r, made = run()
        if r.returncode != 0 or made:
            fail(f"a complete checkpoint: rc {r.returncode}, CLI called: {made!r} {r.stderr}")
        shard = sorted(f for f in os.listdir(model) if f.startswith("model-"))[1]
        with open(os.path.join(model, shard), "r+b") as f:
            f.truncate(os.path.getsize(os.path.join(model, shard)) - 64)
        os.remove(os.path.join(model, "tokenizer.json"))
        r, made = run(CPM_MODEL_REVISION="0123abc")
        want = f"hf download openbmb/MiniCPM-o-2_6 --local-dir {model} --revision 0123abc"
        if made != want:
            fail(f"Hugging Face download ran {made!r}, expected {want!r}")
        if r.returncode != 1 or f"{shard} is truncated" not in r.stderr or "tokenizer.json is missing" not in r.stderr:
            fail(f"an incomplete checkpoint after the download: rc {r.returncode}, {r.stderr!r}")
        r, made = run(CPM_MODEL_SOURCE="modelscope")
        want = f"modelscope download --model OpenBMB/MiniCPM-o-2_6 --local_dir {model}"
        if made != want:
            fail(f"ModelScope download ran {made!r}, expected {want!r}")
        ok("complete checkpoint: no download; truncated shard + missing file: the CLI runs "
           "(hf / modelscope, revision pinned) and the script exits 1 naming both")


# ------------------------------------------------------------------------------------------------
# 4. promtool, systemd

def check_promtool():
    print("promtool")
    pdir = path("deploy", "prometheus")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "cpmd-alerts.yml"],
                 ["test", "rules", "cpmd-alerts_test.yml"]):
        r = subprocess.run(["promtool", *args], cwd=pdir, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"promtool {' '.join(args)}:\n{r.stdout}{r.stderr}")
        else:
            ok(f"promtool {' '.join(args)}")


def check_systemd(build_dir, keys):
    print("systemd")
    unit = read("deploy", "systemd", "cpmd.service")
    check_config_json("deploy/systemd/cpmd.json", read("deploy", "systemd", "cpmd.json"), keys)
    m = re.search(r"^ExecStart=(\S+) --config (\S+)", unit, re.M)
    if not m or m.group(2) != "/etc/cpmd/cpmd.json":
        fail("cpmd.service: ExecStart is not `cpmd --config /etc/cpmd/cpmd.json`")
        return
    for want in ("Restart=on-failure", "User=cpmd", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "StateDirectory=cpmd"):
        if want not in unit:
            fail(f"cpmd.service lacks {want}")
    sa = shutil.which("systemd-analyze")
    if not sa:
        print("  skipped: systemd-analyze verify (no systemd here)")
        return
    with tempfile.TemporaryDirectory(prefix="cpm-unit-") as tmp:
        p = os.path.join(tmp, "cpmd.service")
        with open(p, "w") as f:  # the binary at its installed path does not exist here
            f.write(unit.replace(m.group(1), os.path.join(build_dir, "bin", "cpmd")))
        r = subprocess.run([sa, "verify", p], capture_output=True, text=True)
        if r.returncode != 0 or r.stderr.strip():
            fail(f"systemd-analyze verify: {r.stdout}{r.stderr}")
        else:
            ok("systemd-analyze verify (ExecStart pointed at the build's cpmd)")


# ------------------------------------------------------------------------------------------------
# 5. a real cpmd and a real Prometheus

GRAFANA_VARS = {"$__rate_interval": "10s", "$__interval": "5s", "$__range": "1m", "$job": "cpmd",
                "$instance": ".+", "${datasource}": "x"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "inf", "nan", "atan2"}


def grafana_expand(expr):
    for k in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(k, GRAFANA_VARS[k])
    return expr


def metric_names(expr):
    """The metric names a PromQL expression selects (a tokenizer, not a parser: strings, label
    matchers, ranges, grouping label lists and function names are dropped first)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        if re.fullmatch(r"\d*[smhdwy]", word):
            continue
        names.add(word)
    return names


def dashboard_queries():
    dash = json.loads(read("deploy", "grafana", "cpmd-dashboard.json"))
    out = []  # (where, expr)

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            out.append((f"variable {v['name']}", m.group(1) if m else q))
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        fail("dashboard panel ids are not unique")
    for p in dash["panels"]:
        if p["type"] != "row" and p.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"dashboard panel {p['title']!r} does not use the $datasource variable")
    return out


def rule_queries():
    out = []
    for g in load_yaml_docs(path("deploy", "prometheus", "cpmd-alerts.yml"))[0]["groups"]:
        for r in g["rules"]:
            out.append((f"rule {r.get('alert') or r.get('record')}", r["expr"]))
    return out


def parse_scrape(text):
    types, samples = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            samples.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return types, samples


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class Prometheus:
    def __init__(self, tmp, target, rules):
        self.port = free_port()
        self.dir = os.path.join(tmp, "prometheus")
        os.makedirs(self.dir)
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                            "rule_files": [rules],
                            "scrape_configs": [{"job_name": "cpmd", "static_configs": [{"targets": [target]}]}]}, f)
        self.log = open(os.path.join(self.dir, "log"), "w+")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def api(self, endpoint, **params):
        q = urllib.parse.urlencode(params)
        return http_json(f"http://127.0.0.1:{self.port}/api/v1/{endpoint}?{q}")

    def wait_scraped(self, n, timeout=30):
        """Waits until the cpmd target is up and has been scraped n more times."""
        deadline = time.time() + timeout
        seen = None
        while time.time() < deadline:
            try:
                r = self.api("query", query='count_over_time(up{job="cpmd"}[1h])')["data"]["result"]
                cnt = int(float(r[0]["value"][1])) if r else 0
                up = self.api("query", query='up{job="cpmd"}')["data"]["result"]
                if up and up[0]["value"][1] == "1":
                    seen = cnt if seen is None else seen
                    if cnt - seen >= n:
                        return True
            except (OSError, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.2)
        return False

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.seek(0)
        return self.log.read()


def make_tiny_model(build_dir):
    tiny = os.path.join(build_dir, "deploy-check", "tiny-model")
    if not os.path.isfile(os.path.join(tiny, "model.safetensors.index.json")):
        shutil.rmtree(tiny, ignore_errors=True)
        os.makedirs(os.path.dirname(tiny), exist_ok=True)
        r = subprocess.run([os.path.join(build_dir, "bin", "cpm-tool"), "mkmodel", "--out", tiny,
                            "--preset", "tiny"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"cpm-tool mkmodel: {r.stderr}")
    return tiny


# The fine-tuning job of the exercise (its name is the train_job label of the per-job series).
TRAIN_JOB = "deploy-check"


def fit32_upload(training_pb2, common_pb2, rows=4):
    """UploadDataset messages for the first `rows` examples of tests/data/train/fit32: a manifest,
    then labels.csv (those rows) and their images, one chunk each."""
    fit = path("tests", "data", "train", "fit32")
    with open(os.path.join(fit, "labels.csv")) as f:
        lines = f.read().splitlines()[:rows + 1]
    files = {"labels.csv": ("\n".join(lines) + "\n").encode()}
    for line in lines[1:]:
        rel = line.split(",", 1)[0]
        with open(os.path.join(fit, rel), "rb") as f:
            files[rel] = f.read()
    yield training_pb2.UploadDatasetRequest(manifest=training_pb2.DatasetManifest(
        name="fit32", dataset_file="labels.csv", files=[
            common_pb2.FileInfo(path=rel, size_bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
            for rel, blob in files.items()]))
    for rel, blob in files.items():
        yield training_pb2.UploadDatasetRequest(
            chunk=common_pb2.FileChunk(path=rel, offset=0, data=blob, last=True))


def check_live(build_dir, tiny, configs, probes):
    print("a real cpmd (tiny checkpoint) and a real Prometheus")
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    os.environ["CPM_BIN_DIR"] = os.path.join(build_dir, "bin")
    stubs = os.path.join(build_dir, "tests", "python")
    sys.path.insert(0, stubs)
    import cpmd_harness as h  # noqa: E402
    import grpc  # noqa: E402
    from cpm.v1 import (adapters_pb2, adapters_pb2_grpc, common_pb2, ocr_pb2, ocr_pb2_grpc,  # noqa: E402
                        training_pb2, training_pb2_grpc)

    # The harness adds --listen/--metrics-listen 127.0.0.1:0 and its own --data-dir.
    overrides = ["--model", tiny, "--device", "cpu"]
    # Each shipped config file starts a real daemon (flags override the addresses, the data
    # directory, the model path and the device, which differ on this machine).
    with tempfile.TemporaryDirectory(prefix="cpm-deploy-") as tmp:
        files = {}
        for name, cfg in configs.items():
            f = files[name] = os.path.join(tmp, name.replace("/", "_") + ".json")
            with open(f, "w") as fh:
                json.dump(cfg, fh)
            try:
                with h.Daemon("--config", f, *overrides):
                    pass
                ok(f"cpmd starts with {name}")
            except RuntimeError as e:
                fail(f"cpmd does not start with {name}: {e}")

        roots = os.path.join(tmp, "adapters")
        for a in ("cpmd_written", "peft_python"):
            shutil.copytree(os.path.join(ROOT, "tests", "data", "adapters", a), os.path.join(roots, a))
        # A budget that holds one of the two small adapters, so that loading the second evicts.
        daemon = h.Daemon("--config", files["docker/cpmd.json"], *overrides,
                          "--adapter-roots", roots, "--adapter-memory-budget-bytes", "3000000")
        prom = None
        try:
            daemon.start()
            health_services = sorted(set(probes.values()))
            deadline = time.time() + 60
            for svc in health_services:
                args = ["--server", daemon.address, "health"] + (["--service", svc] if svc else [])
                while True:
                    r = h.cpmctl(*args)
                    if r.returncode == 0 or time.time() > deadline:
                        break
                    time.sleep(0.1)
                if r.returncode != 0:
                    fail(f"health {svc or '(overall)'} (Kubernetes probe) is not SERVING: {r.stdout}{r.stderr}")
            ok(f"the probes' health services answer SERVING: {[s or '(overall)' for s in health_services]}")
            hc = re.search(r'^\s*CMD \[(.*)\]\s*$', read("docker", "Dockerfile"), re.M)
            argv = json.loads(f"[{hc.group(1)}]")
            r = subprocess.run([os.path.join(build_dir, "bin", argv[0]), *argv[1:]],
                               env=dict(os.environ, CPM_SERVER=daemon.address), capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"the Dockerfile's HEALTHCHECK {argv} exits {r.returncode}: {r.stdout}{r.stderr}")
            else:
                ok(f"the Dockerfile's HEALTHCHECK {' '.join(argv)} exits 0 ({r.stdout.strip()})")

            prom = Prometheus(tmp, f"127.0.0.1:{daemon.metrics_port}",
                              path("deploy", "prometheus", "cpmd-alerts.yml"))
            if not prom.wait_scraped(1):
                fail(f"Prometheus never scraped cpmd:\n{prom.stop()}")
                prom = None
                return
            channel = grpc.insecure_channel(daemon.address)
            ocr = ocr_pb2_grpc.OcrStub(channel)
            adapters = adapters_pb2_grpc.AdaptersStub(channel)
            image = open(os.path.join(ROOT, "tests", "data", "images", "rgb.png"), "rb").read()
            decoding = ocr_pb2.DecodingOptions(max_new_tokens=4)
            steps = []

            def step(what, fn):
                try:
                    fn()
                    steps.append(what)
                except grpc.RpcError as e:
                    fail(f"exercising cpmd: {what}: {e.code()} {e.details()}")

            for round_ in range(3):  # spread over scrapes, so that rates see the counters move
                step("Recognize", lambda: ocr.Recognize(ocr_pb2.RecognizeRequest(image=image, decoding=decoding)))
                step("Load adapter a", lambda: adapters.LoadAdapter(
                    adapters_pb2.LoadAdapterRequest(name="a", path="cpmd_written")))
                step("Load adapter b (evicts a)", lambda: adapters.LoadAdapter(
                    adapters_pb2.LoadAdapterRequest(name="b", path="peft_python")))
                step("Recognize with b", lambda: ocr.Recognize(
                    ocr_pb2.RecognizeRequest(image=image, adapter="b", decoding=decoding)))
                if round_ == 2:
                    step("Unload b", lambda: adapters.UnloadAdapter(adapters_pb2.UnloadAdapterRequest(name="b")))
                prom.wait_scraped(1)
            # A short fine-tuning job while Prometheus scrapes every second: it gives the per-job
            # cpm_train_* series (label train_job) their samples, and cpm_train_jobs_finished_total
            # a succeeded job. After the adapter rounds, so that its adapter does not change them.
            training = training_pb2_grpc.TrainingStub(channel)
            t_job = time.time()
            job = None

            def train():
                nonlocal job
                dataset = training.UploadDataset(fit32_upload(training_pb2, common_pb2), timeout=60)
                job = training.SubmitJob(training_pb2.SubmitJobRequest(spec=training_pb2.JobSpec(
                    name=TRAIN_JOB, dataset_id=dataset.id, max_steps=4, logging_steps=1, eval_steps=0,
                    eval_max_new_tokens=4, data=training_pb2.DataOptions(eval_size=1),
                    lora=training_pb2.LoraOptions(r=4),
                    optimizer=training_pb2.OptimizerOptions(learning_rate=1e-3))), timeout=60)
                terminal = {training_pb2.JOB_STATE_SUCCEEDED, training_pb2.JOB_STATE_FAILED,
                            training_pb2.JOB_STATE_CANCELLED}
                deadline = time.time() + 300
                while job.state not in terminal and time.time() < deadline:
                    time.sleep(0.2)
                    job = training.GetJob(training_pb2.GetJobRequest(id=job.id), timeout=10)

            step(f"fine-tuning job {TRAIN_JOB}", train)
            if job is not None and job.state != training_pb2.JOB_STATE_SUCCEEDED:
                fail(f"exercising cpmd: fine-tuning job {TRAIN_JOB} is {training_pb2.JobState.Name(job.state)} "
                     f"after {time.time() - t_job:.0f} s (expected SUCCEEDED): {job.error}")
            elif job is not None:
                ok(f"fine-tuning job {TRAIN_JOB} ({job.progress.step} steps, {job.num_train_examples} "
                   f"training examples) SUCCEEDED in {time.time() - t_job:.1f} s")
            channel.close()
            prom.wait_scraped(2)

            _, body = daemon.scrape()
            types, samples = parse_scrape(body)
            check_training_series(body)
            check_names(types, samples)
            check_queries_live(prom, types, samples)
            check_rules_live(prom)
        finally:
            if prom:
                prom.stop()
            code = daemon.stop()
            daemon.close()
        if code != 0:
            fail(f"cpmd exited {code} on SIGTERM (expected 0)")
        else:
            ok("cpmd exits 0 on SIGTERM (the stop signal of the image, the unit and Kubernetes)")


def check_training_series(body):
    """The exercise's job shows in the scrape under its name, finished, as one succeeded job."""
    want = {f'cpm_train_step{{train_job="{TRAIN_JOB}"}}': 4.0,
            f'cpm_train_max_steps{{train_job="{TRAIN_JOB}"}}': 4.0,
            'cpm_train_jobs_finished_total{state="succeeded"}': 1.0,
            'cpm_train_jobs{state="succeeded"}': 1.0}
    got = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            got[series] = float(value)
    wrong = {k: got.get(k) for k, v in want.items() if got.get(k) != v}
    if wrong:
        fail(f"the scrape after the fine-tuning job: expected {want}, got {wrong}")
    else:
        ok(f"the scrape has the job: step 4 of 4 under train_job=\"{TRAIN_JOB}\", 1 job succeeded")


def check_names(types, samples):
    dash = dashboard_queries()
    rules = rule_queries()
    for where, expr in dash + rules:
        for name in sorted(metric_names(grafana_expand(expr))):
            fam = family_of(name, types)
            if name in samples:
                continue
            if where.startswith("rule") and name in SYNTHETIC:
                continue
            if name in WAITING and fam not in types:
                continue
            if fam in types and fam in CUDA_ONLY:
                continue
            if fam in types:
                fail(f"{where}: {name} is declared by cpmd but had no samples after the exercise")
            else:
                fail(f"{where}: {name} does not exist in cpmd's scrape")
    used_anywhere = {n for _, e in dash + rules for n in metric_names(grafana_expand(e))}
    for name in sorted(WAITING):
        if family_of(name, types) in types:
            fail(f"{name} is exported now: drop it from WAITING here and from deploy/README.md's "
                 f"waiting table, and let the exercise fill it")
        if name not in used_anywhere:
            fail(f"WAITING lists {name}, which no alert rule or dashboard query uses")
    readme = read("deploy", "README.md")
    for name in sorted(set(WAITING) | CUDA_ONLY):
        if name not in readme:
            fail(f"deploy/README.md does not mention {name}")
    used = sorted({n for _, e in dash for n in metric_names(grafana_expand(e))})
    waiting_used = sorted(set(used) & set(WAITING))
    ok(f"the dashboard's {len(dash)} queries use {len(used)} metrics, each in the scrape "
       f"(CUDA-only, declared: {sorted(CUDA_ONLY)}; waiting: {len(waiting_used)})")
    ok(f"the alert rules use only scraped metrics, `up`, and waiting ones "
       f"({len(set(WAITING) & {n for _, e in rules for n in metric_names(e)})} of {len(WAITING)})")


def check_queries_live(prom, types, samples):
    # Syntax first, by promtool, as recording rules.
    dash = dashboard_queries()
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}", "expr": grafana_expand(e)} for i, (_, e) in enumerate(dash)]}]}, f)
    r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    if r.returncode != 0:
        fail(f"dashboard queries are not valid PromQL:\n{r.stdout}{r.stderr}")
    else:
        ok(f"promtool parses all {len(dash)} dashboard queries")
    empty = []
    for where, expr in dash:
        names = {family_of(n, types) for n in metric_names(grafana_expand(expr))}
        try:
            res = prom.api("query", query=grafana_expand(expr))
        except urllib.error.HTTPError as e:
            fail(f"{where}: Prometheus refuses the query: {e.read().decode()}")
            continue
        if not res["data"]["result"]:
            if names and names <= CUDA_ONLY | (set(WAITING) - set(types)):
                continue
            empty.append(where)
    for where in empty:
        fail(f"{where}: no data from a Prometheus scraping the exercised daemon")
    if not empty:
        ok(f"every dashboard query returns data from Prometheus (GPU memory: CUDA builds only; "
           f"the training row from the job {TRAIN_JOB})")


def check_rules_live(prom):
    groups = prom.api("rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") not in ("ok", "unknown")]
    for b in bad:
        fail(f"alert rule errs in Prometheus: {b}")
    active = [f"{a['labels']['alertname']} ({a['state']})" for a in prom.api("alerts")["data"]["alerts"]]
    if active:
        fail(f"alerts active for a healthy daemon: {active}")
    if not bad and not active:
        ok(f"Prometheus loads the {len(rules)} alert rules, evaluates them without errors, none active")


# ------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build", help="build tree with bin/cpmd, bin/cpmctl, bin/cpm-tool")
    args = ap.parse_args()
    build_dir = os.path.abspath(args.build)
    for tool in ("promtool", "prometheus"):
        if not shutil.which(tool):
            print(f"check-deploy: {tool} is missing; deploy/install-deps.sh installs it", file=sys.stderr)
            return 1
    t0 = time.time()
    keys = daemon_config_keys()
    docs = check_yaml()
    k8s = check_kubernetes(docs, keys)
    img_cfg = check_compose(docs, keys)
    check_dockerfile(build_dir, img_cfg)
    tiny = make_tiny_model(build_dir)
    check_fetch_model(tiny)
    check_promtool()
    check_systemd(build_dir, keys)
    if k8s and img_cfg:
        configs = {"docker/cpmd.json": img_cfg, "deploy/kubernetes/configmap.yaml": k8s["config"],
                   "deploy/systemd/cpmd.json": json.loads(read("deploy", "systemd", "cpmd.json"))}
        check_live(build_dir, tiny, configs, k8s["probes"])
    print(f"check-deploy: {'FAILED, ' + str(len(failures)) + ' problem(s)' if failures else 'all passed'} "
          f"in {time.time() - t0:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
