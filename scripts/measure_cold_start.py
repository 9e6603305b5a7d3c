"""Measure the cold start of ``galip-generate``: process start to PNG written, and what the time goes to.

    python scripts/measure_cold_start.py [--model galip-shapes] [--repeats 5] [--out results/cold_start]

Times, each in fresh processes (median over ``--repeats``):

* ``galip-generate`` as found on PATH (with pyenv this is a bash shim that execs the real script);
* the console script installed beside this interpreter (``<bin>/galip-generate``, no shim), with its default engine
  (``auto``: the lite runtime for the packaged model) and with ``--engine diffusers``;
* ``python -m galip_diffusers generate`` (the ``galip`` command, which imports galip_diffusers first);
* the imports alone: ``torch``; the lite runtime; ``diffusers``' ``DiffusionPipeline``; transformers' CLIP models;
  ``galip_diffusers``.

Writes ``cold_start.json`` and ``cold_start.md`` under ``--out`` and prints the table. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "src"))

from galip_cli.common import as_argument_error, check_output_folder  # noqa: E402
from galip_core.finite import check_number_in_range  # noqa: E402
from galip_diffusers.benchmark.cold_start import cold_start_seconds, run_timed, runs_summary  # noqa: E402
from galip_diffusers.benchmark.speed_figures import machine_description  # noqa: E402

IMPORTS = {
    "python -c pass": "pass",
    "import torch": "import torch",
    "galip_core runtime": "import galip_cli.generate, galip_core.runtime",
    "from diffusers import DiffusionPipeline": "from diffusers import DiffusionPipeline",
    "transformers CLIP models": "from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer",
    "import galip_diffusers": "import galip_diffusers",
}


def time_python(code: str, repeats: int) -> dict[str, float | list[float]]:
    """Wall time of ``python -c code`` in fresh processes."""
    runs = []
    for _ in range(repeats):
        seconds, proc = run_timed([sys.executable, "-c", code])
        if proc.returncode != 0:
            raise RuntimeError(f"python -c {code!r} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        runs.append(seconds)
    return runs_summary(runs)


def check_pipeline_model(flag: str, name_or_path: str) -> None:
    """``galip generate --model`` must find a pipeline folder (``model_index.json``) or a packaged model."""
    from galip_core.packaged import unknown_model_note
    from galip_core.runtime import resolve_pretrained

    folder = resolve_pretrained(name_or_path)
    if not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise FileNotFoundError(f"{flag} {name_or_path!r} is not a pipeline folder (no model_index.json) or a packaged "
                                f"model ({unknown_model_note(name_or_path)}).")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="galip-shapes", help="pipeline folder or packaged name")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per measurement, >= 1 (default: 5)")
    parser.add_argument("--out", default=os.path.join("results", "cold_start"),
                        help="output folder (cold_start.json and cold_start.md in it are replaced)")
    args = parser.parse_args(argv)
    as_argument_error(parser, lambda: check_number_in_range("--repeats", args.repeats, 1, integer=True))
    as_argument_error(parser, lambda: check_output_folder("--out", args.out))
    as_argument_error(parser, lambda: check_pipeline_model("--model", args.model))  # before any timing

    commands = {}  # name -> (command, extra arguments)
    on_path = shutil.which("galip-generate")
    if on_path:
        commands[f"galip-generate on PATH ({on_path})"] = ([on_path], [])
    beside = os.path.join(os.path.dirname(sys.executable), "galip-generate")
    script = beside if os.path.isfile(beside) else on_path
    if script and os.path.realpath(script) != os.path.realpath(on_path or ""):
        commands[f"galip-generate beside the interpreter ({beside})"] = ([script], [])
    if script:
        commands["galip-generate --engine diffusers"] = ([script], ["--engine", "diffusers"])
    commands["python -m galip_diffusers generate"] = ([sys.executable, "-m", "galip_diffusers", "generate"], [])

    report = {"machine": machine_description("cpu"), "model": args.model, "repeats": args.repeats,
              "load_average_before": list(os.getloadavg()), "generate": {}, "imports": {}}
    for name, (command, extra) in commands.items():
        report["generate"][name] = cold_start_seconds(args.model, repeats=args.repeats, command=command,
                                                      extra_args=extra)
    for name, code in IMPORTS.items():
        report["imports"][name] = time_python(code, args.repeats)

    lines = [f"Cold start, {report['machine']}, median of {args.repeats} runs "
             f"(load average before: {report['load_average_before'][0]:.2f})", "",
             "| what | median s | runs (s) |", "| --- | --- | --- |"]
    for section in ("generate", "imports"):
        for name, entry in report[section].items():
            lines.append(f"| {name} | {entry['median_s']:.2f} | {', '.join(f'{t:.2f}' for t in entry['runs_s'])} |")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cold_start.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "cold_start.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
