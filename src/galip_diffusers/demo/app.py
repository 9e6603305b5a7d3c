"""The Gradio page of the demo: a generation tab and an interpolation tab over a :class:`DemoBackend`.

Only this module imports gradio, and only inside :func:`build_demo`, so the rest of the package never needs it. It
works with gradio 4 to 6: keyword arguments that an installed version does not know are left out (:func:`_kwargs`).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

from galip_diffusers.demo.backend import DemoBackend, DemoModelError
from galip_diffusers.demo.inputs import (
    MAX_FRAMES,
    MAX_PROMPT_CHARS,
    MAX_REFINE_STEPS,
    MAX_SEED,
    MIN_FRAMES,
    DemoInputError,
)
from galip_diffusers.demo.request_limits import RequestSizeLimit

logger = logging.getLogger(__name__)

#: The truncation slider's range (the server accepts up to ``MAX_TRUNCATION``; beyond ~3 truncation changes nothing).
UI_MAX_TRUNCATION = 3.0
#: Every event runs under this concurrency id, so the two tabs share one limit on the model.
CONCURRENCY_ID = "galip-model"
#: Largest file that ``POST /gradio_api/upload`` takes. The page has no upload widget, so no upload is ever needed;
#: without a limit anyone who can reach the server could fill its disk.
MAX_UPLOAD_SIZE = "1kb"
#: ``gr.Blocks(delete_cache=(frequency, age))``, in seconds: every 10 minutes gradio deletes the files it cached (each
#: served image and GIF, any upload) once older than an hour, and all of them when the server stops. The backend's
#: own GIF folder keeps only the newest ``KEEP_GIFS`` (gradio serves its copies), so disk use stays bounded.
DELETE_CACHE = (600, 3600)


def _kwargs(component: Callable, **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments that ``component`` (a gradio class or function) accepts in the installed version."""
    try:
        params = inspect.signature(component).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _user_errors(gr: Any, action: str, num_outputs: int) -> Callable[[Callable], Callable]:
    """Decorator for an event handler whose last output is a status Markdown.

    Bad input (:class:`DemoInputError`) leaves the other outputs as they are and shows the message twice: as a
    ``gr.Warning`` toast and in the status. Any other exception becomes a ``gr.Error`` with one line (the traceback
    goes to the server log only). The page never shows a stack trace."""

    def wrap(handler: Callable) -> Callable:
        def run(*args: Any) -> Any:
            try:
                return handler(*args)
            except DemoInputError as err:
                gr.Warning(str(err))
                return (*[gr.update() for _ in range(num_outputs - 1)], f"**Not run:** {err}")
            except DemoModelError as err:
                raise gr.Error(str(err)) from None
            except Exception as err:  # noqa: BLE001  (shown as a message, logged with its traceback)
                if isinstance(err, gr.Error):
                    raise
                logger.exception("%s failed", action)
                raise gr.Error(f"{action} failed: {type(err).__name__}: {err}") from None

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    return wrap


def _missing_inputs_message(block_fn: Any, received: int) -> str:
    """One line for an API call that sent ``received`` values to an event with more inputs: which fields are missing."""
    labels = [getattr(block, "label", None) or type(block).__name__ for block in block_fn.inputs]
    event = getattr(block_fn, "api_name", None) or getattr(block_fn, "name", None) or "this event"
    return (f"{event} takes {len(labels)} input values ({', '.join(labels)}), got {received}: missing "
            f"{', '.join(labels[received:])}.")


def _blocks_class(gr: Any) -> type:
    """``gr.Blocks``, with one change: an API call with too few input values gets a ``gr.Error`` that names the
    missing fields. gradio raises a ``ValueError`` there (``Blocks.validate_inputs``), before any handler and so before
    :func:`_user_errors`, and with ``show_error=False`` the client saw only ``{"error": null}``."""
    if not callable(getattr(gr.Blocks, "validate_inputs", None)):
        return gr.Blocks

    class DemoBlocks(gr.Blocks):
        def validate_inputs(self, block_fn: Any, inputs: list[Any]) -> None:
            try:
                super().validate_inputs(block_fn, inputs)
            except ValueError:
                raise gr.Error(_missing_inputs_message(block_fn, len(inputs))) from None

    return DemoBlocks


