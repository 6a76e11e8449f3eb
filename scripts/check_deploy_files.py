#!/usr/bin/env python3
"""Static checks of DisTorch's deployment files, run by scripts/test.sh.

Docker and a Kubernetes cluster are not available where the tests run, so this checks what
can be checked without them, against facts read from the Rust sources rather than copied
here, so that a change on either side that breaks the other fails:

- the binary's subcommands and flags (services/distorch/src/main.rs), its configuration keys
  (config.rs and the config structs it names, in every crate) and the HTTP paths each role
  serves (the API router, and the ops router of engine/saga/projector);
- docker-compose.yml: every DisTorch service builds infra/Dockerfile into one image, runs a
  known subcommand with known flags, sets only DISTORCH__SECTION__KEY variables that exist
  (with values of the right kind and backend URLs naming Compose services), probes /readyz
  on the port it listens on, and starts in the right order (backends healthy, `migrate`
  completed); third-party images are pinned;
- infra/k8s (every directory with a kustomization.yaml): the kustomization lists its files,
  every workload runs a known subcommand, probes /healthz (liveness) and /readyz (readiness)
  on paths its role serves and on the port it listens on, mounts a ConfigMap key that exists
  at DISTORCH_CONFIG, runs as the Dockerfile's non-root user with resource requests, Services
  and PodDisruptionBudgets select pods and ports that exist, the ConfigMaps' distorch.toml only
  has keys the binary knows and the backends its services need, the engines fit the
  commands partitions and have time to write their snapshots;
- Prometheus scrapes /metrics of every DisTorch service in Compose, and the Dockerfile builds
  the binary with every backend and runs it as a non-root user on the port the files use.

Prints one PASS/FAIL line per check and closes with "deploy-files: N passed, M failed".
Needs PyYAML; exits 1 when any check fails. `--root DIR` checks another checkout (used to
try the checks on deliberately broken copies).
"""

import pathlib
import re
import sys

import yaml

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover - older Pythons skip the TOML checks
    tomllib = None

ROOT = pathlib.Path(__file__).resolve().parent.parent
if len(sys.argv) == 3 and sys.argv[1] == "--root":
    ROOT = pathlib.Path(sys.argv[2]).resolve()
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = INFRA / "Dockerfile"
BINARY_SRC = ROOT / "services" / "distorch" / "src"
IMAGE = "distorch"  # repository name of the image built from infra/Dockerfile
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
SERVING_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
API_VERSIONS = {
    "ConfigMap": "v1",
    "Service": "v1",
    "Secret": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "PodDisruptionBudget": "policy/v1",
}
# Subcommands that run the distributed services, and the backends each one opens.
SERVICE_BACKENDS = {
    "api": {"log", "store"},
    "engine": {"log"},
    "saga": {"log"},
    "projector": {"log", "store"},
    "migrate": set(),
}
BACKEND_SCHEMES = {
    "log": {"kafka"},
    "store": {"sqlite", "scylla"},
    "analytics": {"sqlite", "clickhouse"},
}
ENV_PREFIX = "DISTORCH__"

results = []  # (name, error or None)


