"""Every manifest in deploy/ is well-formed and names things that exist: kinds, fields, modules, CLI flags, files."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.serving import ServeConfig

REPO = Path(__file__).parents[1]
DEPLOY = REPO / "deploy"
IMAGE = "forgescan:0.1.0"
KUBERAY_KINDS = {
    "raycluster.yaml": "RayCluster",
    "rayjob.yaml": "RayJob",
    "raycronjob.yaml": "RayCronJob",
    "rayservice.yaml": "RayService",
}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def parse_entrypoint(command: str) -> argparse.Namespace:
    """`python -m jobs.<name> ...` parsed by that job's real argument parser (as `python -m` would)."""
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], command
    module_name = words[2]
    assert module_name.startswith("jobs."), command
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=module_name, exit_on_error=False)
    module.add_arguments(parser)
    try:
        return parser.parse_args(words[3:])
    except SystemExit as error:  # argparse exits on unknown or missing arguments
        raise AssertionError(f"`{command}` is rejected by {module_name}'s parser") from error


def containers(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec.get("workerGroupSpecs", [])]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def test_every_yaml_in_deploy_is_covered_here():
    found = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*.yaml")}
    assert found == {"cluster.yaml", "serve-config.yaml", *(f"kuberay/{name}" for name in KUBERAY_KINDS)}


@pytest.mark.parametrize("name", sorted(KUBERAY_KINDS))
def test_kuberay_manifest_has_its_kind_fields_and_our_image(name):
    manifest = load(DEPLOY / "kuberay" / name)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == KUBERAY_KINDS[name]
    assert manifest["metadata"]["name"]
    spec = manifest["spec"]
    cluster = {
        "RayCluster": lambda: spec,
        "RayJob": lambda: spec["rayClusterSpec"],
        "RayCronJob": lambda: spec["rayJobTemplate"]["spec"]["rayClusterSpec"],
        "RayService": lambda: spec["rayClusterConfig"],
    }[manifest["kind"]]()
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["headGroupSpec"]["rayStartParams"] is not None
    for group in cluster.get("workerGroupSpecs", []):
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert {c["image"] for c in containers(cluster)} == {IMAGE}


@pytest.mark.parametrize("name,path", [("rayjob.yaml", ("spec",)), ("raycronjob.yaml", ("spec", "rayJobTemplate", "spec"))])
def test_job_entrypoints_parse_with_the_real_cli(name, path):
    spec = load(DEPLOY / "kuberay" / name)
    for key in path:
        spec = spec[key]
    args = parse_entrypoint(spec["entrypoint"])
    assert args.source.startswith("s3://") and args.output.startswith("s3://")
    if name == "raycronjob.yaml":
        assert load(DEPLOY / "kuberay" / name)["spec"]["concurrencyPolicy"] == "Forbid"
        assert not args.full  # nightly runs are incremental


def test_raycluster_documents_a_submit_the_cli_accepts():
    comment = (DEPLOY / "kuberay" / "raycluster.yaml").read_text().splitlines()[0]
    command = comment.split(" -- ", 1)[1].rstrip("`").replace("...", "s3://bucket/prefix --output s3://bucket/out")
    parse_entrypoint(command)


def serve_applications() -> list[dict]:
    return load(DEPLOY / "serve-config.yaml")["applications"]


def test_serve_config_builds_the_application_with_valid_settings():
    applications = serve_applications()
    assert [app["name"] for app in applications] == ["forgescan"]
    for app in applications:
        module_name, attribute = app["import_path"].split(":")
        builder = getattr(importlib.import_module(module_name), attribute)
        config = ServeConfig.from_dict(app["args"])
        assert config.replicas == (1, 4) and config.gpus_per_replica == 1
        application = builder(app["args"])
        assert type(application).__name__ == "Application"


def test_serve_config_rejects_unknown_settings_by_name():
    with pytest.raises(ValueError, match="max_upload_mb"):
        ServeConfig.from_dict({"max_upload_mb": 5})


def test_rayservice_runs_the_serve_config_applications():
    service = load(DEPLOY / "kuberay" / "rayservice.yaml")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded["applications"] == serve_applications()
    ports = {p["containerPort"] for p in service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {8265, 8000} <= ports


def test_cluster_launcher_config_uses_our_image_and_defined_node_types():
    config = load(DEPLOY / "cluster.yaml")
    assert config["docker"]["image"] == IMAGE
    assert config["head_node_type"] in config["available_node_types"]
    assert config["provider"]["type"] == "aws"
    for node_type in config["available_node_types"].values():
        assert "node_config" in node_type and "resources" in node_type
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands"):
        for command in config.get(key, []):
            for entrypoint in re.findall(r"python -m jobs\.\S+[^;&|]*", command):
                parse_entrypoint(entrypoint)


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_dockerfile_copies_existing_files_and_every_package_the_entrypoints_import():
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM" and "ray:2.60.0" in instructions[0][1]
    copied = set()
    for instruction, arguments in instructions:
        if instruction == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
                copied.add(source.rstrip("/"))
    packages = {p.split("*")[0] for p in load_pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"the image leaves out packaged code: {sorted(packages - copied)}"
    assert {"pyproject.toml", "README.md"} <= copied
    assert any(i == "RUN" and "pip install" in a for i, a in instructions)
    assert f"-t {IMAGE}" in (DEPLOY / "Dockerfile").read_text()


def load_pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_forgescan_benchmark_code_is_packaged_and_in_the_image():
    """`forgescan benchmark` imports bench/: it must be an installed package, not a sys.path edit."""
    from setuptools import find_packages

    include = load_pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packaged = set(find_packages(where=str(REPO), include=include))
    assert {"bench", "jobs", "pipeline", "forensics"} <= packaged
    assert "sys.path" not in (REPO / "jobs" / "benchmark.py").read_text()