def launch_demo(demo: Any, host: str = "127.0.0.1", port: int = 7860, **kwargs: Any) -> Any:
    """``demo.launch`` with the demo's server settings: no share link, no browser, tracebacks in the server log only,
    uploads capped at :data:`MAX_UPLOAD_SIZE` and request bodies at :data:`~.request_limits.MAX_REQUEST_BYTES`
    (:class:`~.request_limits.RequestSizeLimit`). ``kwargs`` go to ``launch`` too (e.g. ``prevent_thread_lock=True``).

    Ctrl-C, and SIGTERM under :func:`galip_core.staging.terminate_as_interrupt`, stop the server and return normally
    (gradio's ``block_thread`` catches the interrupt), so the caller's clean-up runs."""
    from starlette.middleware import Middleware

    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs["middleware"] = [Middleware(RequestSizeLimit), *app_kwargs.get("middleware", [])]
    settings = {"server_name": host, "server_port": port, "share": False, "inbrowser": False, "show_error": False,
                "max_file_size": MAX_UPLOAD_SIZE, "app_kwargs": app_kwargs, **kwargs}
    return demo.launch(**_kwargs(demo.launch, **settings))


def _with_warnings(gr: Any, status: str, warnings: tuple[str, ...]) -> str:
    """Show each warning as a toast and append it to the status."""
    for warning in warnings:
        gr.Warning(warning)
    return status + "".join(f"\n\n⚠️ {w}" for w in warnings)


