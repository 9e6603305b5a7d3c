"""Prompt text -> token ids: CLIP's text cleaning, the truncation (and its warning) of both engines, and a
``tokenizer.json`` read by the ``tokenizers`` library (the fast backend transformers' ``CLIPTokenizer`` itself uses)
for the runtime without transformers."""

from __future__ import annotations

import html
import json
import os
import re
import sys
from typing import Any, Callable, Sequence

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


def truncated_ids(ids: Sequence[int], max_length: int) -> tuple[list[int], list[int]]:
    """CLIP's truncation of one prompt's token ids: ``(kept, cut)``. ``ids`` are the untruncated ids, start and
    end-of-text tokens included and no padding (the real length: the shipped tokenizers pad with the end-of-text
    token, so padding cannot be told from the end of the text by its id). Like transformers' and ``tokenizers``'
    truncation of a CLIP tokenizer, ``kept`` is the first ``max_length - 1`` ids and the end-of-text token; ``cut``
    is every text token between (empty when the prompt fits)."""
    ids = list(ids)
    if len(ids) <= max_length:
        return ids, []
    return ids[: max_length - 1] + ids[-1:], ids[max_length - 1 : -1]


#: the characters of a cut text that a truncation warning shows (longer: the start and the count)
CUT_TEXT_SHOWN = 80


def truncation_warnings(prompts: Sequence[str], prompt_ids: Sequence[Sequence[int]], max_length: int,
                        decode: Callable[[list[int]], str]) -> list[str]:  # fmt: skip
    """One warning per prompt that truncation to ``max_length`` tokens shortens (even by a single token), naming
    the cut text (``decode`` of the cut ids, see :func:`truncated_ids`): exactly, up to :data:`CUT_TEXT_SHOWN`
    characters, else their start and the count (a prompt file of long lines must not flood stderr with copies of
    them). ``prompt_ids``: each prompt's untruncated ids without padding. The truncation warning of both engines and
    of FuseDream's scorer text."""
    warnings = []
    for prompt, ids in zip(prompts, prompt_ids):
        cut = truncated_ids(ids, max_length)[1]
        if cut:
            warnings.append(
                "The following part of your input was truncated because CLIP can only handle sequences up to "
                f"{max_length} tokens, and the prompt {short_repr(prompt, 60)} has {len(ids)}: "
                f"{short_repr(decode(cut), CUT_TEXT_SHOWN)}"
            )
    return warnings


def truncated_and_padded(prompt_ids: Sequence[Sequence[int]], max_length: int, pad_id: int,
                         longest: bool = False) -> torch.Tensor:  # fmt: skip
    """Token ids (len(prompt_ids), length) from each prompt's untruncated ids: truncated as :func:`truncated_ids`
    does, then right-padded with ``pad_id`` to ``max_length`` (``longest``: to the longest truncated prompt), as a
    CLIP tokenizer called with ``truncation=True`` and that padding returns them. Both engines' last step."""
    kept = [truncated_ids(ids, max_length)[0] for ids in prompt_ids]
    length = max(map(len, kept), default=0) if longest else max_length
    return torch.tensor([ids + [pad_id] * (length - len(ids)) for ids in kept], dtype=torch.long)


def clip_input_ids(tokenizer: Any, prompts: Sequence[str], max_length: int, padding: str = "max_length",
                   warn: Callable[[str], None] | None = None) -> torch.Tensor:  # fmt: skip
    """Token ids (len(prompts), length) of the cleaned prompts (:func:`clip_text_clean`, as OpenAI's
    ``clip.tokenize``), truncated to ``max_length`` with :func:`truncation_warnings` passed to ``warn``; padded to
    ``max_length`` or, with ``padding="longest"``, to the longest prompt (:func:`truncated_and_padded`). The prompts
    are tokenized once, untruncated, so the cut part is known. ``tokenizer`` is a transformers ``CLIPTokenizer``
    (called, not imported: galip_core never imports transformers); the text path of ``GALIPPipeline.encode_prompt``
    and of FuseDream's scorer."""
    if padding not in ("max_length", "longest"):
        raise ValueError(f"`padding` must be 'max_length' or 'longest', got {padding!r}.")
    untruncated = tokenizer([clip_text_clean(p) for p in prompts]).input_ids  # each prompt's real length
    if warn is not None:
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
        for message in truncation_warnings(prompts, untruncated, max_length, decode):
            warn(message)
    return truncated_and_padded(untruncated, max_length, tokenizer.pad_token_id, padding == "longest")


class LiteTokenizer:
    """A saved ``CLIPTokenizer`` folder (``tokenizer.json`` + ``tokenizer_config.json``), called like
    ``tokenizer(prompts, padding="max_length", truncation=True)``: right padding with the pad token to
    ``model_max_length``, truncation keeping the end-of-text token (:func:`truncated_ids`)."""

    def __init__(self, folder: str | os.PathLike):
        from tokenizers import Tokenizer

        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        self.model_max_length = int(config["model_max_length"])
        self._tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        pad_token = config.get("pad_token") or config["eos_token"]
        self._pad_id = self._tokenizer.token_to_id(pad_token)
        if self._pad_id is None:
            raise ValueError(f"tokenizer: the pad token {pad_token!r} is not in {folder}/tokenizer.json.")
        self._tokenizer.no_truncation()  # truncated here, so that the cut part is known (see `truncated_ids`)
        self._tokenizer.no_padding()

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, as transformers' ``CLIPTokenizer.decode(ids, skip_special_tokens=True)``: CLIP's
        end-of-word marks ``</w>`` become spaces."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=True).replace("</w>", " ").strip()

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids (len(prompts), model_max_length) of the cleaned prompts; a truncated prompt gets a warning on
        stderr naming the cut text (:func:`truncation_warnings`)."""
        encodings = self._tokenizer.encode_batch([clip_text_clean(p) for p in prompts])
        full = [e.ids for e in encodings]
        for message in truncation_warnings(prompts, full, self.model_max_length, self.decode):
            print(f"warning: {message}", file=sys.stderr)
        return truncated_and_padded(full, self.model_max_length, self._pad_id)


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
