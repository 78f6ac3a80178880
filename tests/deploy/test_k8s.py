#!/usr/bin/env python3
"""tests/deploy/test_k8s.py - the Kubernetes manifests of deploy/k8s.

No cluster here, so it checks what a cluster would refuse or get wrong:
  - every manifest parses (python yaml), every object has apiVersion, kind and
    metadata.name, the right apiVersion for its kind, the beamfleet namespace;
  - the objects the brief asks for: broker Deployment + Service, collector
    StatefulSet with a PVC (volumeClaimTemplates) and its governing Service,
    worker DaemonSet requesting nvidia.com/gpu: 1, a ConfigMap with fleet.yaml;
  - references resolve: selectors match pod labels, Services reach a named
    container port, volume mounts name declared volumes, ConfigMaps and PVCs
    exist, probes name ports, kustomization lists every file;
  - each container runs a real subcommand with flags its `--help` lists, and
    the paths it passes (-c, --state, --out) lie on mounted volumes;
  - the ConfigMap's fleet.yaml runs a real broker, collector and worker here
    (binds moved to loopback): they load it and form a fleet.
A checker that cannot fail proves nothing: it is also run on broken copies of
the manifests, which it must reject with the expected message.
"""
import copy
import glob
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

try:
    import yaml
except ImportError:
    print("SKIP: python yaml (PyYAML) is not installed")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
K8S = os.path.join(REPO, "deploy", "k8s")
NAMESPACE = "beamfleet"
API = {"Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1",
       "PersistentVolumeClaim": "v1", "ServiceAccount": "v1", "Deployment": "apps/v1",
       "StatefulSet": "apps/v1", "DaemonSet": "apps/v1", "Job": "batch/v1"}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
ENTRYPOINT, IMAGE_UID = [], None


def binary():
    path = os.environ.get("BEAMFLEET_BIN") or os.path.join(REPO, "build", "beamfleet")
    return os.path.abspath(path)


