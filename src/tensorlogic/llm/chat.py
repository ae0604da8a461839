"""Chat templates: render a conversation to prompt text the way Hugging Face's ``apply_chat_template`` does.

Templates are Jinja2 from the model (``tokenizer.chat_template`` in GGUF, ``chat_template`` in
tokenizer_config.json), so they are untrusted code: they run in Jinja's immutable sandbox, with the globals and
filters Hugging Face gives them (``raise_exception``, ``strftime_now``, a ``tojson`` that does not HTML-escape).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import TensorLogicError, UnsupportedError

if TYPE_CHECKING:
    from .tokenizer import Tokenizer


class ChatTemplateError(TensorLogicError):
    """A chat template failed to compile or to render, or the messages given to it are malformed."""


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Jinja's own tojson escapes <, > and & for HTML, which would change prompts; templates expect plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.cache
def _environment() -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks; here it only
        renders its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller: Any) -> str:
            return caller()

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@functools.lru_cache(maxsize=32)
def _compile(template: str) -> Any:
    import jinja2

    try:
        return _environment().from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template line {e.lineno}{_excerpt(template, e.lineno)}: {e.message}") from None


def _excerpt(template: str, lineno: int | None) -> str:
    if lineno is None:
        return ""
    lines = template.splitlines()
    if not 1 <= lineno <= len(lines):
        return ""
    text = lines[lineno - 1].strip()
    return f" ({text[:60]}{'...' if len(text) > 60 else ''})" if text else ""


def _template_line(tb: Any) -> int | None:
    """The template line a render error happened on: Jinja maps its frames back to ``<template>`` lines."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ChatTemplateError(f"messages must be a list of dicts, not {type(messages).__name__}")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(
                f"messages[{i}] must be a dict with 'role' and 'content', not {type(message).__name__}"
            )
        for key in ("role", "content"):
            if key not in message:
                raise ChatTemplateError(f"messages[{i}] has no {key!r}")
            if not isinstance(message[key], str):
                raise ChatTemplateError(f"messages[{i}][{key!r}] must be a string, not {type(message[key]).__name__}")
        checked.append(dict(message))
    return checked


def render_chat(
    template: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **extra: Any,
) -> str:
    """Render ``messages`` ([{"role": ..., "content": ...}, ...]) with a Jinja chat template.

    ``extra`` reaches the template as variables (``tools``, ``date_string``, ...); ``tools`` and ``documents``
    are None unless given, as in Hugging Face.
    """
    import jinja2

    if not isinstance(template, str):
        raise ChatTemplateError(f"the chat template must be a string, not {type(template).__name__}")
    checked = _check_messages(messages)
    compiled = _compile(template)
    context = {"tools": None, "documents": None, **extra}
    try:
        return compiled.render(
            messages=checked,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **context,
        )
    except jinja2.exceptions.TemplateError as e:
        line = _template_line(e.__traceback__)
        where = f"chat template line {line}{_excerpt(template, line)}" if line else "chat template"
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ChatTemplateError(f"{where}: {message}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as e:
        line = _template_line(e.__traceback__)
        where = f"chat template line {line}{_excerpt(template, line)}" if line else "chat template"
        raise ChatTemplateError(f"{where}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def apply_chat_template(
    tokenizer: Tokenizer, messages: list[dict], *, add_generation_prompt: bool = True, **extra: Any
) -> str:
    """Render ``messages`` with the tokenizer's own template and BOS/EOS strings.

    The text already holds whatever special tokens the template writes (often BOS): encode it with
    ``tokenizer.encode(text, add_bos=False)`` when it starts with the BOS piece, as Hugging Face does.
    """
    if tokenizer.chat_template is None:
        raise UnsupportedError("this model has no chat template (tokenizer.chat_template); pass one explicitly")
    bos = tokenizer.id_to_piece(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
    eos = tokenizer.id_to_piece(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
    return render_chat(
        tokenizer.chat_template,
        messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos,
        eos_token=eos,
        **extra,
    )
