"""Subject-model adapter: load any HF causal LM and read activations at named hooks.

Hook names follow TransformerLens conventions:
- ``blocks.{L}.hook_resid_post``: the residual stream after block L;
- ``blocks.{L}.mlp.hook_post``: the MLP hidden activations of block L (the input of
  its down projection; for Gemma that is gelu(gate) * up, which is signed).

One forward pass serves every requested hook and stops right after the deepest
block needed, so neither the later blocks nor the LM head are ever computed.
"""

import re
from dataclasses import dataclass
from typing import Any

import torch

from harness.errors import MonoscopeError

_HOOK_PATTERN = re.compile(r"^blocks\.(\d+)\.(hook_resid_post|mlp\.hook_post)$")
_MLP_OUTPUT_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")


@dataclass(frozen=True)
class HookPoint:
    """A parsed hook name: block index and which activation of that block."""

    layer: int
    site: str  # "resid_post" or "mlp_post"

    @property
    def name(self) -> str:
        """Return the TransformerLens-style hook name."""
        suffix = "hook_resid_post" if self.site == "resid_post" else "mlp.hook_post"
        return f"blocks.{self.layer}.{suffix}"


@dataclass(frozen=True)
class SubjectModel:
    """A loaded causal LM with what the harness needs to know about it."""

    name: str
    model: Any  # transformers PreTrainedModel (causal LM)
    tokenizer: Any
    n_layers: int
    d_model: int
    d_mlp: int
    device: str
    bos_token_id: int | None

    @property
    def default_layer(self) -> int:
        """Return the middle block, the default place to read the residual stream."""
        return self.n_layers // 2

    def dimension(self, hook: "HookPoint") -> int:
        """Return the width of the activation at ``hook``."""
        return self.d_model if hook.site == "resid_post" else self.d_mlp


def parse_hook(name: str, n_layers: int | None = None) -> HookPoint:
    """Return the HookPoint for a hook name, checking the layer against ``n_layers``."""
    match = _HOOK_PATTERN.match(name)
    if not match:
        raise MonoscopeError(
            f"unknown hook name {name!r}",
            "use blocks.{L}.hook_resid_post or blocks.{L}.mlp.hook_post",
        )
    layer = int(match.group(1))
    if n_layers is not None and not 0 <= layer < n_layers:
        raise MonoscopeError(
            f"layer {layer} of hook {name!r} is out of range",
            f"the model has blocks 0..{n_layers - 1}",
        )
    site = "resid_post" if match.group(2) == "hook_resid_post" else "mlp_post"
    return HookPoint(layer, site)


def resolve_dtype(name: str) -> torch.dtype:
    """Return the torch dtype called ``name`` (float32, bfloat16, float16)."""
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise MonoscopeError(f"unknown dtype {name!r}", f"choose one of {', '.join(table)}")
    return table[name]


def parse_device(device: str) -> torch.device:
    """Return ``device`` as a torch.device of a kind monoscope runs on (cpu, cuda, mps); MonoscopeError when it is malformed."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MonoscopeError(f"device {device!r} is not a torch device", "use cpu, cuda or cuda:N") from exc
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise MonoscopeError(f"device {device!r} is not a device monoscope runs on", "use cpu, cuda, cuda:N or mps")
    return parsed


def check_device(device: str) -> torch.device:
    """Return ``device`` as a torch.device; MonoscopeError when it is malformed or not present on this machine."""
    parsed = parse_device(device)
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise MonoscopeError(
            f"device {device!r} requested but CUDA is not available", "set model.device: cpu (or --device cpu where the command has it)"
        )
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise MonoscopeError(f"device {device!r} does not exist", f"this machine has cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return parsed


def load_subject_model(name: str = "embedded", device: str = "cpu", dtype: str = "float32") -> SubjectModel:
    """Return the causal LM ``name`` (hub id, local path, or "embedded") loaded on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.subject.embedded import model_source

    torch_dtype = resolve_dtype(dtype)
    check_device(device)
    source = model_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as exc:
        raise MonoscopeError(
            f"cannot load model {name!r}: {str(exc).splitlines()[0]}",
            "give a local path, a reachable hub id, or 'embedded'",
        ) from exc
    model.to(device)
    return wrap_model(model, tokenizer, name, device)


def local_tokenizer(name: str) -> Any | None:
    """Return the tokenizer of model ``name`` from files already on this machine, or None where there are none.

    Nothing is downloaded, de-quantised or loaded beyond the tokenizer: an embedded model's comes
    from its checkpoint in the cache, a hub id's or local path's from ``local_files_only``.
    """
    from transformers import AutoTokenizer

    from harness.subject.embedded import cached_checkpoint_dir, is_embedded

    source = cached_checkpoint_dir(name) if is_embedded(name) else name
    if source is None:
        return None
    try:
        return AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError):
        return None


