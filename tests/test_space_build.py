"""scripts/build_space.py: the Space folder it writes holds the package and its data, its requirements.txt is valid
for pip, and app.py serves from that folder alone (offline; the tiny model of the session tests is shipped)."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


pytest.importorskip("gradio", reason="the Space needs the [space] extra (gradio)")

from .test_space_sessions import model_dir  # noqa: E402, F401  (module fixture)


ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build_space.py"
PACKAGE_DATA = ["assets", "space/static"]  # folders of non-Python files the package needs at run time


def run_script(*args, timeout=300):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory, model_dir):  # noqa: F811
    root = tmp_path_factory.mktemp("space_build")
    result = run_script("--out", root / "space", "--wheel-dir", root / "wheels", "--model", model_dir)
    assert result.returncode == 0, result.stderr
    (wheel,) = (root / "wheels").glob("diffusers_yan-*-py3-none-any.whl")
    return root / "space", wheel, result.stdout


def package_data_files() -> list[str]:
    src = ROOT / "src" / "diffusers_yan"
    files = [p for folder in PACKAGE_DATA for p in (src / folder).rglob("*") if p.is_file()]
    files = [str(p.relative_to(src.parent)) for p in files if "__pycache__" not in p.parts]
    assert any(f.endswith(".safetensors") for f in files) and any(f.endswith("play.js") for f in files)
    return files


def test_wheel_and_space_folder_hold_the_package_and_its_data(built):
    space, wheel, stdout = built
    with zipfile.ZipFile(wheel) as archive:
        sizes = {info.filename: info.file_size for info in archive.infolist()}
    for name in package_data_files():
        assert sizes.get(name) == (ROOT / "src" / name).stat().st_size, name
        assert (space / name).stat().st_size == sizes[name], name  # unpacked next to app.py
    assert "diffusers_yan/space/zerogpu.py" in sizes and (space / "diffusers_yan" / "space" / "zerogpu.py").is_file()
    for name in ("app.py", "README.md"):
        assert (space / name).read_bytes() == (ROOT / "spaces_app" / name).read_bytes()
    assert (space / "models" / "tiny-sim" / "model_index.json").is_file()
    assert sorted(p.name for p in space.iterdir()) == [
        "README.md",
        "app.py",
        "diffusers_yan",
        wheel.name.split("-py3")[0] + ".dist-info",
        "models",
        "requirements.txt",
    ]
    assert f"hf upload <user>/<space> {space} . --repo-type space" in stdout


def test_requirements_are_the_wheels_and_pip_accepts_them(built):
    space, wheel, _ = built
    lines = [line for line in (space / "requirements.txt").read_text().splitlines() if line.strip()]
    requirements = [line for line in lines if not line.startswith(("#", "--"))]
    names = [line.split(">")[0].split("=")[0].split("<")[0] for line in requirements]
    assert {"torch", "diffusers", "gradio", "uvicorn", "spaces"} <= set(names)
    assert not any(name.startswith(("diffusers-yan", "diffusers_yan", "pytest", "vizdoom")) for name in names)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines  # --hardware cpu, the default

    # pip reads the file from the Space folder; offline: everything is already installed in the test environment
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--no-deps",
        "--no-index",
        "-r",
        "requirements.txt",
    ]
    result = subprocess.run(command, cwd=space, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("Requirement already satisfied") == len(requirements)

    # GPU and ZeroGPU hardware get PyPI's (CUDA) torch: no CPU index
    spec = importlib.util.spec_from_file_location("build_space", SCRIPT)
    build_space = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_space)
    gpu = build_space.space_requirements(wheel, "gpu").splitlines()
    assert not any(line.startswith("--") for line in gpu)
    assert [line for line in gpu if not line.startswith("#")] == requirements


def test_app_serves_from_the_space_folder(built):
    space, _, _ = built
    code = """
import json, runpy
from fastapi.testclient import TestClient
import diffusers_yan
app = runpy.run_path("app.py", run_name="space_app")["app"]  # module level only: it serves under __main__
with TestClient(app) as client:
    page, config, clip = client.get("/"), client.get("/api/config").json(), client.get("/clip/")
    print(json.dumps({"package": diffusers_yan.__file__, "page": [page.status_code, "play.js" in page.text],
                      "models": [m["name"] for m in config["models"]], "clip": clip.status_code}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YAN_", "SPACES_")) and k != "PYTHONPATH"}
    # run from the Space folder, which `python app.py` puts first on sys.path
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=space, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).resolve().is_relative_to(space.resolve())  # not the checkout's package
    assert report["page"] == [200, True] and report["clip"] == 200
    assert report["models"] == ["tiny-sim"]  # the shipped --model, not the bundled one


def test_build_refuses_bad_arguments(built, tmp_path):
    space, _, _ = built
    result = run_script("--out", space)
    assert result.returncode != 0 and "is not an empty folder" in result.stderr
    result = run_script("--out", tmp_path / "space", "--model", tmp_path)
    assert result.returncode != 0 and "no model_index.json" in result.stderr
    assert not (tmp_path / "space").exists()
