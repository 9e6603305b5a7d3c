"""Speed-ups and the three outputs of ``galip-benchmark``: ``benchmark.json``, ``benchmark.md``, ``benchmark.png``."""

from __future__ import annotations

import json
import math
import os
from typing import Any

GALIP = "galip"


def _ok(row: dict[str, Any]) -> bool:
    return row["status"] == "ok"


def add_speedups(report: dict[str, Any]) -> None:
    """Speed-up of every GALIP row over every peer row that ran on the same device in the same dtype.

    ``per_image`` = peer latency per image / GALIP latency per image (median, first batch size of each, batch 1 by
    default); ``per_pixel`` = ratio of pixels per second (the models make different resolutions);
    ``throughput`` = ratio of images/s at every batch size both rows ran."""
    rows = report["rows"]
    speedups = []
    for galip in (r for r in rows if r["kind"] == GALIP and _ok(r)):
        galip["speedup_over"] = {}
        for peer in (r for r in rows if r["kind"] != GALIP and _ok(r)):
            if (peer["device"], peer["dtype"]) != (galip["device"], galip["dtype"]):
                continue
            per_image = peer["latency_s"]["median"] / galip["latency_s"]["median"]
            per_pixel = per_image * (galip["resolution"] / peer["resolution"]) ** 2
            common = [b for b in galip["throughput"] if b in peer["throughput"]]
            entry = {
                "galip": galip["name"], "peer": peer["name"], "peer_model": peer["model"],
                "device": galip["device"], "dtype": galip["dtype"], "per_image": per_image, "per_pixel": per_pixel,
                "galip_latency_s": galip["latency_s"]["median"], "peer_latency_s": peer["latency_s"]["median"],
                "throughput": {b: galip["throughput"][b]["images_per_s"] / peer["throughput"][b]["images_per_s"]
                               for b in common},
                "peer_timing": peer["timing"],
            }
            if galip.get("cpu_time_per_image_s") and peer.get("cpu_time_per_image_s"):
                entry["per_image_cpu_time"] = peer["cpu_time_per_image_s"] / galip["cpu_time_per_image_s"]
            speedups.append(entry)
            galip["speedup_over"][peer["model"]] = per_image
            peer.setdefault("galip_speedup", {})[galip["name"]] = per_image
    report["speedups"] = speedups


# ----------------------------------------------------------------------------------------------------- formatting
def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= digits:
        return f"{value:,.0f}"
    return f"{value:.{max(0, digits - 1 - magnitude)}f}"


def _params(n: int) -> str:
    return f"{n / 1e6:,.1f}M"


def _row_cells(row: dict[str, Any]) -> list[str]:
    head = [row["name"], row["mode"], f"{row['device']}/{row['dtype']}"]
    if not _ok(row):
        return head + ["-"] * 10 + [f"**error**: {row['error']}"]
    lat = row["latency_s"]
    steps = str(row["steps"]) + (f" ({row['unet_evals']} UNet evals)" if row.get("unet_evals") else "")
    params = f"{_params(row['params']['total'])} / {_params(row['params']['learnable'])}"
    gflops = row.get("gflops_per_image")
    gf = _num(gflops["total"]) if gflops else "-"
    if row.get("gflops_per_image_executed"):
        gf += f" ({_num(row['gflops_per_image_executed'])} executed)"
    throughput = ", ".join(f"{_num(e['images_per_s'])} @{b}" for b, e in row["throughput"].items())
    first = next(iter(row["throughput"].values()))
    speed = ""
    if row.get("galip_speedup"):
        speed = "; ".join(f"{_num(v)}x" for v in row["galip_speedup"].values())
    return head + [
        f"{row['resolution']} px", steps, params, gf,
        f"{_num(lat['median'])} ({_num(lat['p90'])}) [{_num(lat['min'])}]", _num(row.get("cpu_time_per_image_s")),
        throughput, _num(first["pixels_per_s"] / 1e6),
        _num(row["peak_memory_mb"], 4), row["timing"] + ("*" if row["timing"] == "extrapolated" else ""), speed,
    ]


