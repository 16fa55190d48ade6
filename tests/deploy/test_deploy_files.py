"""Offline checks of the deployment files: they parse, pass Ray's own validators, and agree with
pyproject.toml. No cluster, no network, no cloud credentials.

    .venv/bin/python -m pytest tests/deploy -q
"""

from __future__ import annotations

import copy
import ipaddress
import re
import shlex
from pathlib import Path
from typing import Iterator

import jsonschema
import pydantic
import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

# Private, but it is exactly what `ray up` runs before it touches a cloud API (commands.py,
# _bootstrap_config): defaults + merged setup commands, then the JSON schema and the node-type checks.
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

from noiseal_ray.config import RunConfig, make_config
from noiseal_ray.rundir import check_run_dir_path
from noiseal_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

CLUSTER_FILES = ["cluster.yaml", "deploy/cluster-local.yaml"]
YAML_FILES = [
    *CLUSTER_FILES,
    "deploy/serve.yaml",
    "deploy/kuberay-rayjob.yaml",
    "deploy/kuberay-rayservice.yaml",
]
TEXT_FILES = [*YAML_FILES, "deploy/Dockerfile", "deploy/README.md"]
IMPORT_PATH = "noiseal_ray.annotate.service:build_app"
PROJECT = "noiseal-ray"
GPU_EXTRA, CPU_EXTRA = "llm-gpu", "llm-cpu"


def read(rel: str) -> str:
    return (ROOT / rel).read_text(encoding="utf-8")


KUBERAY_KIND = {"deploy/kuberay-rayjob.yaml": "RayJob", "deploy/kuberay-rayservice.yaml": "RayService"}


def load(rel: str, kind: str | None = None) -> dict:
    """The YAML document of ``rel`` (of ``kind`` in a multi-document manifest)."""
    docs = list(yaml.safe_load_all(read(rel)))
    kind = kind or KUBERAY_KIND.get(rel)
    if kind:
        docs = [d for d in docs if d.get("kind") == kind]
    (doc,) = docs
    return doc


