#!/usr/bin/env python3
"""Static checks of DisTorch's deployment files, run by scripts/test.sh.

Docker and a Kubernetes cluster are not available where the tests run, so this checks what
can be checked without them: every YAML file under infra/ and docker-compose.yml parses, the
Kubernetes manifests hang together (probes on /healthz and /readyz, selectors, ports, volumes,
the ConfigMap's distorch.toml), the compose file builds from infra/Dockerfile, Prometheus
scrapes /metrics, and the Dockerfile runs `distorch` as a non-root user on port 8000.

Prints one PASS/FAIL line per check and closes with "deploy-files: N passed, M failed".
Needs PyYAML; exits 1 when any check fails.
"""

import pathlib
import re
import sys

import yaml

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover - older Pythons skip the TOML parse
    tomllib = None

ROOT = pathlib.Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = INFRA / "Dockerfile"
HTTP_PORT = 8000
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}

results = []  # (name, error or None)


def check(name, fn, *args):
    try:
        fn(*args)
    except Exception as e:  # a check fails on any error, with its message
        results.append((name, f"{type(e).__name__}: {e}" if not isinstance(e, AssertionError) else str(e)))
    else:
        results.append((name, None))


def rel(path):
    return str(path.relative_to(ROOT))


def yaml_files():
    files = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    return files + [COMPOSE]


def load_docs(path):
    """Every non-empty document of a YAML file (raises yaml.YAMLError with line and column)."""
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---- generic YAML ----------------------------------------------------------------------------


def parses(path):
    assert path.is_file(), f"{rel(path)} is missing"
    docs = load_docs(path)
    assert docs, f"{rel(path)} has no YAML document"
    for i, d in enumerate(docs):
        assert isinstance(d, dict), f"{rel(path)} document {i + 1} is a {type(d).__name__}, not a mapping"


# ---- Kubernetes ------------------------------------------------------------------------------


def k8s_objects(skip_broken=False):
    """(file, object) for every manifest under infra/k8s except the kustomization.

    With skip_broken, files that do not parse are left out (their parse check already failed),
    so the checks of the other files still run.
    """
    out = []
    for path in sorted(K8S.glob("*.y*ml")):
        if path.name == "kustomization.yaml":
            continue
        try:
            out.extend((path, d) for d in load_docs(path))
        except yaml.YAMLError:
            if not skip_broken:
                raise
    return out


