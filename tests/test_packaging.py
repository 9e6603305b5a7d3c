"""setup.cfg declares every third-party package that the code and the tests use, so that `pip install -e ".[dev]"` is
all a fresh machine needs to run the whole suite (no manual install lines, no tests skipped for a missing package)."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "setup.cfg").is_file())
PROJECT = "galip-diffusers"
#: The code the tests run: the package, the tests and their helpers, the training scripts.
SCANNED = ("src", "tests", "training")
#: Packages that the tests need without any file importing them.
USED_INDIRECTLY = {"tensorboard": "accelerate's tracker, for train_galip.py --report_to tensorboard"}
#: Packages imported only behind a clear "pip install X" error, deliberately in no extra (CUDA-only tools).
OPTIONAL = {"bitsandbytes": "train_galip.py --use_8bit_adam (8-bit Adam, CUDA GPUs)"}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def _requirements() -> tuple[list[str], dict[str, list[str]]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    split = lambda value: [line.strip() for line in value.splitlines() if line.strip()]  # noqa: E731
    extras = {key: split(value) for key, value in config["options.extras_require"].items()}
    return split(config["options"]["install_requires"]), extras


def _closure(extra: str, extras: dict[str, list[str]]) -> set[str]:
    """Names of the packages that ``pip install ".[extra]"`` asks for directly, following ``galip-diffusers[...]``."""
    names = set()
    for requirement in extras[extra]:
        parsed = Requirement(requirement)
        if _name(requirement) == PROJECT:
            names |= set().union(*(_closure(sub, extras) for sub in parsed.extras))
        else:
            names.add(_name(requirement))
    return names


def _imported_modules() -> dict[str, str]:
    """Top-level module -> first file that imports it (``import``, ``from``, or ``find_spec("name")``)."""
    found: dict[str, str] = {}
    for base in SCANNED:
        for path in sorted((ROOT / base).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("find_spec", "import_module")
                      and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    names = [node.args[0].value]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _is_local(module: str) -> bool:
    """A module of this repository: top-level in src/, training/ or scripts/, or a helper beside the tests (pytest puts each
    test folder on ``sys.path``)."""
    folders = [ROOT / "src", ROOT / "training", ROOT / "scripts", ROOT / "tests",
               *(p for p in (ROOT / "tests").rglob("*") if p.is_dir())]
    return any((f / f"{module}.py").is_file() or (f / module / "__init__.py").is_file() for f in folders)


def test_the_dev_extra_declares_every_package_that_the_code_and_tests_use():
    core, extras = _requirements()
    declared = {_name(r) for r in core} | _closure("dev", extras)
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for module, where in sorted(_imported_modules().items()):
        if module in sys.stdlib_module_names or _is_local(module) or module in OPTIONAL:
            continue
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(module, [])}
        if not names:
            problems.append(f"{module} (imported in {where}) is not installed")
        elif PROJECT not in names and not names & declared:
            problems.append(f"{module} (imported in {where}) comes from {sorted(names)}, declared nowhere in setup.cfg")
    problems += [f"{name} ({why}) is not in [dev]" for name, why in USED_INDIRECTLY.items() if name not in declared]
    assert not problems, "\n".join(problems)


def test_each_package_is_declared_once_and_torchvision_stays_out_of_the_core_install():
    core, extras = _requirements()
    core_names = [_name(r) for r in core]
    assert "torchvision" not in core_names and "jinja2" in core_names  # jinja2: model cards (huggingface_hub templates)
    assert len(core_names) == len(set(core_names))
    for extra, requirements in extras.items():
        names = [_name(r) for r in requirements]
        assert len(names) == len(set(names)) and not set(names) & set(core_names), extra
    assert {"matplotlib"} <= _closure("benchmark", extras) and {"tensorboard", "wandb"} <= _closure("train", extras)
    assert all(_closure(extra, extras) <= _closure("dev", extras) for extra in extras)  # [dev] holds every extra


def test_the_core_install_does_not_pull_torchvision():
    """Over the installed packages' metadata: nothing that ``pip install galip-diffusers`` (no extra) brings, directly
    or through a dependency, asks for torchvision (only [convert] and [eval] do, through clip-anytorch and
    torch-fidelity)."""
    core, _ = _requirements()
    pending = [Requirement(r) for r in core]
    seen = set()
    while pending:
        requirement = pending.pop()
        name = _name(str(requirement))
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # a dependency for another platform or Python
        for text in requires:
            dependency = Requirement(text)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                pending.append(dependency)
    assert "torch" in seen and "jinja2" in seen
    assert "torchvision" not in seen