def validate_cluster(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def rayservice_serve_text() -> str:
    return load("deploy/kuberay-rayservice.yaml")["spec"]["serveConfigV2"]


def ray_cluster_spec(rel: str) -> dict:
    spec = load(rel)["spec"]
    return spec.get("rayClusterSpec") or spec["rayClusterConfig"]


def pod_containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- command extraction: shell lines in YAML lists, Dockerfile RUNs, README blocks, comments ----


def logical_lines(text: str) -> list[str]:
    """Lines with comment markers and list dashes dropped and backslash continuations joined."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = re.sub(r"^\s*(#+\s?)?", "", raw)  # usage examples in comments count too
        line = re.sub(r"^(- |RUN )", "", line).strip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return out


def command_args(text: str, command: str) -> list[list[str]]:
    """Arguments of every ``command`` (a regex) in ``text``, one shell command at a time."""
    found = []
    for line in logical_lines(text):
        for seg in re.split(r"&&|\|\||;|`|\s#\s|\s>", line):
            m = re.search(rf"(?:^|[\s/]){command}(?:\s|$)(.*)", seg)
            if m:
                try:
                    found.append(shlex.split(m.group(1)))
                except ValueError:  # prose with an apostrophe after the command
                    found.append(m.group(1).split())
    return found


_OPTIONS_WITH_VALUE = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url",
                       "--extra-index-url", "-f", "--find-links", "-t", "--target"}


def pip_install_errors(text: str, pins: dict[str, set[str]]) -> list[str]:
    """Every `pip install` must use pyproject's exact pins and install the project with llm-gpu."""
    errors = []
    for args in command_args(text, r"pip3?\s+install"):
        skip = False
        for tok in args:
            if skip or tok.startswith("-"):
                skip = tok in _OPTIONS_WITH_VALUE
                continue
            extras_m = re.search(r"\[([^\]]*)\]", tok)
            extras = {e.strip() for e in extras_m.group(1).split(",")} if extras_m else set()
            if tok[0] in "./~$":  # the project from a local checkout
                name, req = PROJECT, None
            else:
                try:
                    req = Requirement(tok)
                except InvalidRequirement:
                    errors.append(f"not a requirement: {tok!r}")
                    continue
                name = canonicalize_name(req.name)
            if name == PROJECT:
                if GPU_EXTRA not in extras or CPU_EXTRA in extras:
                    errors.append(f"{tok!r}: install the project with [{GPU_EXTRA}] and never {CPU_EXTRA}")
                continue
            if name not in pins:
                continue  # a tool outside the project (boto3 on a laptop): pyproject has no say
            specs = [(s.operator, s.version) for s in req.specifier]
            if len(specs) != 1 or specs[0][0] != "==" or {specs[0][1]} != pins[name]:
                errors.append(f"{tok!r}: pyproject pins {name}=={'/'.join(sorted(pins[name]))}")
    return errors


IMAGE_RE = re.compile(r"(?:[\w.\-]+(?::\d+)?/)*(rayproject/ray(?:-llm)?|noiseal-ray):([A-Za-z0-9_.\-]+)")


def image_tag_errors(text: str, *, ray_version: str, project_version: str) -> list[str]:
    """rayproject images carry pyproject's Ray version; our own image also the project version."""
    errors = []
    for m in IMAGE_RE.finditer(text):
        repo, tag = m.group(1), m.group(2)
        if repo.startswith("rayproject/"):
            ok = re.fullmatch(rf"{re.escape(ray_version)}-py3\d+-(gpu|cu\d+)", tag)
        else:
            ok = re.fullmatch(rf"{re.escape(project_version)}-ray{re.escape(ray_version)}-py3\d+-gpu", tag)
        if not ok:
            errors.append(f"{m.group(0)}: expected Ray {ray_version} (project {project_version})")
    return errors


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", YAML_FILES)
def test_yaml_parses_to_a_mapping(rel):
    docs = list(yaml.safe_load_all(read(rel)))
    assert docs and all(isinstance(d, dict) and d for d in docs), rel


def test_rayservice_serve_config_parses():
    assert isinstance(yaml.safe_load(rayservice_serve_text()), dict)


def test_pyproject_pins_one_version_per_package(pins):
    assert {name: v for name, v in pins.items() if len(v) > 1} == {}
    assert "ray" in pins and "torch" in pins


# --- cluster launcher ------------------------------------------------------------------------


@pytest.mark.parametrize("rel", CLUSTER_FILES)
def test_cluster_config_passes_ray_validation(rel):
    prepared = validate_cluster(load(rel))
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda c: c["available_node_types"]["gpu_llm"].update(min_worker=1), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["gpu_train"].pop("node_config"), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["cpu_worker"].update(min_workers=99), ValueError),
    ],
    ids=["typo-field", "no-node-config", "min-above-global-max"],
)
def test_cluster_validation_rejects_broken_copy(mutate, error):
    config = load("cluster.yaml")
    mutate(config)
    with pytest.raises(error):
        validate_cluster(config)