def named(objs, kind):
    return {o["metadata"]["name"]: o for _, o in objs if o.get("kind") == kind}


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def resolve_port(container, port):
    """A probe or Service port (number or container port name) as a number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']!r} has no port named {port!r}")


def k8s_well_formed():
    objs = k8s_objects()
    assert objs, "no manifests under infra/k8s"
    for path, o in objs:
        where = f"{rel(path)} ({o.get('kind')})"
        assert isinstance(o.get("apiVersion"), str), f"{where}: no apiVersion"
        assert isinstance(o.get("kind"), str), f"{where}: no kind"
        assert o.get("metadata", {}).get("name"), f"{where}: no metadata.name"


def k8s_kustomization_lists_every_manifest():
    path = K8S / "kustomization.yaml"
    (kust,) = load_docs(path)
    listed = set(kust.get("resources", []))
    present = {p.name for p in K8S.glob("*.y*ml")} - {"kustomization.yaml"}
    assert listed == present, f"{rel(path)} resources {sorted(listed)} != files {sorted(present)}"


def k8s_probes(name, workload):
    containers = pod_spec(workload)["containers"]
    assert containers, f"{name}: no containers"
    for c in containers:
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet")
            assert get, f"{name}/{c['name']}: no {probe}.httpGet"
            assert get.get("path") == path, f"{name}/{c['name']}: {probe} path {get.get('path')!r} != {path!r}"
            port = resolve_port(c, get.get("port"))
            assert port == HTTP_PORT, f"{name}/{c['name']}: {probe} port {port} != {HTTP_PORT}"


def k8s_workload_wiring(name, workload, objs):
    spec = workload["spec"]
    tmpl_labels = spec["template"]["metadata"]["labels"]
    match = spec["selector"]["matchLabels"]
    assert match.items() <= tmpl_labels.items(), f"{name}: selector {match} does not match pod labels {tmpl_labels}"
    pod = pod_spec(workload)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    config_maps = named(objs, "ConfigMap")
    for c in pod["containers"]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes or m["name"] in claims, f"{name}/{c['name']}: mount {m['name']!r} has no volume"
    for v in volumes.values():
        if "configMap" in v:
            cm = v["configMap"]["name"]
            assert cm in config_maps, f"{name}: volume {v['name']!r} names ConfigMap {cm!r}, which is not defined"
    if workload["kind"] == "StatefulSet":
        # standalone writes SQLite files: exactly one writer, on a persistent volume
        assert spec.get("replicas") == 1, f"{name}: standalone must run with replicas: 1"
        assert claims, f"{name}: no volumeClaimTemplates for the data dir"
        services = named(objs, "Service")
        svc = spec.get("serviceName")
        assert svc in services, f"{name}: serviceName {svc!r} is not a Service here"
        assert services[svc]["spec"].get("clusterIP") == "None", f"{name}: governing Service {svc!r} is not headless"
        args = " ".join(pod["containers"][0].get("args", []))
        for mount in pod["containers"][0].get("volumeMounts", []):
            if mount["name"] in claims:
                assert f"--data-dir {mount['mountPath']}" in args, f"{name}: --data-dir is not the volume at {mount['mountPath']}"


def k8s_services_select_pods(objs):
    workloads = [o for _, o in objs if o.get("kind") in WORKLOAD_KINDS]
    services = named(objs, "Service")
    assert services, "no Service"
    for svc_name, svc in services.items():
        sel = svc["spec"].get("selector", {})
        hits = [w for w in workloads if sel and sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert hits, f"Service {svc_name!r}: selector {sel} matches no workload"
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            for w in hits:
                assert any(port_on(c, target) for c in pod_spec(w)["containers"]), (
                    f"Service {svc_name!r}: targetPort {target!r} is on no container of {w['metadata']['name']!r}"
                )


def port_on(container, port):
    """Whether a container declares `port` (a number or a port name)."""
    key = "containerPort" if isinstance(port, int) else "name"
    return any(p.get(key) == port for p in container.get("ports", []))


def k8s_config_is_toml(objs):
    config_maps = named(objs, "ConfigMap")
    assert config_maps, "no ConfigMap"
    for name, cm in config_maps.items():
        text = cm.get("data", {}).get("distorch.toml")
        assert text is not None, f"ConfigMap {name!r} has no distorch.toml"
        if tomllib is not None:
            try:
                tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                raise AssertionError(f"ConfigMap {name!r}: distorch.toml: {e}") from None


# ---- docker-compose, Prometheus, Dockerfile --------------------------------------------------


def compose_builds_distorch():
    (compose,) = load_docs(COMPOSE)
    services = compose.get("services", {})
    assert "distorch" in services, "no distorch service"
    svc = services["distorch"]
    build = svc.get("build", {})
    dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    assert dockerfile.resolve() == DOCKERFILE.resolve(), f"distorch builds from {dockerfile}, not infra/Dockerfile"
    ports = [str(p) for p in svc.get("ports", [])]
    assert any(p.split(":")[-1] == str(HTTP_PORT) for p in ports), f"distorch does not publish port {HTTP_PORT}: {ports}"
    declared = set((compose.get("volumes") or {}).keys())
    for name, s in services.items():
        for v in s.get("volumes", []):
            source = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"service {name!r} uses volume {source!r}, not declared under volumes:"


def prometheus_scrapes_metrics():
    (prom,) = load_docs(INFRA / "prometheus.yml")
    jobs = prom.get("scrape_configs", [])
    assert jobs, "no scrape_configs"
    for job in jobs:
        assert job.get("job_name"), f"a scrape config has no job_name: {job}"
    distorch = [j for j in jobs if j.get("metrics_path", "/metrics") == "/metrics" and any(
        t.endswith(f":{HTTP_PORT}") for sc in j.get("static_configs", []) for t in sc.get("targets", []))]
    assert distorch, f"no job scrapes /metrics on port {HTTP_PORT}"


def dockerfile_runs_distorch():
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    assert len(froms) >= 2, "not a multi-stage build"
    assert "cargo build --release -p distorch --locked" in text, "builder does not run cargo build --release -p distorch --locked"
    assert f"EXPOSE {HTTP_PORT}" in lines, f"no EXPOSE {HTTP_PORT}"
    assert 'ENTRYPOINT ["distorch"]' in lines, 'no ENTRYPOINT ["distorch"]'
    runtime = lines[lines.index(froms[-1]):]
    users = [l.split(None, 1)[1] for l in runtime if l.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage does not switch to a non-root USER"
    assert not any(l.upper().startswith("HEALTHCHECK") for l in lines), "HEALTHCHECK belongs to the orchestrator's probes"
    ignore = INFRA / "Dockerfile.dockerignore"
    assert ignore.is_file() and re.search(r"^/?target/?$", ignore.read_text(), re.M), "infra/Dockerfile.dockerignore must exclude target/"


def main():
    for path in yaml_files():
        check(f"parse {rel(path)}", parses, path)
    check("k8s: manifests well formed", k8s_well_formed)
    check("k8s: kustomization lists every manifest", k8s_kustomization_lists_every_manifest)
    objs = k8s_objects(skip_broken=True)
    workloads = [o for _, o in objs if o.get("kind") in WORKLOAD_KINDS]
    if objs and not workloads:
        results.append(("k8s: workloads", "no Deployment, StatefulSet or DaemonSet"))
    for w in workloads:
        name = f"{w['kind']}/{w['metadata']['name']}"
        check(f"k8s: {name} probes GET /healthz and /readyz on {HTTP_PORT}", k8s_probes, name, w)
        check(f"k8s: {name} selectors, volumes and config", k8s_workload_wiring, name, w, objs)
    check("k8s: Services select pods and ports", k8s_services_select_pods, objs)
    check("k8s: ConfigMap distorch.toml is TOML", k8s_config_is_toml, objs)
    check("compose: distorch built from infra/Dockerfile", compose_builds_distorch)
    check("prometheus: scrapes /metrics", prometheus_scrapes_metrics)
    check("Dockerfile: non-root distorch on 8000", dockerfile_runs_distorch)

    for name, err in results:
        if err is None:
            print(f"PASS {name}")
        else:
            print(f"FAIL {name}")
            print("\n".join("     " + line for line in err.splitlines()))
    failed = sum(1 for _, err in results if err is not None)
    print(f"deploy-files: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