def to_markdown(report: dict[str, Any]) -> str:
    env, settings = report["environment"], report["settings"]
    load = env.get("load_average")
    lines = [
        "# galip-benchmark",
        "",
        f"- machine: {env['cpu']} ({env['cpu_count']} CPUs, torch threads {env['torch_threads']}, "
        f"{env['cpu_capability']}; bf16 {env.get('cpu_bf16', 'unknown')})"
        f"{'; GPU ' + env['gpu'] if env.get('gpu') else ''}",
        f"- software: torch {env['torch']}, diffusers {env['diffusers']}, transformers {env['transformers']}, "
        f"Python {env['python']}",
        f"- load average (1/5/15 min) before: {load}, after: {env.get('load_average_after')}",
        f"- settings: steps {settings['steps']}, GALIP batch sizes {settings['batch_sizes']} x {settings['repeats']} "
        f"repeats, peer batch sizes {settings['peer_batch_sizes']} x {settings['peer_repeats']} repeats, "
        f"quick={settings['quick']}, created {report['created']}",
        "",
        "| model | mode | device/dtype | resolution | steps | params total / learnable | GFLOPs/image "
        "| s/image, batch 1: median (p90) [min] | CPU s/image | images/s @batch | Mpixels/s (batch 1) "
        "| peak memory MB | timing | GALIP speed-up (per image) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(_row_cells(row)) + " |" for row in report["rows"]]
    if report.get("speedups"):
        lines += ["", "## Speed-up of GALIP, same device, dtype and run", "",
                  "| GALIP | peer | device/dtype | per image | per pixel | per image, CPU time | throughput ratio @batch "
                  "| peer timing |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in report["speedups"]:
            thr = ", ".join(f"{_num(v)}x @{b}" for b, v in s["throughput"].items())
            cpu = f"{_num(s['per_image_cpu_time'])}x" if s.get("per_image_cpu_time") else "-"
            lines.append(f"| {s['galip']} | {s['peer']} | {s['device']}/{s['dtype']} | {_num(s['per_image'])}x "
                         f"| {_num(s['per_pixel'])}x | {cpu} | {thr} | {s['peer_timing']} |")
    lines += ["", "## Notes", ""]
    extrapolations = sorted({r["extrapolation"] for r in report["rows"] if r.get("extrapolation")})
    lines += [f"- \\* extrapolated: {text}" for text in extrapolations]
    lines += [f"- {key}: {text}" for key, text in report["notes"].items()]
    lines.append(f"- peak memory: {', '.join(sorted({r['peak_memory_kind'] for r in report['rows'] if _ok(r)}))}")
    for row in report["rows"]:
        if _ok(row) and row.get("numerics"):
            n = row["numerics"]
            lines.append(f"- {row['name']} {row['device']}/{row['dtype']}: generator max abs diff vs the fp32 default "
                         f"forward {n['max_abs_diff_vs_fp32_default']:.2e} (output max abs "
                         f"{n['reference_max_abs']:.3f})")
    return "\n".join(lines) + "\n"


def write_plot(report: dict[str, Any], path: str) -> str | None:
    """Horizontal bars of seconds per image (batch 1, log scale); hatched bars are extrapolated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if _ok(r)]
    if not rows:
        return None
    labels = [f"{r['name']} [{r['device']}/{r['dtype']}, {r['resolution']} px]" for r in rows]
    values = [r["latency_s"]["median"] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.6))
    colors = ["tab:orange" if r["kind"] == GALIP else "tab:blue" for r in rows]
    bars = ax.barh(range(len(rows)), values, color=colors)
    for bar, row, value in zip(bars, rows, values):
        if row["timing"] == "extrapolated":
            bar.set_hatch("//")
        ax.text(value, bar.get_y() + bar.get_height() / 2, f" {_num(value)} s", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image at batch 1 (log scale; hatched = extrapolated from --quick)")
    env = report["environment"]
    ax.set_title(f"galip-benchmark: {env['cpu']}, {env['torch_threads']} threads", fontsize=9)
    ax.set_xlim(min(values) / 2, max(values) * 8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out_dir: str, plot: bool = True) -> dict[str, str]:
    """Write ``benchmark.json``, ``benchmark.md`` and (with matplotlib) ``benchmark.png`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "benchmark.json"), "md": os.path.join(out_dir, "benchmark.md")}
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(_finite(report), f, indent=2, allow_nan=False, default=str)
        f.write("\n")
    report["markdown"] = to_markdown(report)
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(report["markdown"])
    if plot:
        try:
            png = write_plot(report, os.path.join(out_dir, "benchmark.png"))
        except ImportError:
            report["plot_error"] = ("matplotlib is not installed (pip install 'galip-diffusers[benchmark]'): "
                                    "benchmark.png skipped")
        else:
            if png:
                paths["png"] = png
    return paths


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def print_summary(report: dict[str, Any], paths: dict[str, str]) -> None:
    print(report.get("markdown") or to_markdown(report))
    if report.get("plot_error"):
        print(report["plot_error"])
    print("written: " + ", ".join(paths.values()))