def config_shape(config: Any) -> tuple[int, int, int]:
    """Return (n_layers, d_model, d_mlp) read from a HF model config."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * config.hidden_size
    return int(config.num_hidden_layers), int(config.hidden_size), int(d_mlp)


def wrap_model(model: Any, tokenizer: Any, name: str = "in-memory", device: str = "cpu") -> SubjectModel:
    """Return a SubjectModel around a loaded or freshly built model."""
    model.eval()
    n_layers, d_model, d_mlp = config_shape(model.config)
    return SubjectModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        n_layers=n_layers,
        d_model=d_model,
        d_mlp=d_mlp,
        device=device,
        bos_token_id=getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None,
    )


def transformer_blocks(model: Any) -> Any:
    """Return the ModuleList of transformer blocks of a HF causal LM."""
    for path in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        module = model
        try:
            for attribute in path.split("."):
                module = getattr(module, attribute)
        except AttributeError:
            continue
        return module
    raise MonoscopeError(f"cannot find the transformer blocks of {type(model).__name__}", "use a decoder-only HF model")


def mlp_output_projection(block: Any) -> Any:
    """Return the MLP's output (down) projection of a block: its input is ``blocks.L.mlp.hook_post``."""
    mlp = getattr(block, "mlp", None)
    if mlp is None:
        raise MonoscopeError(f"block {type(block).__name__} has no .mlp", "MLP hooks need a standard HF block")
    for attribute in _MLP_OUTPUT_NAMES:
        if hasattr(mlp, attribute):
            return getattr(mlp, attribute)
    raise MonoscopeError(f"cannot find the output projection of {type(mlp).__name__}", "MLP hooks need a known MLP layout")


class _StopForwardSignal(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by the last needed hook so the forward pass ends there."""


def with_bos(subject: SubjectModel, tokens: torch.Tensor) -> torch.Tensor:
    """Return ``tokens`` [batch, T] with the BOS token prepended when the model has one."""
    if subject.bos_token_id is None:
        return tokens
    bos = torch.full((tokens.shape[0], 1), subject.bos_token_id, dtype=tokens.dtype, device=tokens.device)
    return torch.cat([bos, tokens], dim=1)


@torch.inference_mode()
def collect_activations(subject: SubjectModel, tokens: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
    """Return {hook name: float32 activations [batch, T, width]} for content tokens [batch, T].

    BOS is prepended for the forward pass and its position is dropped from the
    result: it carries no content and its norm dwarfs the rest.
    """
    points = [parse_hook(name, subject.n_layers) for name in hooks]
    deepest = max(point.layer for point in points)
    blocks = transformer_blocks(subject.model)
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def resid_hook(point: HookPoint):
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            captured[point.name] = hidden
            if point.layer == deepest and len(captured) == len(points):
                raise _StopForwardSignal

        return hook

    def mlp_hook(point: HookPoint):
        def hook(_module: Any, inputs: Any) -> None:
            captured[point.name] = inputs[0]
            if point.layer == deepest and len(captured) == len(points):
                raise _StopForwardSignal

        return hook

    try:
        for point in points:
            if point.site == "resid_post":
                handles.append(blocks[point.layer].register_forward_hook(resid_hook(point)))
            else:
                projection = mlp_output_projection(blocks[point.layer])
                handles.append(projection.register_forward_pre_hook(mlp_hook(point)))
        inputs = with_bos(subject, tokens.to(subject.device))
        base = subject.model.base_model if hasattr(subject.model, "base_model") else subject.model
        try:
            base(input_ids=inputs, use_cache=False)
        except _StopForwardSignal:
            pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [point.name for point in points if point.name not in captured]
    if missing:
        raise RuntimeError(f"hooks never fired: {missing}")
    offset = 1 if subject.bos_token_id is not None else 0
    return {point.name: captured[point.name][:, offset:, :].float() for point in points}


def model_shape(name: str) -> tuple[int, int, int]:
    """Return (n_layers, d_model, d_mlp) of model ``name`` from its config alone (no weights run)."""
    from transformers import AutoConfig

    from harness.subject.embedded import model_source

    source = model_source(name)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise MonoscopeError(
            f"cannot load model {name!r}: {str(exc).splitlines()[0]}", "give a local path, a reachable hub id, or 'embedded'"
        ) from exc
    return config_shape(config)


def max_positions(name: str) -> int | None:
    """Return the most positions model ``name`` accepts (``max_position_embeddings``), from its config alone; None when unknown.

    Reads only a config already on this machine ("embedded", a local directory or the hub cache); never downloads.
    """
    from transformers import AutoConfig

    from harness.subject.embedded import model_source

    source = model_source(name)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        return None
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if value else None


def check_context_fits(name: str, context_length: int) -> None:
    """Raise MonoscopeError when chunks of ``context_length`` tokens plus BOS exceed what model ``name`` accepts."""
    limit = max_positions(name)
    if limit is not None and context_length + 1 > limit:
        raise MonoscopeError(
            f"context length {context_length} (+1 for BOS) exceeds model {name!r}'s {limit} positions",
            f"use chunks of at most {limit - 1} tokens",
        )
