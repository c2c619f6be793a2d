"""What a SAELens ``cfg.json`` means, field by field, as SAELens 6.54.12 loads it from disk.

``SAE.load_from_disk`` in SAELens 6.54.12 (``sae_lens/saes/sae.py``,
``sae_lens/loading/pretrained_sae_loaders.py``) does, in order:

1. ``handle_config_defaulting``: a config with no ``sae_lens_version`` (top level or in
   ``metadata``), or one older than 6.0.0-rc.0, is converted from the pre-6.0 format
   (``hook_point`` → ``hook_name``, ``activation_fn_str`` → ``activation_fn``,
   ``apply_b_dec_to_input`` defaults to True, ``architecture`` to "standard", a boolean
   ``normalize_activations`` becomes "expected_average_only_in"/"none", ``activation_fn``
   "topk" with ``activation_fn_kwargs.k`` becomes the "topk" architecture);
2. the config dataclass of the architecture keeps only its own fields and fills the rest
   with its defaults (``SAEConfig``: dtype "float32", apply_b_dec_to_input True,
   normalize_activations "none", reshape_activations "none"; ``TopKSAEConfig``: k 100,
   rescale_acts_by_decoder_norm False);
3. the weights are cast to ``dtype`` and loaded strictly (a missing or extra tensor is an
   error; a ``scaling_factor`` of all ones is dropped first).

``read_config`` reproduces that and returns every field that changes encode or decode, with
where its value came from; what monoscope cannot apply as SAELens does is refused with one
line naming the field. Fixtures computed by that SAELens version check the result
(``tests/fixtures/saelens/``).
"""

from dataclasses import dataclass
from typing import Any

import torch

from harness.errors import MonoscopeError

