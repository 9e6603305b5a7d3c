"""``galip-demo`` / ``galip demo``: load the model, build the Gradio page and serve it."""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from typing import Sequence

from galip_cli.common import DTYPES, CommandParser, as_argument_error, run_cli, torch_dtype
from galip_core.staging import terminate_as_interrupt
from galip_diffusers.pretrained import DEFAULT_MODEL
from galip_diffusers.demo.backend import DemoModelError
from galip_diffusers.demo.inputs import MAX_IMAGES, MAX_REFINE_STEPS, MAX_REFINE_WORK

EXAMPLES = f"""examples:
  %(prog)s                                  # the packaged {DEFAULT_MODEL} model on http://127.0.0.1:7860
  %(prog)s --model galip-shapes             # another packaged model, by name
  %(prog)s --model ./galip-coco --port 7861
  %(prog)s --model ./galip-coco --host 0.0.0.0 --device cuda --dtype fp16 --concurrency_limit 2

Needs gradio: pip install "galip-diffusers[demo]". "Refine with CLIP" is enabled when the model folder has a scorer
CLIP (FuseDream); the page shows the time of every request.
"""


class MissingDependency(ImportError):
    """An optional dependency of the demo is not installed."""


def build_parser(prog: str = "galip-demo") -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description="Serve a Gradio web demo of a GALIP pipeline: prompt -> images (timed), optional CLIP "
        "refinement, interpolation strip + animated GIF.",
        epilog=EXAMPLES,
    )
    parser.add_argument("--model", default=None,
                        help=f"pipeline folder, Hub id or packaged name (default: the packaged {DEFAULT_MODEL}, even "
                             "beside a local folder of that name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                        "only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="weights dtype; auto (default): bf16 where the device computes it natively, else fp32")
    parser.add_argument("--max_images", type=int, default=MAX_IMAGES,
                        help=f"most images per request, 1 to {MAX_IMAGES} (default: {MAX_IMAGES})")
    parser.add_argument("--max_refine_work", type=int, default=MAX_REFINE_WORK,
                        help=f"most images x steps per request with Refine with CLIP (default: {MAX_REFINE_WORK}, "
                             "about 2 min on a 2-core CPU); at least --max_images")
    parser.add_argument("--concurrency_limit", type=int, default=1,
                        help="requests that run at the same time; the others wait in the queue (default: 1)")
    parser.add_argument("--max_queue", type=int, default=32, help="most requests waiting in the queue (default: 32)")
    return parser  # fmt: skip


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from galip_core.machine import check_device

    as_argument_error(parser, lambda: check_device(args.device))
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be from 1 to 65535 (the demo serves on that fixed port), got {args.port}")
    as_argument_error(parser, lambda: check_listen_address(args.host, args.port))
    if not 1 <= args.max_images <= MAX_IMAGES:
        parser.error(f"--max_images must be from 1 to {MAX_IMAGES}, got {args.max_images}")
    if not args.max_images <= args.max_refine_work <= args.max_images * MAX_REFINE_STEPS:
        parser.error(f"--max_refine_work must be from --max_images ({args.max_images}) to "
                     f"{args.max_images * MAX_REFINE_STEPS}, got {args.max_refine_work}")
    if args.concurrency_limit < 1:
        parser.error(f"--concurrency_limit must be >= 1, got {args.concurrency_limit}")
    if args.max_queue < 1:
        parser.error(f"--max_queue must be >= 1, got {args.max_queue}")


def check_listen_address(host: str, port: int) -> None:
    """Before the model loads: ``--host`` must be an address of this machine and ``--port`` free on it (the demo's
    server would otherwise fail after the load, with an error that names neither flag). Binds and closes a socket."""
    if not host.strip():
        raise ValueError("--host is empty: give an address such as 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                         "network interface).")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ValueError(f"--host {host!r} is not an address this machine can listen on ({err}).") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise ValueError(f"cannot listen on --host {host} --port {port} ({err.strerror or err}): choose another "
                             "--port, or a --host of this machine.") from None


def require_gradio() -> None:
    if importlib.util.find_spec("gradio") is None:
        raise MissingDependency('the demo needs gradio: pip install "galip-diffusers[demo]" (or "gradio>=4.0").')


def _run(args: argparse.Namespace) -> int:
    """Load, build, serve until Ctrl-C or SIGTERM; then delete the backend's GIF folder.

    SIGTERM (``kill``, ``docker stop``, systemd) would end the process at once, leaving ``/tmp/galip-demo-*`` and
    gradio's cached files behind: under :func:`terminate_as_interrupt` it stops the server like Ctrl-C does (gradio
    closes it and deletes its cache, ``DELETE_CACHE``), and the ``finally`` below runs."""
    require_gradio()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    from galip_diffusers.demo.app import build_demo, launch_demo
    from galip_diffusers.demo.backend import DemoBackend

    with terminate_as_interrupt():
        backend = DemoBackend.from_model(args.model, args.device, torch_dtype(args.dtype, args.device),
                                         max_images=args.max_images, max_refine_work=args.max_refine_work)
        try:
            demo = build_demo(backend, concurrency_limit=args.concurrency_limit, max_queue=args.max_queue)
            print(f"galip demo: {backend.describe()}", flush=True)
            launch_demo(demo, args.host, args.port)
        finally:
            backend.close()
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "galip-demo") -> int:
    """Entry point of ``galip-demo`` and ``galip demo``."""
    return run_cli(_run, build_parser(prog), argv, check=check_args, plain_errors=(DemoModelError, MissingDependency))


if __name__ == "__main__":
    sys.exit(main())
