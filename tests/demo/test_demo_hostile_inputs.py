"""The demo against hostile or careless requests (audit findings 6, 7, 8, 10, 11): huge prompts, non-integer seeds,
malformed API calls, uploads to a page without an upload widget, and a server stopped with SIGTERM or Ctrl-C.

The API tests talk HTTP to a real gradio server (in this process, on a free port), because the bugs were in gradio's
processing before the demo's handlers; the stop tests run ``python -m galip_diffusers demo`` in a subprocess.
"""

import glob
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from helpers.network import free_port

from galip_diffusers.demo import (
    MAX_PROMPT_CHARS, DemoBackend, DemoInputError, validate_generation, validate_interpolation,
)
from galip_diffusers.demo import app as demo_app
from galip_diffusers.demo import inputs as demo_inputs
from galip_diffusers.demo.request_limits import MAX_REQUEST_BYTES, RequestSizeLimit
from galip_diffusers.testing_utils import byte_level_clip_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: urllib without the environment's proxies: every request here goes to 127.0.0.1
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SEED_RULE = "must be an integer from 0 to 4294967295"


@pytest.fixture(scope="module")
def server(model_dir, one_thread):
    """The demo served in this process; the gradio cache is cleaned every second (checked by a test below)."""
    backend = DemoBackend.from_model(model_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo_app, "DELETE_CACHE", (1, 1))
        demo = demo_app.build_demo(backend)
    port = free_port()
    demo_app.launch_demo(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()
        backend.close()


def _call(base: str, api: str, data: list) -> tuple[str, object]:
    """POST ``data`` to the named API endpoint; ``("complete", outputs)`` or ``("error", message)``."""
    request = urllib.request.Request(f"{base}/gradio_api/call/{api}", json.dumps({"data": data}).encode(),
                                     {"Content-Type": "application/json"})
    event_id = json.load(HTTP.open(request, timeout=60))["event_id"]
    stream = HTTP.open(f"{base}/gradio_api/call/{api}/{event_id}", timeout=60).read().decode()
    events = [line.split(":", 1)[1].strip() for line in stream.splitlines() if line.startswith("event:")]
    payload = json.loads([line for line in stream.splitlines() if line.startswith("data:")][-1][5:])
    if events[-1] == "error":
        return "error", payload and payload.get("error")
    return events[-1], payload


def _not_run(base: str, api: str, data: list) -> str:
    """The status of a request that the demo refused (a "**Not run:**" message, other outputs unchanged)."""
    event, outputs = _call(base, api, data)
    assert event == "complete", (event, outputs)
    assert all(output == {"__type__": "update"} for output in outputs[:-1])
    assert outputs[-1].startswith("**Not run:** "), outputs[-1]
    return outputs[-1]


# ------------------------------------------------------------------------------------------------- prompt size
class _NoTokenizer:
    """Fails the test if the prompt reaches the tokenizer."""

    model_max_length = 77

    def __call__(self, *args, **kwargs):
        raise AssertionError("a prompt over the character limit reached the tokenizer")


def test_a_prompt_over_the_character_limit_is_refused_before_cleaning_or_tokenizing(monkeypatch):
    clean = demo_inputs.clip_text_clean

    def clean_short_only(text):
        assert len(text) <= MAX_PROMPT_CHARS, "a prompt over the character limit reached CLIP's text cleaning"
        return clean(text)

    monkeypatch.setattr(demo_inputs, "clip_text_clean", clean_short_only)
    too_long = "a" * (MAX_PROMPT_CHARS + 1)
    with pytest.raises(DemoInputError, match=f"prompt must be at most {MAX_PROMPT_CHARS} characters, got "
                                             f"{MAX_PROMPT_CHARS + 1}: the model reads at most 77 tokens"):
        validate_generation(too_long, 0, 1, tokenizer=_NoTokenizer())
    with pytest.raises(DemoInputError, match=f"first prompt must be at most {MAX_PROMPT_CHARS} characters"):
        validate_interpolation(too_long, "b", 0, 1, 2, tokenizer=_NoTokenizer())
    with pytest.raises(DemoInputError, match=f"second prompt must be at most {MAX_PROMPT_CHARS} characters"):
        validate_interpolation("a", too_long, 0, 1, 2, tokenizer=_NoTokenizer())


def test_a_prompt_at_the_limit_is_cut_to_77_tokens_with_a_warning():
    request = validate_generation("ab " * (MAX_PROMPT_CHARS // 3), 0, 1, tokenizer=byte_level_clip_tokenizer())
    assert len(request.warnings) == 1 and "the model reads at most 77" in request.warnings[0]


def test_a_prompt_that_is_not_text_names_its_type():
    with pytest.raises(DemoInputError, match=r"prompt must be text, got list \['a', 'b'\]"):
        validate_generation(["a", "b"], 0, 1, tokenizer=byte_level_clip_tokenizer())
    with pytest.raises(DemoInputError, match=r"seed must be an integer from 0 to 4294967295, got '1{40}'\.\.\. "
                                             r"\(10000 characters\)\.$"):
        validate_generation("a", "1" * 10_000, 1, tokenizer=byte_level_clip_tokenizer())  # not echoed in full


def test_a_huge_prompt_is_refused_at_once(server):
    start = time.perf_counter()
    status = _not_run(server, "generate", ["a " * 30_000, 0, 1, 0, False, 1])  # 60 kB: under the request limit
    assert f"prompt must be at most {MAX_PROMPT_CHARS} characters, got 60000" in status
    assert time.perf_counter() - start < 5


def _post_raw(base: str, headers: dict, body: bytes) -> tuple[int, str]:
    """POST ``body`` as sent (``headers`` decide whether it is declared or chunked) to the generate endpoint."""
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
    try:
        connection.putrequest("POST", "/gradio_api/call/generate")
        for name, value in {"Content-Type": "application/json", **headers}.items():
            connection.putheader(name, value)
        connection.endheaders()
        connection.send(body)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_request_body_over_the_limit_is_refused_before_it_is_read(server, chunked):
    """A 4 MB prompt took 9 s and 0.9 GB in the tokenizer; a 200 MB body cost the server ~0.4 GB in gradio's JSON
    parsing before any handler ran. Bodies over MAX_REQUEST_BYTES now get 413 from the middleware: a declared one
    before a byte of it is read (only 1 kB of the 4 MB is ever sent here), a chunked one once the limit is passed."""
    prefix = b'{"data": ["' + b"a " * 1000
    if chunked:
        chunk = b"a " * 5000
        body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in [prefix] + [chunk] * 7)  # 72 kB
        status, text = _post_raw(server, {"Transfer-Encoding": "chunked"}, body)
    else:
        status, text = _post_raw(server, {"Content-Length": str(4_000_000)}, prefix)
    assert status == 413, (status, text)
    assert json.loads(text)["error"] == (f"The request body is over the demo's limit of {MAX_REQUEST_BYTES} bytes "
                                         f"(a prompt is at most {MAX_PROMPT_CHARS} characters).")
    event, outputs = _call(server, "generate", ["a red circle", 0, 1, 0, False, 1])  # the server still serves
    assert event == "complete", outputs


def test_a_chunked_request_under_the_limit_reaches_the_handler_unchanged(server):
    payload = json.dumps({"data": ["a " * 1500, 0, 1, 0, False, 1]}).encode()
    parts = [payload[i:i + 1000] for i in range(0, len(payload), 1000)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"
    status, text = _post_raw(server, {"Transfer-Encoding": "chunked"}, body)
    assert status == 200, (status, text)
    stream = HTTP.open(f"{server}/gradio_api/call/generate/{json.loads(text)['event_id']}", timeout=60).read()
    assert b"got 3000" in stream  # the whole prompt arrived: 1,500 "a " pairs, refused by the handler's own limit


def test_the_size_limit_is_checked():
    with pytest.raises(ValueError, match="max_bytes must be an integer >= 1, got 0"):
        RequestSizeLimit(lambda *a: None, max_bytes=0)


# ----------------------------------------------------------------------------------------- values sent by the API
@pytest.mark.parametrize("data, message", [
    (["a red circle", 0.5, 1, 0, False, 1], f"seed {SEED_RULE}, got 0.5."),
    (["a red circle", 2.7, 1, 0, False, 1], f"seed {SEED_RULE}, got 2.7."),
    (["a red circle", True, 1, 0, False, 1], f"seed {SEED_RULE}, got True."),
    (["a red circle", -1, 1, 0, False, 1], f"seed {SEED_RULE}, got -1."),
    (["a red circle", 0, None, 0, False, 1], "number of images must be an integer from 1 to 16, got None."),
    (["a red circle", 0, "many", 0, False, 1], "number of images must be an integer from 1 to 16, got 'many'."),
    (["a red circle", 0, 1, "1", False, 1], "truncation must be 0 (off) or a number in (0, 10], got '1'."),
    (["a red circle", 0, 1, 0, "false", 1], "refine must be true or false, got 'false'."),
    ([["a", "b"], 0, 1, 0, False, 1], "prompt must be text, got list ['a', 'b']."),
], ids=["seed-half", "seed-2.7", "seed-true", "seed-negative", "images-null", "images-text", "truncation-text",
        "refine-text", "prompt-list"])
def test_bad_generation_values_are_refused_with_a_message_naming_the_field(server, data, message):
    assert _not_run(server, "generate", data) == f"**Not run:** {message}"


@pytest.mark.parametrize("data, message", [
    (["a", "b", 0.4, 1, 2], f"first seed {SEED_RULE}, got 0.4."),
    (["a", "b", 0, 1.6, 2], f"second seed {SEED_RULE}, got 1.6."),
    (["a", "b", 0, True, 2], f"second seed {SEED_RULE}, got True."),
    (["a", "b", 0, 1, None], "number of frames must be an integer from 2 to 32, got None."),
    (["a", "b" * (MAX_PROMPT_CHARS + 1), 0, 1, 2], f"second prompt must be at most {MAX_PROMPT_CHARS} characters"),
], ids=["seed-a-0.4", "seed-b-1.6", "seed-b-true", "frames-null", "prompt-b-long"])
def test_bad_interpolation_values_are_refused_with_a_message_naming_the_field(server, data, message):
    assert _not_run(server, "interpolate", data).startswith(f"**Not run:** {message}")


def test_lenient_values_are_served_as_the_handlers_read_them(server):
    """An integer as text, and null for truncation (off) or the unused refinement steps, are fine."""
    event, (gallery, status) = _call(server, "generate", ["a red circle", 7, "2", None, False, None])
    assert event == "complete" and len(gallery) == 2 and "2 image(s)" in status and "seed 7." in status


@pytest.mark.parametrize("api, data, missing", [
    ("generate", ["a red circle", 0, 1], "got 3: missing Truncation (0 = off), Refine with CLIP (FuseDream), "
                                         "Refinement steps."),
    ("interpolate", ["a", "b"], "got 2: missing Seed A, Seed B, Frames."),
], ids=["generate", "interpolate"])
def test_a_call_with_too_few_values_names_the_missing_fields(server, api, data, missing):
    event, message = _call(server, api, data)
    assert event == "error" and message.startswith(f"{api} takes ") and message.endswith(missing)


# -------------------------------------------------------------------------------------------- uploads, the cache
def _upload(base: str, size: int) -> tuple[int, str]:
    boundary = "galip-test-boundary"
    body = b"".join([
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode(), b"x" * size, f"\r\n--{boundary}--\r\n".encode(),
    ])
    request = urllib.request.Request(f"{base}/gradio_api/upload", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with HTTP.open(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_uploads_are_capped_and_cached_files_are_deleted(server):
    code, text = _upload(server, 5000)
    assert code == 413 and "maximum allowed size of 1024 bytes" in text
    event, (gallery, _) = _call(server, "generate", ["a red circle", 0, 1, 0, False, 1])
    served = gallery[0]["image"]["path"]
    assert event == "complete" and os.path.exists(served)
    deadline = time.monotonic() + 10
    while os.path.exists(served) and time.monotonic() < deadline:  # DELETE_CACHE is (1, 1) in this server
        time.sleep(0.2)
    assert not os.path.exists(served)


def test_the_page_asks_gradio_to_clean_its_cache(model_dir, one_thread):
    backend = DemoBackend.from_model(model_dir)
    try:
        demo = demo_app.build_demo(backend)
        assert demo.delete_cache == demo_app.DELETE_CACHE and demo.delete_cache[1] >= 600  # served files live a while
        prompt = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "prompt")
        assert prompt.max_length == MAX_PROMPT_CHARS
    finally:
        backend.close()


# ------------------------------------------------------------------------------------------------------ stopping
@pytest.mark.slow  # ~20 s each: a fresh interpreter imports torch and gradio
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_stopping_the_server_deletes_its_temporary_files(model_dir, tmp_path, signum):
    """``galip demo`` stopped by SIGTERM (kill, docker stop) or Ctrl-C removes its GIF folder and gradio's cached
    files. Both live under TMPDIR, which points into tmp_path here."""
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("GRADIO_TEMP_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "galip_diffusers", "demo", "--model", model_dir,
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                               text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the demo did not start within 120 s"
            try:
                HTTP.open(f"{base}/gradio_api/info", timeout=2).close()
                break
            except OSError:
                time.sleep(0.25)
        event, (_, gif, _) = _call(base, "interpolate", ["a", "b", 0, 1, 2])
        assert event == "complete" and os.path.exists(gif["path"])
        assert len(glob.glob(str(tmp_path / "galip-demo-*" / "*.gif"))) == 1
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0 and "Traceback" not in output, output
    assert glob.glob(str(tmp_path / "galip-demo-*")) == []
    assert [f for f in glob.glob(str(tmp_path / "gradio" / "**"), recursive=True) if os.path.isfile(f)] == []