SAELENS_VERSION = "6.54.12"
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "torch.float32": torch.float32,
    "torch.float64": torch.float64,
    "torch.float16": torch.float16,
    "torch.bfloat16": torch.bfloat16,
}
# Architecture → (monoscope architecture, the tensors SAELens' inference class holds).
SUPPORTED = {
    "standard": ("relu", ("W_enc", "b_enc", "W_dec", "b_dec")),
    "jumprelu": ("jumprelu", ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")),
    "topk": ("topk", ("W_enc", "b_enc", "W_dec", "b_dec")),
    "gated": ("gated", ("W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag")),
}
REFUSED = {
    "abstopk": "its features fire with either sign, and monoscope's index counts a unit as firing when its activation is > 0",
    "batchtopk": "it is a training format: SAELens cannot load it for inference (save the inference model, a jumprelu)",
    "matryoshka_batchtopk": "it is a training format: SAELens cannot load it for inference (save the inference model, a jumprelu)",
    "transcoder": "a transcoder reads one hook and writes another; monoscope evaluates dictionaries of one hook",
    "skip_transcoder": "a transcoder reads one hook and writes another; monoscope evaluates dictionaries of one hook",
    "jumprelu_transcoder": "a transcoder reads one hook and writes another; monoscope evaluates dictionaries of one hook",
    "jumprelu_skip_transcoder": "a transcoder reads one hook and writes another; monoscope evaluates dictionaries of one hook",
    "temporal": "its encoder attends over earlier tokens, which monoscope's per-token encoder cannot apply",
    "matching_pursuit": "its encoder is iterative matching pursuit, which monoscope does not implement",
}
BASE_DEFAULTS: dict[str, Any] = {
    "dtype": "float32",
    "apply_b_dec_to_input": True,
    "normalize_activations": "none",
    "reshape_activations": "none",
}
TOPK_DEFAULTS: dict[str, Any] = {"k": 100, "rescale_acts_by_decoder_norm": False}
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")  # applied per token at encode and decode
PRE_6_RENAMES = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index", "activation_fn_str": "activation_fn"}


@dataclass(frozen=True)
class EncodingSettings:
    """What a cfg.json means for encode and decode, after SAELens' conversions and defaults.

    ``fields`` maps each field that changes encode or decode to the value applied;
    ``defaulted`` names those that were absent and took SAELens' default; ``ignored``
    names the fields present that SAELens 6.54.12 does not use to encode or decode.
    """

    architecture: str  # monoscope's name: relu, jumprelu, topk or gated
    tensors: tuple[str, ...]
    dtype: torch.dtype
    k: int | None
    apply_b_dec_to_input: bool
    normalize_activations: str
    rescale_acts_by_decoder_norm: bool
    norm_scaling_factor: float | None  # folded into the weights (expected_average_only_in)
    hook_name: str | None
    fields: dict[str, Any]
    defaulted: tuple[str, ...]
    ignored: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """Return the JSON record of what was read, for a dictionary's metadata."""
        return {"saelens_version": SAELENS_VERSION, "fields": self.fields, "defaulted": list(self.defaulted), "ignored": list(self.ignored)}


def is_pre_6(cfg: dict[str, Any], source: str = "cfg.json") -> bool:
    """Return True when SAELens 6.54.12 treats ``cfg`` as a pre-6.0 config (no version, or older than 6.0.0-rc.0)."""
    from packaging.version import InvalidVersion, Version

    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    if not version:
        return True
    try:
        return Version(str(version)) < Version("6.0.0-rc.0")
    except InvalidVersion as exc:
        raise _refuse("sae_lens_version", version, "it is not a version number", source) from exc


def convert_pre_6(cfg: dict[str, Any]) -> dict[str, Any]:
    """Return a pre-6.0 config in 6.0 form, as SAELens' ``handle_pre_6_0_config`` converts it."""
    new = {PRE_6_RENAMES.get(key, key): value for key, value in cfg.items()}
    new.setdefault("apply_b_dec_to_input", True)
    new.setdefault("activation_fn", "relu")
    new.setdefault("architecture", "standard")
    new.setdefault("reshape_activations", "hook_z" if "hook_z" in str(new.get("hook_name", "")) else "none")
    kwargs = new.get("activation_fn_kwargs") or {}
    if new.get("activation_fn") == "topk" and kwargs.get("k") is not None:
        new["architecture"] = "topk"
        new["k"] = kwargs["k"]
    if isinstance(new.get("normalize_activations"), bool):
        new["normalize_activations"] = "expected_average_only_in" if new["normalize_activations"] else "none"
    if new.get("normalize_activations") is None:
        new["normalize_activations"] = "none"
    return new


def _refuse(field: str, value: Any, why: str, source: str) -> MonoscopeError:
    return MonoscopeError(f"{source}: {field}={value!r} is not supported: {why}", f"SAELens {SAELENS_VERSION} semantics; see the README")


def read_config(cfg: dict[str, Any], source: str) -> EncodingSettings:
    """Return what ``cfg`` (a parsed cfg.json) means for encode and decode, as SAELens 6.54.12 loads it.

    Raises MonoscopeError naming the field when a field that changes encode or decode
    cannot be applied as SAELens applies it (or SAELens itself could not load the config).
    """
    for name in ("metadata", "activation_fn_kwargs"):
        if cfg.get(name) is not None and not isinstance(cfg[name], dict):
            raise _refuse(name, cfg[name], "it must be a JSON object", source)
    pre_6 = is_pre_6(cfg, source)
    converted = convert_pre_6(cfg) if pre_6 else dict(cfg)
    declared = converted.get("architecture")
    if declared is None:
        raise MonoscopeError(f"{source}: cfg.json names no architecture", "add architecture (standard, jumprelu, topk or gated)")
    declared = str(declared)
    if declared in REFUSED:
        raise _refuse("architecture", declared, REFUSED[declared], source)
    if declared not in SUPPORTED:
        raise _refuse("architecture", declared, "SAELens 6.54.12 has no such inference architecture", source)
    architecture, tensors = SUPPORTED[declared]
    if pre_6:
        activation_fn = str(converted.get("activation_fn", "relu"))
        if activation_fn not in ("relu", "topk"):  # SAELens drops it and applies the architecture's own activation
            raise _refuse("activation_fn", activation_fn, "SAELens 6.54.12 would drop it and apply ReLU", source)
        if activation_fn == "topk" and architecture != "topk":
            raise _refuse(
                "activation_fn", activation_fn, "a topk activation needs activation_fn_kwargs.k (SAELens would apply ReLU)", source
            )
        if converted.get("finetuning_scaling_factor"):
            raise _refuse("finetuning_scaling_factor", True, "SAELens 6 has no finetuning scaling factor", source)
    defaults = BASE_DEFAULTS | (TOPK_DEFAULTS if architecture == "topk" else {})
    fields = {name: converted.get(name, default) for name, default in defaults.items()}
    present = {PRE_6_RENAMES.get(key, key) for key in cfg} | ({"k"} if "k" in converted else set())  # pre-6: k from activation_fn_kwargs
    present -= {"normalize_activations"} if cfg.get("normalize_activations") is None and pre_6 else set()
    defaulted = tuple(name for name in defaults if name not in present)
    dtype_name = str(fields["dtype"])
    if dtype_name not in DTYPES:
        raise _refuse("dtype", dtype_name, f"use one of {', '.join(sorted(set(DTYPES) - {k for k in DTYPES if '.' in k}))}", source)
    if fields["reshape_activations"] != "none":
        raise _refuse(
            "reshape_activations",
            fields["reshape_activations"],
            "monoscope reads resid_post and mlp.hook_post, not per-head hook_z",
            source,
        )
    head = converted.get("hook_head_index", (converted.get("metadata") or {}).get("hook_head_index"))
    if head is not None:
        raise _refuse("hook_head_index", head, "monoscope's hooks have no heads", source)
    normalize = fields["normalize_activations"]
    scale = None
    if normalize == "expected_average_only_in":
        scale = converted.get("norm_scaling_factor")
        if not isinstance(scale, int | float) or isinstance(scale, bool) or not 0 < scale < float("inf"):
            raise _refuse(
                "normalize_activations",
                normalize,
                "SAELens 6.54.12 applies it only by folding a release's norm_scaling_factor into the weights, and this cfg.json has "
                "no positive norm_scaling_factor (fold it with SAE.fold_activation_norm_scaling_factor and set none)",
                source,
            )
        scale = float(scale)
        fields["norm_scaling_factor"] = scale
        normalize = "none"  # folded, as SAE.from_pretrained folds it
    elif normalize not in NORMALIZATIONS:
        why = (
            "SAELens 6.54.12 applies no whitening at inference (its trainer folds it into the weights before saving): "
            "fold it with SAE.fold_activation_whitening and set none"
            if normalize == "covariance_whitening"
            else f"use one of {', '.join(NORMALIZATIONS)} or expected_average_only_in"
        )
        raise _refuse("normalize_activations", normalize, why, source)
    k = None
    if architecture == "topk":
        k_value = fields["k"]
        if isinstance(k_value, bool) or not isinstance(k_value, int) and not (isinstance(k_value, float) and k_value.is_integer()):
            raise _refuse("k", k_value, "k must be a whole number", source)
        k = int(k_value)
        fields["k"] = k
    if not isinstance(fields["apply_b_dec_to_input"], bool):
        raise _refuse("apply_b_dec_to_input", fields["apply_b_dec_to_input"], "it must be true or false", source)
    rescale = fields.get("rescale_acts_by_decoder_norm", False)
    if not isinstance(rescale, bool):
        raise _refuse("rescale_acts_by_decoder_norm", rescale, "it must be true or false", source)
    hook_name = converted.get("hook_name") or (converted.get("metadata") or {}).get("hook_name")
    if hook_name is not None and not isinstance(hook_name, str):
        raise _refuse("hook_name", hook_name, "it must be a hook name such as blocks.9.hook_resid_post", source)
    used = set(defaults) | {"architecture", "d_in", "d_sae", "hook_name", "metadata", "norm_scaling_factor", "device", "sae_lens_version"}
    ignored = tuple(sorted(key for key in cfg if key not in used and PRE_6_RENAMES.get(key) not in used))
    return EncodingSettings(
        architecture=architecture,
        tensors=tensors,
        dtype=DTYPES[dtype_name],
        k=k,
        apply_b_dec_to_input=fields["apply_b_dec_to_input"],
        normalize_activations=normalize,
        rescale_acts_by_decoder_norm=rescale,
        norm_scaling_factor=scale,
        hook_name=hook_name,
        fields={"architecture": declared, **fields},
        defaulted=defaulted,
        ignored=ignored,
    )


def read_tensors(tensors: dict[str, torch.Tensor], settings: EncodingSettings, source: str) -> dict[str, torch.Tensor]:
    """Return the weights SAELens' inference class would hold, cast to the config's dtype.

    As SAELens 6.54.12: a ``scaling_factor`` of all ones is dropped; any other tensor the
    architecture has no place for, or a missing one, is an error (SAELens loads strictly).
    """
    tensors = dict(tensors)
    factor = tensors.pop("scaling_factor", None)
    if factor is not None and not torch.allclose(factor.float(), torch.ones_like(factor.float())):
        raise _refuse("scaling_factor", "not all ones", "SAELens 6 has no finetuning scaling factor", source)
    missing = [name for name in settings.tensors if name not in tensors]
    if missing:
        raise MonoscopeError(
            f"{source} lacks tensors {missing}", f"a {settings.fields['architecture']} dictionary needs {list(settings.tensors)}"
        )
    extra = sorted(set(tensors) - set(settings.tensors))
    if extra:
        raise MonoscopeError(
            f"{source} holds tensors {extra} that a {settings.fields['architecture']} dictionary has no place for",
            "SAELens loads weights strictly: check the architecture in cfg.json",
        )
    return {name: tensors[name].to(settings.dtype) for name in settings.tensors}
