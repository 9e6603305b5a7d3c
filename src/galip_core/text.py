"""Prompt text -> token ids without transformers: CLIP's text cleaning and a ``tokenizer.json`` read by the
``tokenizers`` library (the fast backend transformers' ``CLIPTokenizer`` itself uses)."""

from __future__ import annotations

import html
import json
import os
import re
import sys
from typing import Any, Sequence

import torch


def prompt_list(prompt: Any, name: str = "prompt") -> list[str]:
    """``[prompt]`` for one string, ``list(prompt)`` for a non-empty list or tuple of strings: the prompt check of both
    engines (``TypeError``/``ValueError`` naming ``name`` otherwise; a bare string is never split into characters)."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise TypeError(f"`{name}` has to be of type `str` or a list of `str`, but is {type(prompt).__name__}.")
    if len(prompt) == 0:
        raise ValueError(f"`{name}` is an empty list: pass at least one prompt.")
    bad = sorted({type(p).__name__ for p in prompt if not isinstance(p, str)})
    if bad:
        raise TypeError(f"`{name}` must be a list of `str`, but it contains {bad}.")
    return list(prompt)


def clip_text_clean(text: str) -> str:
    """The cleaning ``clip.simple_tokenizer`` applies before BPE: ``ftfy.fix_text`` (when ftfy is installed),
    ``html.unescape`` twice, whitespace collapsing and ``str.lower``."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class LiteTokenizer:
    """A saved ``CLIPTokenizer`` folder (``tokenizer.json`` + ``tokenizer_config.json``), called like
    ``tokenizer(prompts, padding="max_length", truncation=True)``: right padding with the pad token to
    ``model_max_length``, truncation keeping the end-of-text token."""

    def __init__(self, folder: str | os.PathLike):
        from tokenizers import Tokenizer

        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        self.model_max_length = int(config["model_max_length"])
        self._tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        pad_token = config.get("pad_token") or config["eos_token"]
        pad_id = self._tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"tokenizer: the pad token {pad_token!r} is not in {folder}/tokenizer.json.")
        self._tokenizer.enable_truncation(self.model_max_length)
        self._tokenizer.enable_padding(length=self.model_max_length, pad_id=pad_id, pad_token=pad_token)

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids (len(prompts), model_max_length) of the cleaned prompts; warns on stderr about truncation."""
        encodings = self._tokenizer.encode_batch([clip_text_clean(p) for p in prompts])
        for prompt, encoding in zip(prompts, encodings):
            if encoding.overflowing:
                print(f"warning: the prompt {prompt!r} was truncated to {self.model_max_length} tokens.",
                      file=sys.stderr)
        return torch.tensor([e.ids for e in encodings], dtype=torch.long)


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to about ``limit`` characters: error messages quote the value they refuse without echoing
    a huge one (a demo API call or a data set row can hold anything)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    try:
        text = repr(value)
    except ValueError:  # an int of more than sys.get_int_max_str_digits() digits
        return f"a {type(value).__name__} too long to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."
