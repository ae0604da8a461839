"""Environment and files: env, input, save and load of tensors (SafeTensors)."""

from __future__ import annotations

import os
from typing import Any

import torch

from ...errors import FormatError, TensorLogicError
from ...formats.detect import detect
from ...formats.safetensors import open_safetensors, save_safetensors
from ..values import BuiltinError, Context, first_line, tensor_arg, type_name
from . import builtin

# The name save() gives the tensor inside its SafeTensors file.
SAVED_NAME = "tensor"


@builtin()
def env(name: Any) -> str:
    """env("NAME"): the environment variable's value; an unset variable is an error, as in the original."""
    if not isinstance(name, str):
        raise BuiltinError(f"takes the variable's name as a string, got {type_name(name)}")
    value = os.environ.get(name)
    if value is None:
        raise BuiltinError(f"environment variable '{name}' is not set")
    return value


@builtin("input", ctx=True)
def input_(ctx: Context, prompt: Any = None) -> str:
    """input() or input("prompt: "): one line from standard input without its trailing whitespace; "" at the
    end of the input. The prompt is printed without a newline."""
    if prompt is not None:
        if not isinstance(prompt, str):
            raise BuiltinError(f"the prompt must be a string, got {type_name(prompt)}")
        out = ctx.stdout()
        out.write(prompt)
        out.flush()
    return ctx.stdin().readline().rstrip()


@builtin(ctx=True)
def save(ctx: Context, tensor: Any, path: Any) -> None:
    """save(tensor, "file.safetensors"): writes the tensor (any dtype) as SafeTensors, atomically, and prints
    "Saved tensor to: PATH" as the original does (which writes its own raw format instead)."""
    t = tensor_arg(ctx, tensor, "the first argument")
    target = ctx.path(path)
    try:
        save_safetensors({SAVED_NAME: t.detach().cpu().contiguous()}, target)
    except (OSError, TensorLogicError) as e:
        raise BuiltinError(f"cannot write {target}: {first_line(e)}") from None
    _say(ctx, f"Saved tensor to: {path}")


@builtin(ctx=True)
def load(ctx: Context, path: Any) -> torch.Tensor:
    """load("file.safetensors"): the tensor save wrote (or a SafeTensors file's only tensor), in its stored
    dtype, on the default device; prints "Loaded tensor from: PATH (shape: [...])" as the original does."""
    source = ctx.path(path)
    try:
        found = detect(source)
        if found.format != "SafeTensors":
            raise BuiltinError(f"{source} is a {found.format} file; load reads SafeTensors (use load_model)")
        st = open_safetensors(found)
        try:
            names = [info.name for info in st.tensor_infos()]
            if SAVED_NAME not in names and len(names) != 1:
                raise BuiltinError(
                    f"{source} holds {len(names)} tensors, not one; use load_model and get_tensor"
                )
            # A copy: read_torch's tensor views the file's memory map, which close() unmaps.
            t = st.read_torch(SAVED_NAME if SAVED_NAME in names else names[0]).clone()
        finally:
            st.close()
    except (OSError, TensorLogicError) as e:
        reason = e.message if isinstance(e, FormatError) else first_line(e)
        raise BuiltinError(f"cannot read {source}: {reason}") from None
    _say(ctx, f"Loaded tensor from: {path} (shape: {list(t.shape)})")
    return t.to(ctx.torch_device())


def _say(ctx: Context, line: str) -> None:
    out = ctx.stdout()
    out.write(line + "\n")
    out.flush()
