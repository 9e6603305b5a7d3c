"""Shared pytest fixtures."""

import ctypes
import ctypes.util
import gc

import pytest
import torch


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split(field + ":")[1].split()[0]) * 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark starts again from the current RSS


@pytest.fixture
def peak_rss():
    """``measure(fn)`` -> ``(fn's result, its peak RSS above the RSS before it)``, on Linux (skipped elsewhere). The
    heap that earlier tests freed is given back to the system first (glibc's ``malloc_trim``), so that reusing it
    cannot hide the peak of ``fn`` in a long test process."""
    try:
        _reset_peak()
        _status("VmHWM")
    except (OSError, IndexError):
        pytest.skip("needs /proc/self/clear_refs and VmHWM (Linux)")
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None

    def measure(fn):
        gc.collect()
        if trim is not None:
            trim(0)
        base = _status("VmRSS")
        _reset_peak()
        result = fn()
        return result, _status("VmHWM") - base

    return measure


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster than two on a shared machine (and keeps CPU use modest)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A saved tiny GALIP pipeline folder (read-only: tests that alter one copy it first)."""
    from galip_diffusers.testing_utils import tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny") / "model"
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def real_emoji():
    """``(judge, records, images)`` over all 7,572 real emoji images (the npm tarballs, fetched once into the user
    cache, ``$GALIP_EMOJI_CACHE``), shared by every test that judges against the real data set."""
    from galip_diffusers.data.emoji import default_cache_dir, fetch_tarballs, read_emoji_images
    from galip_diffusers.data.emoji_judge import EmojiJudge

    records, images = read_emoji_images(fetch_tarballs(default_cache_dir()))
    return EmojiJudge.from_records(records, images), records, images


@pytest.fixture
def known_memory(monkeypatch):
    """16 GiB free, whatever this machine has, so that the memory checks decide the same everywhere."""
    import galip_core.machine as machine

    monkeypatch.setattr(machine, "available_bytes", lambda device: 16 * 2**30)