def build_demo(backend: DemoBackend, concurrency_limit: int = 1, max_queue: int = 32):
    """The ``gr.Blocks`` app over ``backend``, with its queue configured (``concurrency_limit`` requests run at once,
    up to ``max_queue`` wait). Launch it with ``.launch()``."""
    if concurrency_limit < 1:
        raise ValueError(f"concurrency_limit must be >= 1, got {concurrency_limit}.")
    if max_queue < 1:
        raise ValueError(f"max_queue must be >= 1, got {max_queue}.")
    import gradio as gr

    # preprocess=False: the handlers get the values as sent and check them all (inputs.py), so that a bad API value
    # is one message naming its field. gradio's own preprocessing would round a seed of 0.5 to 0 (gr.Number's
    # precision) and fail on a slider sent null or "2" without a message.
    event = {"concurrency_limit": concurrency_limit, "concurrency_id": CONCURRENCY_ID, "preprocess": False}

    @_user_errors(gr, "Generation", num_outputs=2)
    def generate(prompt, seed, num_images, truncation, refine, refine_steps):
        """Images for a prompt, and how long they took."""
        result = backend.generate(prompt, seed, num_images, truncation, refine, refine_steps)
        return result.images, _with_warnings(gr, result.status, result.warnings)

    @_user_errors(gr, "Interpolation", num_outputs=3)
    def interpolate(prompt_a, prompt_b, seed_a, seed_b, num_frames):
        """A strip and an animated GIF from (prompt A, seed A) to (prompt B, seed B)."""
        result = backend.interpolate(prompt_a, prompt_b, seed_a, seed_b, num_frames)
        return result.strip, result.gif_path, _with_warnings(gr, result.status, result.warnings)

    examples = backend.example_prompts  # the model's own (galip_settings.json), else the built-in ones
    blocks = _blocks_class(gr)
    with blocks(**_kwargs(blocks, title="GALIP text-to-image", analytics_enabled=False,
                          delete_cache=DELETE_CACHE)) as demo:
        gr.Markdown(
            "# GALIP text-to-image\n"
            "One generator forward pass per image ([GALIP](https://arxiv.org/abs/2301.12959), CVPR 2023). "
            + backend.describe()
        )
        with gr.Tab("Generate"):
            with gr.Row():
                prompt = gr.Textbox(value=examples[0], label="Prompt", lines=2, elem_id="prompt", scale=4,
                                    info="At most 77 tokens (longer prompts are cut, with a warning).",
                                    **_kwargs(gr.Textbox, max_length=MAX_PROMPT_CHARS))
                run = gr.Button("Generate", variant="primary", elem_id="generate", scale=1)
            with gr.Row():
                # precision=0 makes the API schema say "integer"; it rounds nothing here (preprocess=False above), so
                # check_int refuses a seed of 0.5 instead of serving seed 0
                seed = gr.Number(value=0, label="Seed", precision=0, elem_id="seed",
                                 **_kwargs(gr.Number, minimum=0, maximum=MAX_SEED))
                # a slider needs min < max: with --max_images 1 it is shown fixed at 1
                num_images = gr.Slider(1, max(2, backend.max_images), value=min(4, backend.max_images), step=1,
                                       label="Number of images", elem_id="num-images",
                                       interactive=backend.max_images > 1)
                # the model's own truncation is always on the slider, even above the usual range
                top = max(UI_MAX_TRUNCATION, backend.default_truncation or 0.0)
                truncation = gr.Slider(0.0, top, value=backend.default_truncation, step=0.05, label="Truncation (0 = off)",
                                       elem_id="truncation",
                                       info="Noise beyond ±t is redrawn: smaller t, more typical, less varied.")
            with gr.Row():
                refine = gr.Checkbox(value=False, label="Refine with CLIP (FuseDream)", interactive=backend.can_refine,
                                     info=backend.refine_note, elem_id="refine")
                refine_steps = gr.Slider(1, MAX_REFINE_STEPS, value=backend.default_refine_steps(MAX_REFINE_STEPS),
                                         step=1, label="Refinement steps", interactive=backend.can_refine,
                                         elem_id="refine-steps",
                                         info=f"Images × steps at most {backend.max_refine_work} per request.")
            gallery = gr.Gallery(label="Images", elem_id="gallery",
                                 **_kwargs(gr.Gallery, columns=4, format="png", object_fit="contain", height="auto"))
            status = gr.Markdown("Press **Generate**. The wall time of every request is shown here.", elem_id="status")
            gr.Examples([[p] for p in examples], inputs=[prompt], label="Example prompts")
            inputs = [prompt, seed, num_images, truncation, refine, refine_steps]
            run.click(generate, inputs, [gallery, status], api_name="generate", **_kwargs(run.click, **event))
            prompt.submit(generate, inputs, [gallery, status], **_kwargs(prompt.submit, **event))

        with gr.Tab("Interpolate"):
            gr.Markdown("From prompt A with seed A to prompt B with seed B: spherical interpolation of the noise, "
                        "linear interpolation of the text embedding.")
            with gr.Row():
                prompt_a = gr.Textbox(value=examples[0], label="Prompt A", elem_id="prompt-a",
                                      **_kwargs(gr.Textbox, max_length=MAX_PROMPT_CHARS))
                prompt_b = gr.Textbox(value=examples[1], label="Prompt B", elem_id="prompt-b",
                                      **_kwargs(gr.Textbox, max_length=MAX_PROMPT_CHARS))
            with gr.Row():
                seed_a = gr.Number(value=0, label="Seed A", precision=0, elem_id="seed-a",
                                   **_kwargs(gr.Number, minimum=0, maximum=MAX_SEED))
                seed_b = gr.Number(value=1, label="Seed B", precision=0, elem_id="seed-b",
                                   **_kwargs(gr.Number, minimum=0, maximum=MAX_SEED))
                num_frames = gr.Slider(MIN_FRAMES, MAX_FRAMES, value=8, step=1, label="Frames", elem_id="frames")
                run_interp = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
            strip = gr.Image(label="Strip", type="pil", elem_id="strip", **_kwargs(gr.Image, format="png"))
            gif = gr.File(label="Animated GIF", elem_id="gif")
            interp_status = gr.Markdown("", elem_id="interp-status")
            run_interp.click(interpolate, [prompt_a, prompt_b, seed_a, seed_b, num_frames], [strip, gif, interp_status],
                             api_name="interpolate", **_kwargs(run_interp.click, **event))

    demo.queue(**_kwargs(demo.queue, max_size=max_queue, default_concurrency_limit=concurrency_limit))
    return demo