def test_aws_node_types():
    types = load("cluster.yaml")["available_node_types"]
    head = types[load("cluster.yaml")["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must run no tasks or actors"
    for name in ("cpu_worker", "gpu_train", "gpu_llm"):
        t = types[name]
        assert 0 <= t["min_workers"] <= t["max_workers"] and t["max_workers"] >= 1, name
    assert types["cpu_worker"]["node_config"]["InstanceType"].startswith(("m", "c", "r"))
    for name in ("gpu_train", "gpu_llm"):  # instance families with NVIDIA GPUs
        assert types[name]["node_config"]["InstanceType"].startswith(("g", "p")), name


def test_local_head_runs_no_work():
    start = " ".join(load("deploy/cluster-local.yaml")["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "--num-gpus=0" in start


@pytest.mark.parametrize("rel", CLUSTER_FILES)
def test_cluster_dashboard_on_loopback(rel):
    start = " ".join(load(rel)["head_start_ray_commands"])
    m = re.search(r"--dashboard-host[= ](\S+)", start)
    assert m and is_loopback(m.group(1)), "the job API must not be open on the network"


# --- Serve -----------------------------------------------------------------------------------


def serve_configs() -> dict[str, str]:
    return {"deploy/serve.yaml": read("deploy/serve.yaml"), "rayservice": rayservice_serve_text()}


@pytest.mark.parametrize("source", ["deploy/serve.yaml", "rayservice"])
def test_serve_config_passes_serve_schema(source):
    schema = ServeDeploySchema.model_validate(yaml.safe_load(serve_configs()[source]))
    (app,) = schema.applications
    assert app.import_path == IMPORT_PATH
    assert {"llm_model", "min_replicas", "max_replicas"} <= set(app.args)
    assert 0 <= app.args["min_replicas"] <= app.args["max_replicas"]
    assert app.args.get("use_gpu") is True, "GPU nodes scale from zero: autodetection sees none"


@pytest.mark.parametrize("source", ["deploy/serve.yaml", "rayservice"])
def test_every_application_imports_and_builds(source, require):
    """Import each application's import_path as Serve does and build it with the file's args (no
    cluster: building only assembles the deployment graph). The builder must exist and accept
    the args exactly as written."""
    import importlib.util

    from ray._common.utils import import_attr
    from ray.serve.deployment import Application

    import ray

    require(importlib.util.find_spec("vllm") is not None, "vLLM is not installed (scripts/setup.sh installs it)")
    # ray.serve.llm's builder needs a connected Ray; tests turn Ray's auto-connect off
    # (tests/conftest.py), so start a small local one here and stop it after.
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for app in yaml.safe_load(serve_configs()[source])["applications"]:
            builder = import_attr(app["import_path"])
            built = builder(app.get("args", {}))
            assert isinstance(built, Application), (app["name"], type(built))
    finally:
        # Later test modules start their own.
        if started and ray.is_initialized():
            ray.shutdown()


def test_builder_refuses_unknown_or_mistyped_args():
    from noiseal_ray.annotate.service import build_app

    with pytest.raises(pydantic.ValidationError, match="max_replica"):
        build_app({"llm_model": "x", "use_gpu": True, "max_replica": 2})
    with pytest.raises(pydantic.ValidationError, match="min_replicas"):
        build_app({"llm_model": "x", "use_gpu": True, "min_replicas": "1"})
    with pytest.raises(pydantic.ValidationError, match="exceeds max_replicas"):
        build_app({"llm_model": "x", "use_gpu": True, "min_replicas": 3, "max_replicas": 2})


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["applications"][0].update(import_path="build_app"),
        lambda c: c["applications"][0].update(port=9000),  # belongs in http_options
        lambda c: c["applications"].append(dict(c["applications"][0])),  # duplicate name
    ],
    ids=["bad-import-path", "port-in-app", "duplicate-app"],
)
def test_serve_schema_rejects_broken_copy(mutate):
    config = yaml.safe_load(read("deploy/serve.yaml"))
    mutate(config)
    with pytest.raises(pydantic.ValidationError):
        ServeDeploySchema.model_validate(config)


def test_rayservice_embeds_the_serve_yaml_applications():
    ours = yaml.safe_load(read("deploy/serve.yaml"))["applications"]
    assert yaml.safe_load(rayservice_serve_text())["applications"] == ours


def test_serve_yaml_binds_loopback():
    assert is_loopback(yaml.safe_load(read("deploy/serve.yaml"))["http_options"]["host"])
    assert not is_loopback("0.0.0.0") and is_loopback("127.0.0.1")


@pytest.mark.parametrize("source", ["deploy/serve.yaml", "rayservice"])
def test_non_loopback_host_is_explained(source):
    text = serve_configs()[source]
    host = yaml.safe_load(text).get("http_options", {}).get("host", "0.0.0.0")  # Serve's default
    if not is_loopback(host):
        comments = [line for line in text.splitlines() if line.strip().startswith("#")]
        assert any(host in line for line in comments), f"{source} binds {host} without saying why"


def test_llm_capacity_matches_replicas():
    args = yaml.safe_load(read("deploy/serve.yaml"))["applications"][0]["args"]
    gpu_llm = load("cluster.yaml")["available_node_types"]["gpu_llm"]
    assert args["max_replicas"] <= gpu_llm["max_workers"]
    groups = {g["groupName"]: g for g in ray_cluster_spec("deploy/kuberay-rayservice.yaml")["workerGroupSpecs"]}
    assert args["max_replicas"] <= groups["gpu-llm"]["maxReplicas"]


# --- KubeRay ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rel, kind", sorted(KUBERAY_KIND.items()))
def test_kuberay_cluster_shape(rel, kind, ray_version):
    doc = load(rel)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    cluster = ray_cluster_spec(rel)
    assert cluster["rayVersion"] == ray_version
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0", "the head must run no tasks or actors"
    images = {c["image"] for c in pod_containers(head)}
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        images |= {c["image"] for c in pod_containers(group)}
        gpus = [c["resources"]["limits"].get("nvidia.com/gpu", 0) for c in pod_containers(group)]
        assert (sum(gpus) > 0) == group["groupName"].startswith("gpu"), group["groupName"]
    assert len(images) == 1, "every pod of a Ray cluster must run the same image"


def test_rayjob_runs_the_pipeline():
    spec = load("deploy/kuberay-rayjob.yaml")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    args = shlex.split(spec["entrypoint"])
    assert args[:2] == ["noiseal-ray", "run"]
    flags = dict(zip(args[2::2], args[3::2]))
    assert flags["--address"] == "auto"
    # Storage that outlives the pods: checkpoints in an object store, the run directory on the
    # shared volume (test_run_dir_is_shared_in_every_rayjob_group).
    assert flags["--storage-path"].startswith(("s3://", "gs://"))
    groups = {g["groupName"] for g in spec["rayClusterSpec"]["workerGroupSpecs"]}
    assert {"cpu", "gpu-train", "gpu-llm"} <= groups


def rayjob_run_config_text() -> str:
    return load("deploy/kuberay-rayjob.yaml", kind="ConfigMap")["data"]["run.yaml"]


def test_rayjob_run_config_is_a_valid_run_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(rayjob_run_config_text(), encoding="utf-8")
    cfg = make_config(file=path)  # the project's own loader and validation
    # GPU groups start at zero pods: autodetection at start-up would see no GPU.
    assert cfg.use_gpu is True and cfg.llm_use_gpu is True
    groups = {g["groupName"]: g for g in ray_cluster_spec("deploy/kuberay-rayjob.yaml")["workerGroupSpecs"]}
    assert cfg.llm_max_replicas <= groups["gpu-llm"]["maxReplicas"]


def test_run_config_check_rejects_broken_copy(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(rayjob_run_config_text() + "use_gpus: true\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        make_config(file=path)


def test_readme_run_config_matches_the_configmap():
    blocks = re.findall(r"```yaml\n(# run-gpu\.yaml\n.*?)```", read("deploy/README.md"), flags=re.S)
    assert len(blocks) == 1
    assert yaml.safe_load(blocks[0]) == yaml.safe_load(rayjob_run_config_text())


def test_rayjob_config_file_is_mounted_on_the_head():
    spec = load("deploy/kuberay-rayjob.yaml")["spec"]
    args = shlex.split(spec["entrypoint"])
    config_path = args[args.index("--config") + 1]
    pod = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for c in pod["containers"] for m in c.get("volumeMounts", [])]
    sources = {
        f"{m['mountPath'].rstrip('/')}/run.yaml": volumes[m["name"]].get("configMap", {}).get("name")
        for m in mounts
    }
    assert sources.get(config_path) == load("deploy/kuberay-rayjob.yaml", kind="ConfigMap")["metadata"]["name"]


_RUN_FLAGS = {f"--{f.replace('_', '-')}" for f in RunConfig.model_fields} | {"--out", "--config"}


@pytest.mark.parametrize("rel", TEXT_FILES)
def test_run_commands_use_known_flags(rel):
    commands = command_args(read(rel), r"noiseal-ray\s+run")
    if rel == "deploy/kuberay-rayjob.yaml":
        commands.append(shlex.split(load(rel)["spec"]["entrypoint"])[2:])
    unknown = {a.split("=")[0] for args in commands for a in args if a.startswith("--")} - _RUN_FLAGS
    assert not unknown, f"{rel}: flags with no RunConfig field: {sorted(unknown)}"


# --- the run directory (--out) ---------------------------------------------------------------
# Ray Data tasks on every node write the round tables into --out, so it must be one POSIX path that
# every node mounts; run_pipeline refuses object-store URIs. The files once told users to pass
# `--out s3://...`, which fails at start-up.

RUN_CMD = r"noiseal-ray\s+run"
_OUT_MENTION = re.compile(r"--out(?:=|\s+)([^\s`'\"\\)]+)")


def yaml_strings(node) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from yaml_strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from yaml_strings(v)


def run_commands(rel: str) -> list[list[str]]:
    """Arguments of every `noiseal-ray run` command in ``rel``.

    One with no option at all is prose ("`noiseal-ray run` refuses ..."), one with `...` an elision.

    In YAML, comments are read as text and values as loaded: a RayJob entrypoint is a folded
    scalar, one command over several lines with no backslashes.
    """
    text = read(rel)
    if rel.endswith(".yaml"):
        comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
        found = command_args(comments, RUN_CMD)
        for doc in yaml.safe_load_all(text):
            for value in yaml_strings(doc):
                found += command_args(value, RUN_CMD)
    else:
        found = command_args(text, RUN_CMD)
    return [args for args in found if "..." not in args and any(a.startswith("-") for a in args)]


def out_value(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--out":
            return args[i + 1] if i + 1 < len(args) else ""
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    return None


def _run_dir_problem(out: str) -> str | None:
    try:
        check_run_dir_path(out)  # the rule run_pipeline applies
    except ConfigError as exc:
        return str(exc)
    return f"--out {out}: not a plain path" if "://" in out else None


def run_dir_errors(text: str, commands: list[list[str]]) -> list[str]:
    """Every --out of a cluster command: a path the pipeline accepts, absolute (the same on every
    node, not relative to the driver's directory). Every other `--out VALUE` in the text, prose
    included, must at least not be a URI."""
    errors = []
    for args in commands:
        out = out_value(args)
        if out is None:
            errors.append(f"noiseal-ray run {' '.join(args)}: no --out, so a folder on the head alone")
            continue
        problem = _run_dir_problem(out)
        if problem is None and not out.startswith("/"):
            problem = f"--out {out}: not an absolute path, so not the same directory on every node"
        if problem:
            errors.append(problem)
    for m in _OUT_MENTION.finditer(text):
        problem = _run_dir_problem(m.group(1))
        if problem:
            errors.append(problem)
    return errors


@pytest.mark.parametrize("rel", TEXT_FILES)
def test_run_dir_is_a_shared_path(rel):
    assert run_dir_errors(read(rel), run_commands(rel)) == []


def test_every_cluster_way_documents_a_run():
    for rel in ("cluster.yaml", "deploy/cluster-local.yaml", "deploy/kuberay-rayjob.yaml", "deploy/README.md"):
        assert run_commands(rel), f"{rel}: no noiseal-ray run command found; is the parser still right?"


def test_run_dir_check_catches_object_store_out():
    bad = [
        "#       --out s3://YOUR_BUCKET/noiseal/runs/run-1 \\",
        "- **S3**: `--out s3://YOUR_BUCKET/noiseal/runs/run-1 --storage-path s3://YOUR_BUCKET/x`.",
        "  entrypoint: >-",
    ]
    entrypoint = "noiseal-ray run --data s3://B/d.parquet --out gs://B/runs/run-1 --address auto"
    commands = command_args(bad[0], RUN_CMD) + command_args(entrypoint, RUN_CMD)
    assert len(run_dir_errors("\n".join(bad), commands)) == 3
    relative = command_args("noiseal-ray run --out runs/run-1 --address auto", RUN_CMD)
    missing = command_args("noiseal-ray run --data /mnt/shared/d.csv --address auto", RUN_CMD)
    assert len(run_dir_errors("", relative + missing)) == 2
    good = command_args("noiseal-ray run --out=/mnt/shared/noiseal/runs/run-1", RUN_CMD)
    assert run_dir_errors("an s3:// --out is refused", good) == []


def test_run_dir_is_shared_in_every_rayjob_group():
    rel = "deploy/kuberay-rayjob.yaml"
    out = out_value(shlex.split(load(rel)["spec"]["entrypoint"]))
    claim = load(rel, kind="PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "pods on different nodes mount it at once"
    cluster = ray_cluster_spec(rel)
    groups = {"head": cluster["headGroupSpec"]} | {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    for name, group in groups.items():
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        shared = [
            m for c in pod["containers"] for m in c.get("volumeMounts", [])
            if Path(out).is_relative_to(m["mountPath"])
            and volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"]
            and not m.get("readOnly")
        ]
        assert shared, f"group {name}: {out} is not on the claim {claim['metadata']['name']}"


def test_run_dir_is_mounted_on_every_aws_node():
    config = load("cluster.yaml")
    outs = {out_value(args) for args in run_commands("cluster.yaml")}
    assert outs and None not in outs
    binds = [re.fullmatch(r"-v\s+(\S+):(\S+)", opt) for opt in config["docker"]["run_options"]]
    binds = {m.group(2) for m in binds if m and m.group(1) == m.group(2)}  # same path inside and out
    for out in outs:
        (root,) = [b for b in binds if Path(out).is_relative_to(b)]
        mounts = [c for c in config["initialization_commands"] if re.search(rf"\bmount\b.*\s{re.escape(root)}\b", c)]
        assert mounts, f"{root}: bound into the container but never mounted on the host"


# --- versions agree with pyproject -----------------------------------------------------------


@pytest.mark.parametrize("rel", TEXT_FILES)
def test_pip_installs_match_pyproject(rel, pins):
    assert pip_install_errors(read(rel), pins) == []


def test_pip_install_check_catches_drift(pins):
    bad = [
        'pip install "ray[llm]==2.0.0"',
        "RUN pip install torch",
        'cd ~/x && pip install -e ".[llm-gpu,llm-cpu]"',
        "# pip install noiseal-ray",
    ]
    assert len(pip_install_errors("\n".join(bad), pins)) == len(bad)
    good = 'pip install --no-cache-dir "torch==2.13.0" boto3'
    assert pip_install_errors(good, {"torch": {"2.13.0"}}) == []


@pytest.mark.parametrize("rel", TEXT_FILES)
def test_image_tags_match_pyproject(rel, pyproject, ray_version):
    project_version = pyproject["project"]["version"]
    assert image_tag_errors(read(rel), ray_version=ray_version, project_version=project_version) == []


def test_image_tag_check_catches_drift():
    text = (
        "FROM rayproject/ray:2.59.0-py311-gpu\n"
        "image: registry.example.com/noiseal-ray:0.1.0-ray2.59.0-py311-gpu"
    )
    assert len(image_tag_errors(text, ray_version="2.60.0", project_version="0.1.0")) == 2


def test_dockerfile_base_and_python(pyproject, ray_version):
    text = read("deploy/Dockerfile")
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    m = re.fullmatch(rf"rayproject/ray:{re.escape(ray_version)}-py3(\d+)-(gpu|cu\d+)", base)
    assert m, base
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(f"3.{m.group(1)}")
    # every image reference uses the base image's Python
    py_tags = {t for rel in TEXT_FILES for t in re.findall(r"-(py3\d+)-", read(rel))}
    assert py_tags == {f"py3{m.group(1)}"}


# --- hygiene ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", TEXT_FILES)
def test_nothing_machine_specific_or_secret(rel):
    text = read(rel)
    assert str(ROOT) not in text and "/work/" not in text
    assert not re.search(r"\b\d{12}\b", text), "AWS account id"
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), "AWS access key"
    assert not re.search(r"\bhf_[A-Za-z0-9]{30,}\b", text), "Hugging Face token"