def check(name, fn, *args):
    try:
        fn(*args)
    except Exception as e:  # a check fails on any error, with its message
        results.append((name, str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"))
    else:
        results.append((name, None))


def rel(path):
    try:
        return str(pathlib.Path(path).relative_to(ROOT))
    except ValueError:
        return str(path)


def load_docs(path):
    """Every non-empty document of a YAML file (raises yaml.YAMLError with line and column)."""
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def parses(path):
    assert path.is_file(), f"{rel(path)} is missing"
    docs = load_docs(path)
    assert docs, f"{rel(path)} has no YAML document"
    for i, d in enumerate(docs):
        assert isinstance(d, dict), f"{rel(path)} document {i + 1} is a {type(d).__name__}, not a mapping"


# ---- facts from the Rust sources -------------------------------------------------------------


class Facts:
    """What the binary accepts and serves, read from its sources (None until read)."""

    subcommands = None  # name -> {flag: takes_value}
    global_flags = None  # flag -> takes_value
    flag_envs = None  # environment variables clap reads (DISTORCH_CONFIG)
    config = None  # the key tree, see config_tree()
    paths = None  # role -> set of served paths
    error = "the Rust sources could not be read"


def kebab(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def rust_block(text, start):
    """The text between the `{` at or after `start` and its matching `}`."""
    open_at = text.index("{", start)
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    raise AssertionError("unbalanced braces")


def strip_comments(body):
    return "\n".join(l for l in body.splitlines() if not l.strip().startswith("//"))


def clap_fields(body, structs):
    """Flags of a clap struct body: {--flag: takes_value}, following #[command(flatten)]."""
    flags = {}
    pending_flatten = False
    for line in strip_comments(body).splitlines():
        s = line.strip()
        if s.startswith("#[command(flatten)]"):
            pending_flatten = True
            continue
        if s.startswith("#["):
            continue
        m = re.match(r"(?:pub\s+)?(\w+)\s*:\s*([^,]+),?$", s)
        if not m:
            continue
        name, ty = m.groups()
        if pending_flatten:
            flags.update(clap_fields(structs[ty.strip()], structs))
            pending_flatten = False
        else:
            flags["--" + name.replace("_", "-")] = ty.strip() != "bool"
    return flags


def read_cli():
    text = (BINARY_SRC / "main.rs").read_text(encoding="utf-8")
    structs = {}
    for m in re.finditer(r"^(?:pub\s+)?struct (\w+)\s*\{", text, re.M):
        structs[m.group(1)] = rust_block(text, m.start())
    assert "Cli" in structs, "main.rs has no `struct Cli`"
    Facts.global_flags = {f: v for f, v in clap_fields(structs["Cli"], structs).items() if f != "--command"}
    Facts.flag_envs = set(re.findall(r'env\s*=\s*"(\w+)"', structs["Cli"]))
    m = re.search(r"^enum Cmd\s*\{", text, re.M)
    assert m, "main.rs has no `enum Cmd`"
    body = strip_comments(rust_block(text, m.start()))
    subs = {}
    for v in re.finditer(r"^\s{4}(\w+)\s*(\{(.*?)^\s{4}\}|\((\w+)\))?,", body, re.M | re.S):
        name, _, fields, tuple_ty = v.groups()
        if fields is not None:
            flags = clap_fields(fields, structs)
        elif tuple_ty is not None:
            assert tuple_ty in structs, f"main.rs: subcommand {name} takes {tuple_ty}, which is not a struct there"
            flags = clap_fields(structs[tuple_ty], structs)
        else:
            flags = {}
        subs[kebab(name)] = flags
    assert {"standalone", "api", "engine", "saga", "projector", "migrate"} <= subs.keys(), (
        f"main.rs: subcommands read as {sorted(subs)}; the parser here needs updating"
    )
    Facts.subcommands = subs


def crate_dirs():
    """Workspace crate (as a Rust path, distorch_api) -> its directory."""
    text = (ROOT / "Cargo.toml").read_text(encoding="utf-8")
    dirs = {name.replace("-", "_"): ROOT / path for name, path in re.findall(r'^(distorch[\w-]*)\s*=\s*\{[^}]*path\s*=\s*"([^"]+)"', text, re.M)}
    dirs["distorch"] = ROOT / "services" / "distorch"
    dirs["crate"] = None
    return dirs


class Leaf:
    def __init__(self, kind):
        self.kind = kind  # int, float, str, bool, list or any


class Map:
    def __init__(self, value):
        self.value = value


def read_config():
    crates = crate_dirs()
    sources = {}

    def files(crate):
        if crate not in sources:
            sources[crate] = {p: p.read_text(encoding="utf-8") for p in sorted((crates[crate] / "src").rglob("*.rs"))}
        return sources[crate]

    def find_struct(name, crate, qualified):
        """(crate, file, body, attributes) of `pub struct name`, or None for a non-workspace type."""
        if qualified:
            search = [qualified]
        else:
            search = [crate] + [c for c in crates if c not in (crate, "crate")]
        for c in search:
            hits = []
            for path, text in files(c).items():
                for m in re.finditer(rf"^[ \t]*pub struct {name}\s*\{{", text, re.M):
                    before = text[: m.start()].splitlines()
                    attrs = []
                    while before and before[-1].strip() and not before[-1].rstrip().endswith(("}", ";", "{")):
                        attrs.append(before.pop().strip())
                    hits.append((c, path, rust_block(text, m.start()), " ".join(attrs)))
            if len(hits) > 1:
                raise AssertionError(f"struct {name} is defined {len(hits)} times in crate {c}")
            if hits:
                return hits[0]
        return None

    def type_node(ty, crate):
        ty = ty.strip()
        m = re.fullmatch(r"Option<(.+)>", ty)
        if m:
            return type_node(m.group(1), crate)
        m = re.fullmatch(r"(?:[\w:]+::)?(?:BTreeMap|HashMap)<\s*String\s*,\s*(.+)>", ty)
        if m:
            return Map(type_node(m.group(1), crate))
        if re.match(r"(?:[\w:]+::)?(?:Vec|BTreeSet|HashSet)<", ty):
            return Leaf("list")
        prims = {"bool": "bool", "String": "str", "PathBuf": "str", "f32": "float", "f64": "float"}
        if ty in prims:
            return Leaf(prims[ty])
        if re.fullmatch(r"[ui](8|16|32|64|128|size)", ty):
            return Leaf("int")
        segs = ty.split("<")[0].split("::")
        qualified = segs[0] if len(segs) > 1 and segs[0] in crates and segs[0] != "crate" else None
        found = find_struct(segs[-1], crate, qualified)
        if found is None:
            return Leaf("any")
        return struct_node(*found)

    def struct_node(crate, path, body, attrs):
        where = f"{rel(path)}"
        assert "Deserialize" in attrs, f"{where}: a config struct without Deserialize? ({attrs})"
        for bad in ("rename_all", "flatten", "untagged", "tag ="):
            assert bad not in attrs, f"{where}: #[serde({bad}...)] is not understood by this check; teach it"
        node = {}
        pending = ""
        for line in strip_comments(body).splitlines():
            s = line.strip()
            if not s:
                continue
            if s.startswith("#["):
                assert "serde" not in s, f"{where}: field attribute {s} is not understood by this check; teach it"
                continue
            pending = f"{pending} {s}".strip()
            if not pending.endswith(","):
                continue
            m = re.match(r"(?:pub(?:\([\w:]+\))?\s+)?(?:r#)?(\w+)\s*:\s*(.+),$", pending)
            assert m, f"{where}: cannot read the field `{pending}`"
            node[m.group(1)] = type_node(m.group(2), crate)
            pending = ""
        return node

    found = find_struct("Config", "distorch", "distorch")
    assert found and rel(found[1]).endswith("config.rs"), "services/distorch/src/config.rs has no `pub struct Config`"
    Facts.config = struct_node(*found)
    assert {"backends", "api", "engine", "server"} <= Facts.config.keys(), f"config sections read as {sorted(Facts.config)}"


def read_paths():
    def routes(path):
        text = path.read_text(encoding="utf-8")
        found = set(re.findall(r'\.route\(\s*"([^"]+)"', text))
        assert found, f"{rel(path)}: no .route(...) found"
        return found

    api = routes(ROOT / "services" / "api" / "src" / "routes" / "mod.rs")
    ops = routes(BINARY_SRC / "services.rs")
    Facts.paths = {"api": api, "standalone": api, "engine": ops, "saga": ops, "projector": ops, "migrate": set()}


def facts_from_sources():
    read_cli()
    read_config()
    read_paths()
    Facts.error = None


def need_facts():
    assert Facts.error is None, f"needs the facts from the Rust sources: {Facts.error}"


# ---- what a command line and a configuration mean ---------------------------------------------


def parse_command(args, where):
    """(subcommand, {flag: value}) of a `distorch` argument list; fails on anything unknown."""
    need_facts()
    assert isinstance(args, list) and args, f"{where}: no command (the image's default is standalone; say it)"
    args = [str(a) for a in args]
    flags = {}
    sub = None
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            known = dict(Facts.global_flags)
            if sub:
                known.update(Facts.subcommands[sub])
            assert name in known, f"{where}: `distorch {sub or ''}` has no flag {name} (known: {', '.join(sorted(known))})"
            if known[name] and not eq:
                assert i + 1 < len(args), f"{where}: {name} needs a value"
                i += 1
                value = args[i]
            flags[name] = value if known[name] else True
        else:
            assert sub is None, f"{where}: unexpected argument {a!r} after subcommand {sub!r}"
            assert a in Facts.subcommands, f"{where}: {a!r} is not a subcommand of distorch (known: {', '.join(sorted(Facts.subcommands))})"
            sub = a
        i += 1
    assert sub, f"{where}: no subcommand in {args}"
    return sub, flags


def listen_port(sub, flags, config, where):
    """The port a serving subcommand listens on, from --listen or the configuration."""
    section = "standalone" if sub == "standalone" else "server"
    listen = flags.get("--listen") or (config or {}).get(section, {}).get("listen") or "127.0.0.1:8000"
    host, _, port = listen.rpartition(":")
    assert host.strip("[]") in ("0.0.0.0", "::"), (
        f"{where}: listens on {listen}: only the container itself could reach it; use 0.0.0.0:PORT"
    )
    return int(port)


def check_value(kind, value, where):
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list),
        "any": lambda v: True,
    }[kind]
    assert ok(value), f"{where} = {value!r}: expected a{'n' if kind == 'int' else ''} {kind}"


def check_toml_keys(table, node, where):
    """Every key of a parsed TOML table exists in the config tree (with a value of its kind)."""
    for key, value in table.items():
        path = f"{where}.{key}" if where else key
        if isinstance(node, Map):
            child = node.value
        else:
            assert key in node, f"unknown key `{path}` (known under [{where or 'top level'}]: {', '.join(sorted(node))})"
            child = node[key]
        if isinstance(child, (dict, Map)):
            assert isinstance(value, dict), f"`{path}` must be a table"
            check_toml_keys(value, child, path)
        else:
            check_value(child.kind, value, path)


def env_key(name, value, where):
    """The config path of a DISTORCH__SECTION__KEY variable, after checking that it exists."""
    need_facts()
    parts = name[len(ENV_PREFIX) :].lower().split("__")
    node = Facts.config
    for i, part in enumerate(parts):
        if isinstance(node, Map):
            node = node.value
            continue
        assert isinstance(node, dict), f"{where}: {name}: `{'.'.join(parts[:i])}` is a value, not a section"
        assert part in node, f"{where}: {name}: no key `{part}` in [{'.'.join(parts[:i]) or 'top level'}] (known: {', '.join(sorted(node))})"
        node = node[part]
    assert not isinstance(node, (dict, Map)), f"{where}: {name} names a section, not a key"
    if value is not None:
        text = str(value)
        if node.kind == "int":
            assert re.fullmatch(r"-?\d+", text), f"{where}: {name}={text!r} is not an integer"
        elif node.kind == "bool":
            assert text in ("true", "false"), f"{where}: {name}={text!r} is not true or false"
    return parts


def check_env_names(env, where):
    """Variables that look meant for DisTorch: DISTORCH__… keys that exist, or clap's own."""
    need_facts()
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            env_key(name, value, where)
        elif name.startswith("DISTORCH"):
            assert name in Facts.flag_envs, (
                f"{where}: {name} is neither DISTORCH__SECTION__KEY (two underscores) nor one of "
                f"{', '.join(sorted(Facts.flag_envs))}: distorch would ignore it"
            )


def url_scheme_host(url):
    scheme, _, rest = url.partition("://")
    authority = rest.split("/")[0].split("?")[0]
    hosts = [h.rpartition("@")[2].rsplit(":", 1)[0] for h in authority.rpartition("@")[2].split(",")]
    return scheme, [h for h in hosts if h]


def check_backends(sub, backends, where):
    """The backend URLs a subcommand opens are set, with schemes its role accepts."""
    for name, url in backends.items():
        if url:
            scheme = url.partition("://")[0] if "://" in url else ""
            assert scheme in BACKEND_SCHEMES[name], (
                f"{where}: backends.{name} = {url!r}: scheme {scheme!r}, expected {' or '.join(sorted(BACKEND_SCHEMES[name]))}://"
            )
    if sub == "standalone":
        return
    if sub != "migrate":
        log = backends.get("log", "")
        assert log.startswith("kafka://"), f"{where}: `distorch {sub}` needs backends.log = kafka://…, has {log!r}"
    for name in SERVICE_BACKENDS.get(sub, set()) - {"log"}:
        assert backends.get(name), f"{where}: `distorch {sub}` needs backends.{name}"
    if sub == "migrate":
        assert backends.get("store", "").startswith("scylla://") or backends.get("analytics", "").startswith("clickhouse://"), (
            f"{where}: migrate has nothing to migrate (no scylla:// store, no clickhouse:// analytics)"
        )


# ---- Kubernetes --------------------------------------------------------------------------------


def kustomize_dirs():
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def k8s_objects(directory, skip_broken=False):
    """(file, object) for every manifest in `directory` except the kustomization."""
    out = []
    for path in sorted(directory.glob("*.y*ml")):
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


def port_on(container, port):
    """Whether a container declares `port` (a number or a port name)."""
    key = "containerPort" if isinstance(port, int) else "name"
    return any(p.get(key) == port for p in container.get("ports", []))


def k8s_kustomization_lists_every_manifest(directory):
    path = directory / "kustomization.yaml"
    (kust,) = load_docs(path)
    listed = set(kust.get("resources", []))
    present = {p.name for p in directory.glob("*.y*ml")} - {"kustomization.yaml"}
    assert listed == present, f"{rel(path)} resources {sorted(listed)} != files {sorted(present)}"
    for img in kust.get("images", []):
        assert img.get("name") == IMAGE, f"{rel(path)}: images: entry {img.get('name')!r} matches no container (the image is {IMAGE!r})"


def k8s_well_formed(directory):
    objs = k8s_objects(directory)
    assert objs, f"no manifests in {rel(directory)}"
    seen = set()
    for path, o in objs:
        where = f"{rel(path)} ({o.get('kind')})"
        assert isinstance(o.get("apiVersion"), str), f"{where}: no apiVersion"
        assert isinstance(o.get("kind"), str), f"{where}: no kind"
        assert o.get("metadata", {}).get("name"), f"{where}: no metadata.name"
        want = API_VERSIONS.get(o["kind"])
        assert want is None or o["apiVersion"] == want, f"{where}: apiVersion {o['apiVersion']!r}, the served one is {want!r}"
        key = (o["kind"], o["metadata"]["name"])
        assert key not in seen, f"{where}: a second {key[0]} named {key[1]!r}"
        seen.add(key)


def config_map_files(workload, container, objs):
    """{file path in the container: (ConfigMap name, key)} of the ConfigMaps it mounts."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    config_maps = named(objs, "ConfigMap")
    files = {}
    for m in container.get("volumeMounts", []):
        v = volumes.get(m["name"], {})
        if "configMap" not in v:
            continue
        cm_name = v["configMap"]["name"]
        keys = set((config_maps.get(cm_name) or {}).get("data", {}))
        items = v["configMap"].get("items") or [{"key": k, "path": k} for k in sorted(keys)]
        for item in items:
            if m.get("subPath"):
                if m["subPath"] == item["path"]:
                    files[m["mountPath"]] = (cm_name, item["key"])
            else:
                files[f"{m['mountPath'].rstrip('/')}/{item['path']}"] = (cm_name, item["key"])
    return files


def container_config(workload, container, objs):
    """The parsed distorch.toml a container reads (DISTORCH_CONFIG), or None."""
    env = {e["name"]: e for e in container.get("env", [])}
    if "DISTORCH_CONFIG" not in env:
        return None
    file = env["DISTORCH_CONFIG"].get("value")
    files = config_map_files(workload, container, objs)
    assert file in files, f"DISTORCH_CONFIG={file} is not a mounted ConfigMap key (mounted: {sorted(files) or 'none'})"
    cm_name, key = files[file]
    cm = named(objs, "ConfigMap").get(cm_name)
    assert cm is not None, f"DISTORCH_CONFIG={file}: ConfigMap {cm_name!r} is not defined here"
    assert key in cm.get("data", {}), f"DISTORCH_CONFIG={file}: ConfigMap {cm_name!r} has no key {key!r}"
    return tomllib.loads(cm["data"][key]) if tomllib else {}


def k8s_runs_distorch(name, workload, objs):
    """Runs a known subcommand; probes paths it serves on the port it listens on."""
    containers = pod_spec(workload)["containers"]
    assert containers, f"{name}: no containers"
    for c in containers:
        where = f"{name}/{c['name']}"
        repo = c.get("image", "").rsplit(":", 1)[0]
        assert repo == IMAGE, f"{where}: image {c.get('image')!r}; every container here runs {IMAGE!r} (infra/Dockerfile)"
        assert "command" not in c, f"{where}: `command` replaces the image's ENTRYPOINT [distorch]; use args"
        sub, flags = parse_command(c.get("args"), where)
        if workload["kind"] == "Job":
            assert sub == "migrate" or (sub == "projector" and flags.get("--rebuild")), (
                f"{where}: a Job runs `distorch migrate` (or `projector --rebuild`), not {sub}"
            )
            restart = pod_spec(workload).get("restartPolicy")
            assert restart in ("OnFailure", "Never"), f"{where}: a Job needs restartPolicy OnFailure or Never, has {restart!r}"
            continue
        assert sub in Facts.paths and sub != "migrate", f"{where}: `distorch {sub}` does not serve; it cannot be a {workload['kind']}"
        config = container_config(workload, c, objs) or {}
        port = listen_port(sub, flags, config, where)
        assert port_on(c, port), f"{where}: listens on {port}, which is not a containerPort ({c.get('ports')})"
        served = Facts.paths[sub]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", None)):
            if probe == "startupProbe" and probe not in c:
                continue
            get = c.get(probe, {}).get("httpGet")
            assert get, f"{where}: no {probe}.httpGet"
            if path:
                assert get.get("path") == path, f"{where}: {probe} path {get.get('path')!r} != {path!r}"
            assert get.get("path") in served, f"{where}: {probe} GET {get.get('path')} is not served by `distorch {sub}` (serves {sorted(served)})"
            probe_port = resolve_port(c, get.get("port"))
            assert probe_port == port, f"{where}: {probe} port {probe_port}, but it listens on {port}"


def k8s_workload_wiring(name, workload, objs):
    """Selectors, volumes, the configuration file, environment and backends."""
    spec = workload["spec"]
    pod = pod_spec(workload)
    if workload["kind"] != "Job":
        tmpl_labels = spec["template"]["metadata"]["labels"]
        match = spec["selector"]["matchLabels"]
        assert match.items() <= tmpl_labels.items(), f"{name}: selector {match} does not match pod labels {tmpl_labels}"
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    config_maps = named(objs, "ConfigMap")
    secrets = named(objs, "Secret")
    for v in volumes.values():
        if "configMap" in v:
            cm = v["configMap"]["name"]
            assert cm in config_maps, f"{name}: volume {v['name']!r} names ConfigMap {cm!r}, which is not defined"
            for item in v["configMap"].get("items", []):
                assert item["key"] in config_maps[cm].get("data", {}), f"{name}: volume {v['name']!r} mounts key {item['key']!r}, not in ConfigMap {cm!r}"
    for c in pod["containers"]:
        where = f"{name}/{c['name']}"
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes or m["name"] in claims, f"{where}: mount {m['name']!r} has no volume"
        env = {}
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref.get("optional") or ref["name"] in secrets, (
                    f"{where}: {e['name']} needs Secret {ref['name']!r}, which is not defined here: pods would not start (mark it optional)"
                )
            cm_ref = e.get("valueFrom", {}).get("configMapKeyRef")
            if cm_ref and not cm_ref.get("optional"):
                assert cm_ref["key"] in config_maps.get(cm_ref["name"], {}).get("data", {}), f"{where}: {e['name']} reads a ConfigMap key that does not exist"
            env[e["name"]] = e.get("value")
        check_env_names(env, where)
        sub, _ = parse_command(c.get("args"), where)
        config = container_config(workload, c, objs)
        if sub == "standalone" or tomllib is None:  # without tomllib the file cannot be read
            continue
        assert config is not None, f"{where}: `distorch {sub}` gets no configuration (DISTORCH_CONFIG) to find its backends"
        backends = dict(config.get("backends", {}))
        for var in env:
            if var.startswith(ENV_PREFIX + "BACKENDS__"):
                # Set from a Secret: its value is not known here; the file's stays the fallback.
                backends.setdefault(var[len(ENV_PREFIX + "BACKENDS__") :].lower(), "")
        check_backends(sub, backends, where)
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


def dockerfile_uid():
    text = DOCKERFILE.read_text(encoding="utf-8")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users, "infra/Dockerfile sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"infra/Dockerfile: USER {uid} is not numeric; runAsNonRoot cannot verify a name"
    return int(uid)


def k8s_security_and_resources(name, workload):
    pod = pod_spec(workload)
    sc = pod.get("securityContext", {})
    assert sc.get("runAsNonRoot") is True, f"{name}: pod securityContext.runAsNonRoot is not true"
    uid = dockerfile_uid()
    assert sc.get("runAsUser", uid) == uid, f"{name}: runAsUser {sc.get('runAsUser')} != the image's USER {uid}"
    for c in pod["containers"]:
        where = f"{name}/{c['name']}"
        csc = c.get("securityContext", {})
        assert csc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation is not false"
        assert csc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem is not true"
        requests = c.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= requests.keys(), f"{where}: resources.requests needs cpu and memory, has {requests}"


def k8s_engines(objs):
    """Engines: no more replicas than commands partitions, time to snapshot on the way out."""
    engines = []
    for _, w in objs:
        if w.get("kind") in SERVING_KINDS:
            for c in pod_spec(w)["containers"]:
                if (c.get("args") or [None])[0] == "engine":
                    engines.append((w, c))
    if not engines:
        return
    for w, c in engines:
        name = f"{w['kind']}/{w['metadata']['name']}"
        config = container_config(w, c, objs) or {}
        partitions = config.get("api", {}).get("partitions", {}).get("commands", 8)
        replicas = w["spec"].get("replicas", 1)
        assert 1 <= replicas <= partitions, f"{name}: {replicas} replicas for {partitions} commands partitions"
        grace = pod_spec(w).get("terminationGracePeriodSeconds", 30)
        assert grace >= 30, f"{name}: terminationGracePeriodSeconds {grace}: a leaving engine needs time to write its snapshots"


def selects(selector, workload):
    return bool(selector) and selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()


def k8s_services_select_pods(objs):
    workloads = [o for _, o in objs if o.get("kind") in SERVING_KINDS]
    services = named(objs, "Service")
    assert services, "no Service"
    for svc_name, svc in services.items():
        sel = svc["spec"].get("selector", {})
        hits = [w for w in workloads if selects(sel, w)]
        assert hits, f"Service {svc_name!r}: selector {sel} matches no workload"
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            for w in hits:
                assert any(port_on(c, target) for c in pod_spec(w)["containers"]), (
                    f"Service {svc_name!r}: targetPort {target!r} is on no container of {w['metadata']['name']!r}"
                )
    for pdb_name, pdb in named(objs, "PodDisruptionBudget").items():
        sel = pdb["spec"].get("selector", {}).get("matchLabels", {})
        assert any(selects(sel, w) for w in workloads), f"PodDisruptionBudget {pdb_name!r}: selector {sel} matches no workload"


def k8s_config_maps(objs):
    config_maps = named(objs, "ConfigMap")
    assert config_maps, "no ConfigMap"
    need_facts()
    for name, cm in config_maps.items():
        text = cm.get("data", {}).get("distorch.toml")
        assert text is not None, f"ConfigMap {name!r} has no distorch.toml"
        if tomllib is None:
            continue
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise AssertionError(f"ConfigMap {name!r}: distorch.toml: {e}") from None
        try:
            check_toml_keys(parsed, Facts.config, "")
        except AssertionError as e:
            raise AssertionError(f"ConfigMap {name!r}: distorch.toml: {e}") from None


# ---- docker-compose ----------------------------------------------------------------------------


def compose():
    (doc,) = load_docs(COMPOSE)
    return doc


def runs_distorch(svc):
    return "build" in svc or str(svc.get("image", "")).rsplit(":", 1)[0] == IMAGE


def distorch_services(doc):
    return {n: s for n, s in doc.get("services", {}).items() if runs_distorch(s)}


def compose_env(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: (None if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in env.items()}


def compose_image():
    doc = compose()
    services = distorch_services(doc)
    assert services, "no service runs distorch"
    images = set()
    for name, svc in services.items():
        build = svc.get("build")
        assert build, f"{name}: runs {svc.get('image')} but does not build it (add build: infra/Dockerfile)"
        build = {"context": build} if isinstance(build, str) else build
        dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        assert dockerfile.resolve() == DOCKERFILE.resolve(), f"{name}: builds from {rel(dockerfile)}, not infra/Dockerfile"
        images.add(svc.get("image"))
    assert len(images) == 1, f"the DisTorch services name different images: {sorted(map(str, images))}"
    (image,) = images
    assert image and image.rsplit(":", 1)[0] == IMAGE, f"the DisTorch image is {image!r}, expected {IMAGE}:<tag> like infra/k8s"
    declared = set((doc.get("volumes") or {}).keys())
    for name, s in doc.get("services", {}).items():
        for v in s.get("volumes", []):
            source = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"service {name!r} uses volume {source!r}, not declared under volumes:"


def compose_pinned():
    for name, svc in compose().get("services", {}).items():
        if runs_distorch(svc):
            continue
        image = svc.get("image")
        assert image, f"{name}: no image"
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned to a version"


def healthcheck_probe(svc):
    """(path, port) a healthcheck requests, or None."""
    hc = svc.get("healthcheck")
    if not hc or hc.get("disable"):
        return None
    test = hc.get("test")
    text = " ".join(test) if isinstance(test, list) else str(test)
    m = re.search(r"/dev/tcp/[\w.]+/(\d+).*?GET (\S+) HTTP", text, re.S) or re.search(r"https?://[\w.]+:(\d+)(/\S*)", text)
    assert m, f"healthcheck {text!r}: cannot tell which URL it requests"
    port, path = m.groups()
    return path.strip("'\""), int(port)


def dependencies(svc):
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        deps = {d: {"condition": "service_started"} for d in deps}
    return {d: (c or {}).get("condition", "service_started") for d, c in deps.items()}


def healthy_before(services, name, seen=None):
    """Services known healthy when `name` starts: its service_healthy dependencies, and theirs
    (and those of dependencies it waits to complete)."""
    seen = set() if seen is None else seen
    out = set()
    for dep, cond in dependencies(services[name]).items():
        if dep in seen or dep not in services:
            continue
        seen.add(dep)
        if cond == "service_healthy":
            out.add(dep)
        if cond in ("service_healthy", "service_completed_successfully"):
            out |= healthy_before(services, dep, seen)
    return out


def compose_service(name):
    doc = compose()
    services = doc["services"]
    svc = services[name]
    sub, flags = parse_command(svc.get("command"), name)
    env = compose_env(svc)
    check_env_names(env, name)
    backends = {k: "" for k in BACKEND_SCHEMES}
    for var, value in env.items():
        if var.startswith(ENV_PREFIX):
            parts = env_key(var, value, name)
            if parts[0] == "backends":
                backends[parts[1]] = value or ""
        if var == "DISTORCH_CONFIG":
            raise AssertionError(f"{name}: DISTORCH_CONFIG: this check reads settings from the environment only; teach it about files")
    check_backends(sub, backends, name)
    # Backend hosts are Compose services that are healthy before this one starts.
    deps = dependencies(svc)
    for dep, c in deps.items():
        assert dep in services, f"{name}: depends on {dep!r}, which is not a service"
        if c == "service_healthy":
            hc = services[dep].get("healthcheck") or {}
            assert hc.get("test") and not hc.get("disable"), (
                f"{name}: waits for {dep!r} to be healthy, but {dep!r} has no healthcheck"
            )
        if c == "service_completed_successfully":
            assert str(services[dep].get("restart", "no")) in ("no", "False", "false"), (
                f"{name}: waits for {dep!r} to complete, but {dep!r} restarts ({services[dep].get('restart')})"
            )
    if sub != "standalone":
        needed = set(SERVICE_BACKENDS[sub]) | ({"store", "analytics"} if sub == "migrate" else set())
        for b in needed:
            url = backends.get(b, "")
            if not url or url.startswith("sqlite://"):
                continue
            for host in url_scheme_host(url)[1]:
                assert host in services, f"{name}: backends.{b} names host {host!r}, which is not a Compose service"
                assert host in healthy_before(services, name), (
                    f"{name}: uses {host!r} ({b}) but does not wait for it: depends_on {host}: condition: service_healthy"
                )
        migrations = [n for n, s in distorch_services(doc).items() if (s.get("command") or [None])[0] == "migrate"]
        if sub != "migrate" and migrations and (backends["store"].startswith("scylla://") or backends["analytics"].startswith("clickhouse://")):
            assert any(deps.get(m) == "service_completed_successfully" for m in migrations), (
                f"{name}: starts before the schemas exist: depends_on {migrations[0]}: condition: service_completed_successfully"
            )
    if sub == "migrate":
        assert "ports" not in svc, f"{name}: migrate serves nothing; it publishes no ports"
        return
    port = listen_port(sub, flags, {"server": {"listen": env.get(ENV_PREFIX + "SERVER__LISTEN")}} if env.get(ENV_PREFIX + "SERVER__LISTEN") else {}, name)
    for p in svc.get("ports", []):
        target = int(str(p).split(":")[-1].split("/")[0]) if not isinstance(p, dict) else int(p["target"])
        assert target == port, f"{name}: publishes container port {target}, but it listens on {port}"
    probe = healthcheck_probe(svc)
    assert probe, f"{name}: no healthcheck (dependents and `docker compose ps` need it)"
    path, probe_port = probe
    assert path == "/readyz", f"{name}: the healthcheck requests {path}, should be /readyz"
    assert path in Facts.paths[sub], f"{name}: `distorch {sub}` does not serve {path}"
    assert probe_port == port, f"{name}: the healthcheck probes port {probe_port}, but it listens on {port}"
    if sub == "engine":
        grace = str(svc.get("stop_grace_period", "10s"))
        m = re.fullmatch(r"(\d+)s", grace) or re.fullmatch(r"(\d+)m", grace)
        seconds = int(m.group(1)) * (60 if grace.endswith("m") else 1) if m else 0
        assert seconds >= 30, f"{name}: stop_grace_period {grace}: a stopping engine needs time to write its snapshots"


def compose_stack():
    """The distributed stack is all there: the four services, two engines, migrate."""
    roles = {}
    for name, svc in distorch_services(compose()).items():
        sub = str((svc.get("command") or ["standalone"])[0])
        replicas = (svc.get("deploy") or {}).get("replicas", 1)
        roles[sub] = roles.get(sub, 0) + replicas
    for sub in ("migrate", "api", "engine", "saga", "projector", "standalone"):
        assert roles.get(sub), f"no service runs `distorch {sub}`"
    assert roles["engine"] >= 2, f"{roles['engine']} engine: run two, so a failover can be tried"


# ---- Prometheus and the Dockerfile ---------------------------------------------------------------


def prometheus_scrapes_metrics():
    (prom,) = load_docs(INFRA / "prometheus.yml")
    jobs = prom.get("scrape_configs", [])
    assert jobs, "no scrape_configs"
    services = compose().get("services", {})
    scraped = set()
    for job in jobs:
        assert job.get("job_name"), f"a scrape config has no job_name: {job}"
        path = job.get("metrics_path", "/metrics")
        for sc in job.get("static_configs", []):
            for t in sc.get("targets", []):
                host, _, port = t.rpartition(":")
                assert host in services, f"job {job['job_name']}: target {t}: {host!r} is not a Compose service"
                svc = services[host]
                if runs_distorch(svc):
                    sub, flags = parse_command(svc.get("command"), host)
                    assert path in Facts.paths[sub], f"job {job['job_name']}: `distorch {sub}` does not serve {path}"
                    assert int(port) == listen_port(sub, flags, {}, host), f"job {job['job_name']}: {host} listens on another port than {port}"
                    scraped.add(host)
    serving = {n for n, s in distorch_services(compose()).items() if (s.get("command") or [None])[0] != "migrate"}
    assert serving <= scraped, f"Prometheus scrapes no /metrics of {sorted(serving - scraped)}"


def dockerfile_runs_distorch():
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    assert len(froms) >= 2, "not a multi-stage build"
    assert "cargo build --release -p distorch --locked" in text, "builder does not run cargo build --release -p distorch --locked"
    assert "--no-default-features" not in text, "the build drops default features"
    assert 'ENTRYPOINT ["distorch"]' in lines, 'no ENTRYPOINT ["distorch"]'
    runtime = lines[lines.index(froms[-1]) :]
    users = [l.split(None, 1)[1] for l in runtime if l.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage does not switch to a non-root USER"
    assert not any(l.upper().startswith("HEALTHCHECK") for l in lines), "HEALTHCHECK belongs to the orchestrator's probes"
    ignore = INFRA / "Dockerfile.dockerignore"
    assert ignore.is_file() and re.search(r"^/?target/?$", ignore.read_text(), re.M), "infra/Dockerfile.dockerignore must exclude target/"
    # The port every container listens on is the one the image declares.
    exposed = {int(p.split("/")[0]) for l in lines if l.upper().startswith("EXPOSE ") for p in l.split()[1:]}
    ports = set()
    for name, svc in distorch_services(compose()).items():
        sub, flags = parse_command(svc.get("command"), name)
        if sub != "migrate":
            ports.add(listen_port(sub, flags, {}, name))
    for directory in kustomize_dirs():
        for _, w in k8s_objects(directory, skip_broken=True):
            if w.get("kind") in SERVING_KINDS:
                for c in pod_spec(w)["containers"]:
                    ports.update(p["containerPort"] for p in c.get("ports", []))
    assert ports <= exposed, f"containers listen on {sorted(ports)}, the image EXPOSEs {sorted(exposed)}"


def dockerfile_has_backends():
    """The image's binary must open kafka://, scylla:// and clickhouse:// URLs."""
    cargo = (ROOT / "services" / "distorch" / "Cargo.toml").read_text(encoding="utf-8")
    build = DOCKERFILE.read_text(encoding="utf-8")
    for dep, feature in (("distorch-eventlog", "kafka"), ("distorch-store", "scylla")):
        m = re.search(rf"^{dep}\s*=\s*\{{([^}}]*)\}}", cargo, re.M)
        assert m, f"services/distorch/Cargo.toml does not depend on {dep}"
        on = re.search(r"features\s*=\s*\[([^\]]*)\]", m.group(1))
        in_cargo = on and f'"{feature}"' in on.group(1)
        in_docker = re.search(rf"--features[= ][^\n]*{dep}/{feature}", build)
        assert in_cargo or in_docker, f"the image's binary lacks {dep}/{feature}: enable it in Cargo.toml or the Dockerfile's cargo build"
    assert "clickhouse" in (ROOT / "shared" / "store" / "Cargo.toml").read_text(encoding="utf-8").split("[features]")[0], (
        "distorch-store no longer always builds the ClickHouse backend"
    )


def images_agree():
    """Compose and Kubernetes run the same image (repository) with the same user."""
    doc = compose()
    compose_repos = {str(s.get("image")).rsplit(":", 1)[0] for s in distorch_services(doc).values()}
    k8s_repos = set()
    for directory in kustomize_dirs():
        for _, w in k8s_objects(directory, skip_broken=True):
            if w.get("kind") in WORKLOAD_KINDS:
                k8s_repos.update(c.get("image", "").rsplit(":", 1)[0] for c in pod_spec(w)["containers"])
    assert compose_repos == k8s_repos == {IMAGE}, f"images: compose {sorted(compose_repos)}, k8s {sorted(k8s_repos)}, expected {IMAGE!r}"


def main():
    yaml_files = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file()) + [COMPOSE]
    for path in yaml_files:
        check(f"parse {rel(path)}", parses, path)
    check("code: subcommands, config keys and served paths read from the Rust sources", facts_from_sources)
    if results[-1][1]:
        Facts.error = results[-1][1]

    dirs = kustomize_dirs()
    if not dirs:
        results.append(("k8s: kustomizations", f"no kustomization.yaml under {rel(K8S)}"))
    for directory in dirs:
        d = rel(directory)
        check(f"k8s {d}: kustomization lists every manifest", k8s_kustomization_lists_every_manifest, directory)
        check(f"k8s {d}: manifests well formed", k8s_well_formed, directory)
        objs = k8s_objects(directory, skip_broken=True)
        workloads = [o for _, o in objs if o.get("kind") in WORKLOAD_KINDS]
        if objs and not workloads:
            results.append((f"k8s {d}: workloads", "no Deployment, StatefulSet or Job"))
        for w in workloads:
            name = f"{w['kind']}/{w['metadata']['name']}"
            what = "runs a one-shot subcommand" if w["kind"] == "Job" else "runs distorch, probes /healthz and /readyz it serves"
            check(f"k8s {d}: {name} {what}", k8s_runs_distorch, name, w, objs)
            check(f"k8s {d}: {name} selectors, volumes, config and env", k8s_workload_wiring, name, w, objs)
            check(f"k8s {d}: {name} non-root with resource requests", k8s_security_and_resources, name, w)
        check(f"k8s {d}: Services and PodDisruptionBudgets select pods and ports", k8s_services_select_pods, objs)
        check(f"k8s {d}: ConfigMap distorch.toml has only known keys", k8s_config_maps, objs)
        check(f"k8s {d}: engines fit the partitions and can snapshot", k8s_engines, objs)

    check("compose: DisTorch services share one image built from infra/Dockerfile", compose_image)
    check("compose: the distributed stack and standalone are there", compose_stack)
    check("compose: third-party images are pinned", compose_pinned)
    try:
        names = sorted(distorch_services(compose()))
    except Exception:  # the parse check above already failed
        names = []
    for name in names:
        check(f"compose: {name} command, environment, health and start order", compose_service, name)
    check("prometheus: scrapes /metrics of every DisTorch service", prometheus_scrapes_metrics)
    check("Dockerfile: non-root distorch on the port the files use", dockerfile_runs_distorch)
    check("Dockerfile: the binary has the Kafka, ScyllaDB and ClickHouse backends", dockerfile_has_backends)
    check("images: compose and k8s run the same image", images_agree)

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