def load():
    """{file: [object, ...]} for every manifest but kustomization.yaml."""
    docs = {}
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        name = os.path.basename(path)
        if name == "kustomization.yaml":
            continue
        with open(path) as f:
            try:
                docs[name] = [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                raise SystemExit(f"FAIL: {name}: not valid YAML: {e}")
    return docs


def help_flags(sub, cache={}):
    """The flags `beamfleet SUB --help` lists."""
    if sub not in cache:
        r = subprocess.run([binary(), sub, "--help"], capture_output=True, text=True, timeout=20)
        text = r.stdout + r.stderr
        cache[sub] = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", text)) if r.returncode == 0 else None
    return cache[sub]


def image_entrypoint():
    """The final stage's ENTRYPOINT and USER uid in deploy/Dockerfile, the
    image the manifests run; tini and its `--` are dropped from the former."""
    with open(os.path.join(REPO, "deploy", "Dockerfile")) as f:
        text = f.read()
    final = text[text.rfind("\nFROM "):]
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", final, re.M)
    entry = json.loads(m.group(1)) if m else []
    while entry and (os.path.basename(entry[0]) == "tini" or entry[0] == "--"):
        entry = entry[1:]
    uid = re.search(r"useradd .*--uid (\d+)", final.replace("\\\n", " "))
    return entry, int(uid.group(1)) if uid else None


def pod_spec(obj):
    return obj.get("spec", {}).get("template", {}).get("spec", {})


def check(docs, with_binary=True):
    """Every problem found, one line each ("file: Kind/name: what")."""
    errs = []
    objs = []
    for fname, items in docs.items():
        for i, o in enumerate(items):
            where = f"{fname}: document {i + 1}"
            if not isinstance(o, dict):
                errs.append(f"{where}: not a mapping")
                continue
            for k in ("apiVersion", "kind", "metadata"):
                if k not in o:
                    errs.append(f"{where}: no {k}")
            kind = o.get("kind", "?")
            name = (o.get("metadata") or {}).get("name")
            if not name:
                errs.append(f"{where}: {kind} without metadata.name")
                continue
            where = f"{fname}: {kind}/{name}"
            if kind in API and o.get("apiVersion") != API[kind]:
                errs.append(f"{where}: apiVersion {o.get('apiVersion')}, expected {API[kind]}")
            if kind not in API:
                errs.append(f"{where}: unexpected kind")
            if kind != "Namespace" and o["metadata"].get("namespace") != NAMESPACE:
                errs.append(f"{where}: namespace is not {NAMESPACE}")
            objs.append((where, o))

    def named(kind):
        return {o["metadata"]["name"]: (w, o) for w, o in objs if o.get("kind") == kind}

    configmaps, pvcs, services = named("ConfigMap"), named("PersistentVolumeClaim"), named("Service")
    workloads = [(w, o) for w, o in objs if o.get("kind") in WORKLOADS]

    # -- what the brief asks for ------------------------------------------------
    def need(kind, name):
        found = named(kind).get(name)
        if not found:
            errs.append(f"missing {kind}/{name}")
        return found[1] if found else None

    need("Namespace", NAMESPACE)
    broker = need("Deployment", "beamfleet-broker")
    need("Service", "beamfleet-broker")
    collector = need("StatefulSet", "beamfleet-collector")
    worker = need("DaemonSet", "beamfleet-worker")
    cm = need("ConfigMap", "beamfleet-config")
    if collector is not None:
        if not collector["spec"].get("volumeClaimTemplates"):
            errs.append("StatefulSet/beamfleet-collector: no volumeClaimTemplates (its reports need a PVC)")
        svc = collector["spec"].get("serviceName")
        if svc not in services:
            errs.append(f"StatefulSet/beamfleet-collector: serviceName {svc!r} is not a Service here")
    if worker is not None:
        for c in pod_spec(worker).get("containers", []):
            gpu = (c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu")
            if str(gpu) != "1":
                errs.append(f"DaemonSet/beamfleet-worker: container {c.get('name')}: "
                            f"limits nvidia.com/gpu is {gpu!r}, expected 1")
        if pod_spec(worker).get("terminationGracePeriodSeconds", 30) < 3600:
            errs.append("DaemonSet/beamfleet-worker: terminationGracePeriodSeconds shorter than a "
                        "default task (3600 s): SIGKILL would cut the drain")
    if broker is not None:
        if broker["spec"].get("replicas", 1) != 1:
            errs.append("Deployment/beamfleet-broker: more than one replica of the broker")
        if (broker["spec"].get("strategy") or {}).get("type") != "Recreate":
            errs.append("Deployment/beamfleet-broker: strategy must be Recreate (one store, one broker)")
    fleet_text = None
    if cm is not None:
        fleet_text = (cm.get("data") or {}).get("fleet.yaml")
        if not fleet_text:
            errs.append("ConfigMap/beamfleet-config: no data fleet.yaml")
        else:
            try:
                fleet = yaml.safe_load(fleet_text)
                for key in ("broker", "heartbeat", "collector", "worker"):
                    if key not in fleet:
                        errs.append(f"ConfigMap/beamfleet-config: fleet.yaml has no {key}")
                for key in ("security", "metrics"):
                    if key in fleet:
                        errs.append(f"ConfigMap/beamfleet-config: fleet.yaml: {key} must stay commented out")
                    elif not re.search(rf"^\s*#\s*{key}:", fleet_text, re.M):
                        errs.append(f"ConfigMap/beamfleet-config: fleet.yaml: no commented {key}: example")
            except yaml.YAMLError as e:
                errs.append(f"ConfigMap/beamfleet-config: fleet.yaml is not YAML: {e}")

    # -- references -------------------------------------------------------------
    for where, o in workloads:
        spec = o.get("spec", {})
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = (spec.get("template", {}).get("metadata") or {}).get("labels") or {}
        if not match:
            errs.append(f"{where}: no spec.selector.matchLabels")
        for k, v in match.items():
            if labels.get(k) != v:
                errs.append(f"{where}: selector {k}={v} does not match the pod template labels")
        ps = pod_spec(o)
        volumes = {v.get("name"): v for v in ps.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        for vname, v in volumes.items():
            if "configMap" in v and v["configMap"].get("name") not in configmaps:
                errs.append(f"{where}: volume {vname}: ConfigMap {v['configMap'].get('name')} does not exist")
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"].get("claimName") not in pvcs:
                errs.append(f"{where}: volume {vname}: PVC "
                            f"{v['persistentVolumeClaim'].get('claimName')} does not exist")
        containers = ps.get("containers") or []
        if not containers:
            errs.append(f"{where}: no containers")
        for c in containers:
            cw = f"{where}: container {c.get('name')}"
            for k in ("name", "image"):
                if not c.get(k):
                    errs.append(f"{cw}: no {k}")
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
            mounts = c.get("volumeMounts", [])
            for m in mounts:
                if m.get("name") not in volumes and m.get("name") not in claims:
                    errs.append(f"{cw}: volumeMount {m.get('name')} names no volume")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = ((c.get(probe) or {}).get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    errs.append(f"{cw}: {probe} port {port} is not a container port")
            # Without `command`, the image's ENTRYPOINT runs with `args`.
            argv = list(c.get("command") or ENTRYPOINT) + list(c.get("args") or [])
            if not argv or os.path.basename(str(argv[0])) != "beamfleet" or len(argv) < 2:
                errs.append(f"{cw}: does not run `beamfleet SUBCOMMAND`")
                continue
            sub = str(argv[1])
            flags = help_flags(sub) if with_binary else None
            if with_binary and flags is None:
                errs.append(f"{cw}: `beamfleet {sub}` is not a subcommand")
                continue
            args = [str(a) for a in argv[2:]]
            for i, a in enumerate(args):
                if a.startswith("-") and flags is not None and a.split("=")[0] not in flags:
                    errs.append(f"{cw}: flag {a} is not in `beamfleet {sub} --help`")
                if a in ("-c", "--state", "--out") and i + 1 < len(args):
                    path = args[i + 1]
                    if not any(path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
                               for m in mounts):
                        errs.append(f"{cw}: {a} {path} is not on a mounted volume")
            if "-c" not in args:
                errs.append(f"{cw}: does not read the fleet file (-c)")

    for where, o in services.values():
        sel = o.get("spec", {}).get("selector") or {}
        targets = [(w, x) for w, x in workloads
                   if sel and all(((x["spec"].get("template", {}).get("metadata") or {}).get("labels") or {})
                                  .get(k) == v for k, v in sel.items())]
        if not targets:
            errs.append(f"{where}: selector {sel} matches no workload")
            continue
        for p in o.get("spec", {}).get("ports", []):
            tp = p.get("targetPort", p.get("port"))
            ok = False
            for _, x in targets:
                for c in pod_spec(x).get("containers", []):
                    for cp in c.get("ports", []):
                        ok |= tp == cp.get("name") or tp == cp.get("containerPort")
            if not ok:
                errs.append(f"{where}: port {p.get('name')} targets {tp!r}, which no selected container has")

    kpath = os.path.join(K8S, "kustomization.yaml")
    if os.path.exists(kpath):
        with open(kpath) as f:
            k = yaml.safe_load(f)
        listed = set(k.get("resources") or [])
        if listed != set(docs):
            errs.append(f"kustomization.yaml: resources {sorted(listed)} != files {sorted(docs)}")
    else:
        errs.append("no kustomization.yaml")
    for where, o in workloads:
        uid = (pod_spec(o).get("securityContext") or {}).get("runAsUser")
        if uid is not None and uid != IMAGE_UID:
            errs.append(f"{where}: runAsUser {uid} is not the image's beamfleet user ({IMAGE_UID})")
    return errs, fleet_text


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_fleet_file(fleet_text):
    """The ConfigMap's fleet.yaml on a real broker, collector and worker (binds
    on loopback, the rest as written): the fleet must form."""
    tmp = tempfile.mkdtemp(prefix="bf-k8s-")
    path = os.path.join(tmp, "fleet.yaml")
    with open(path, "w") as f:
        f.write(fleet_text)
    ep = f"tcp://127.0.0.1:{free_port()}"
    pub = f"tcp://127.0.0.1:{free_port()}"
    bf = binary()
    procs = []
    log = open(os.path.join(tmp, "fleet.log"), "wb")
    try:
        for argv in ([bf, "broker", "-c", path, "--bind", ep, "--state", os.path.join(tmp, "state")],
                     [bf, "collector", "-c", path, "--broker", ep, "--publish", pub,
                      "--out", os.path.join(tmp, "reports")],
                     [bf, "worker", "-c", path, "--broker", ep, "--gpus", "none", "--cpu", "1"]):
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
        deadline = time.time() + 30
        st = None
        while time.time() < deadline:
            for p in procs:
                if p.poll() is not None:
                    log.flush()
                    raise SystemExit(f"FAIL: {' '.join(p.args[1:3])} with the ConfigMap's fleet.yaml exited "
                                     f"{p.returncode}:\n{open(log.name).read()}")
            r = subprocess.run([bf, "status", "--broker", ep, "--json"], capture_output=True, text=True,
                               timeout=20)
            if r.returncode == 0:
                st = json.loads(r.stdout)
                if len(st["workers"]) == 1 and st["collector"]["connected"]:
                    print(f"fleet.yaml: a broker, a collector and a worker loaded it and formed a fleet "
                          f"(worker '{st['workers'][0]['name']}')")
                    return
            time.sleep(0.3)
        raise SystemExit(f"FAIL: the fleet did not form with the ConfigMap's fleet.yaml (last status {st})")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 15)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()
        subprocess.run(["rm", "-rf", tmp])


def mutations(docs):
    """Broken copies of the manifests and the message each must produce."""
    def find(d, kind):
        for items in d.values():
            for o in items:
                if o.get("kind") == kind:
                    return o
        raise KeyError(kind)

    def m_gpu(d):
        find(d, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].pop("nvidia.com/gpu")

    def m_selector(d):
        find(d, "Deployment")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "other"

    def m_configmap(d):
        for v in find(d, "StatefulSet")["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in v:
                v["configMap"]["name"] = "beamfleet-cfg"

    def m_flag(d):
        find(d, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"].append("--gpu-count")

    def m_port(d):
        find(d, "Service")["spec"]["ports"][0]["targetPort"] = "zmtp"

    def m_pvc(d):
        find(d, "StatefulSet")["spec"].pop("volumeClaimTemplates")

    def m_uid(d):
        find(d, "DaemonSet")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0

    def m_security(d):
        cm = find(d, "ConfigMap")
        cm["data"]["fleet.yaml"] = cm["data"]["fleet.yaml"].replace("# security:", "security:")

    return [(m_gpu, "nvidia.com/gpu is None, expected 1"), (m_selector, "does not match the pod template"),
            (m_configmap, "ConfigMap beamfleet-cfg does not exist"),
            (m_flag, "flag --gpu-count is not in `beamfleet worker --help`"),
            (m_port, "targets 'zmtp'"), (m_pvc, "no volumeClaimTemplates"),
            (m_uid, "runAsUser 0 is not the image's beamfleet user"),
            (m_security, "security must stay commented out")]


def main():
    if not os.path.exists(binary()):
        print(f"FAIL: no beamfleet binary at {binary()} (set BEAMFLEET_BIN)")
        return 1
    global ENTRYPOINT, IMAGE_UID
    ENTRYPOINT, IMAGE_UID = image_entrypoint()
    if not ENTRYPOINT or os.path.basename(ENTRYPOINT[0]) != "beamfleet":
        print(f"FAIL: deploy/Dockerfile: the final ENTRYPOINT does not run beamfleet ({ENTRYPOINT})")
        return 1
    print(f"image: ENTRYPOINT {ENTRYPOINT[0]} (under tini), user uid {IMAGE_UID}")
    docs = load()
    n = sum(len(v) for v in docs.values())
    kinds = sorted({o["kind"] for v in docs.values() for o in v})
    print(f"parsed {n} objects in {len(docs)} files: {', '.join(kinds)}")
    errs, fleet_text = check(docs)
    if errs:
        print("\n".join(f"FAIL: {e}" for e in errs))
        return 1
    print("manifests: kinds, references, subcommands, flags and mounts all check")
    for mutate, expect in mutations(docs):
        broken = copy.deepcopy(docs)
        mutate(broken)
        errs, _ = check(broken)
        if not any(expect in e for e in errs):
            print(f"FAIL: the checker accepted a broken copy ({mutate.__name__}): {errs}")
            return 1
    print(f"checker: rejects all {len(mutations(docs))} broken copies")
    run_fleet_file(fleet_text)
    print("PASS test_k8s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
