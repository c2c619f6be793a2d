"""Dictionary formats: read a dictionary from disk or a spec, and save one in SAELens format.

A dictionary maps the activation at one hook to unit activations (``harness.dictionaries.dictionary``). Supported:
- SAELens-format directories (``cfg.json`` + ``sae_weights.safetensors``) with
  ReLU ("standard"), JumpReLU, TopK and gated encoders, read as SAELens 6.54.12 reads
  them (``harness.dictionaries.saelens_config``: every field that changes encode or decode
  is applied, with SAELens' default when absent, or refused naming the field);
- plain safetensors files with the same keys (``W_enc [d_in, d_sae]``, ``b_enc``,
  ``W_dec [d_sae, d_in]``, ``b_dec``, optional ``threshold``, optional scalar ``k``);
- SAELens releases by ID (``saelens:RELEASE/SAE_ID``; needs the hub and sae-lens);
- ``neurons:L``: the identity over the MLP hidden activations of block L;
- ``residual-basis:L``: the identity over the residual stream after block L.

Units are named ``<dictionary name>/<index>``.
"""

import json
from pathlib import Path
from typing import Any

import torch

from harness.dictionaries.dictionary import WEIGHT_NAMES, Dictionary, identity_dictionary
from harness.dictionaries.saelens_config import DTYPES, SAELENS_VERSION, read_config, read_tensors
from harness.errors import MonoscopeError
from harness.storage import atomic_write_bytes, atomic_write_json

ARCHITECTURES = ("relu", "jumprelu", "topk", "gated", "identity")
WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
STATS_FILE = "monoscope_stats.json"
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items() if "." not in name}


def _validate(dictionary: Dictionary, source: str) -> Dictionary:
    d_in, d_sae = dictionary.d_in, dictionary.d_sae
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    expected |= {name: (d_sae,) for name in ("threshold", "b_gate", "b_mag", "r_mag")}
    for key, shape in expected.items():
        tensor = getattr(dictionary, key)
        if tensor is None:
            continue
        if tuple(tensor.shape) != shape:
            raise MonoscopeError(
                f"{key} in {source} has shape {tuple(tensor.shape)}, expected {shape} for d_in={d_in}, d_sae={d_sae}",
                "check that the file belongs to this dictionary",
            )
        if not torch.isfinite(tensor).all():
            raise MonoscopeError(f"{key} in {source} contains NaN or infinite values", "retrain or re-download the dictionary")
    if dictionary.k is not None and not 0 < dictionary.k <= d_sae:
        raise MonoscopeError(f"TopK k={dictionary.k} in {source} is outside 1..{d_sae}", "fix k in cfg.json")
    return dictionary


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        raise MonoscopeError(f"dictionary weights {str(path)!r} not found", "check the path")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MonoscopeError(f"cannot read {str(path)!r} as safetensors ({exc})", "the file is corrupt: re-save or re-download it") from exc
    return tensors


def _width(cfg: dict[str, Any], field: str, default: int, label: str) -> int:
    """Return the whole number ``cfg[field]`` (``default``, the weights' size, when absent); refuse anything else naming the field."""
    value = cfg.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MonoscopeError(f"{label}: {field}={value!r} is not a positive whole number", f"set {field} to the weights' size")
    return value


def dictionary_from_config(cfg: dict[str, Any], tensors: dict[str, torch.Tensor], name: str, source: str, label: str) -> Dictionary:
    """Return the dictionary that ``cfg`` (a parsed cfg.json) and ``tensors`` make, as SAELens 6.54.12 would apply it.

    ``source`` is recorded in the metadata; ``label`` names the input in errors. The metadata's
    ``saelens_config`` holds the SAELens version followed and every field read.
    """
    settings = read_config(cfg, label)
    weights = read_tensors(tensors, settings, label)
    if settings.norm_scaling_factor is not None:  # SAE.fold_activation_norm_scaling_factor
        scale = settings.norm_scaling_factor
        weights["W_enc"], weights["W_dec"], weights["b_dec"] = weights["W_enc"] * scale, weights["W_dec"] / scale, weights["b_dec"] / scale
    if not settings.hook_name:
        raise MonoscopeError(f"{label} names no hook_name", "add hook_name (or metadata.hook_name), e.g. blocks.9.hook_resid_post")
    W_enc = weights["W_enc"]
    d_in, d_sae = _width(cfg, "d_in", W_enc.shape[0], label), _width(cfg, "d_sae", W_enc.shape[1], label)
    dictionary = Dictionary(
        name=name,
        hook_name=settings.hook_name,
        architecture=settings.architecture,
        d_in=d_in,
        d_sae=d_sae,
        k=settings.k,
        rescale_acts_by_decoder_norm=settings.rescale_acts_by_decoder_norm,
        apply_b_dec_to_input=settings.apply_b_dec_to_input,
        normalize_activations=settings.normalize_activations,
        metadata={"source": source, "saelens_config": settings.record()},
        **weights,
    )
    return _validate(dictionary, label)


def load_saelens_directory(path: Path, name: str | None = None) -> Dictionary:
    """Return the dictionary stored in a SAELens-format directory (cfg.json + sae_weights.safetensors)."""
    config_path = path / CONFIG_FILE
    if not config_path.exists():
        raise MonoscopeError(f"{str(path)!r} has no {CONFIG_FILE}", "a SAELens directory holds cfg.json and sae_weights.safetensors")
    try:
        cfg = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise MonoscopeError(f"{str(config_path)!r} is not valid JSON ({exc.msg})", "fix or regenerate cfg.json") from exc
    if not isinstance(cfg, dict):
        raise MonoscopeError(f"{str(config_path)!r} is not a JSON object", "fix or regenerate cfg.json")
    tensors = _read_weights(path / WEIGHTS_FILE)
    return dictionary_from_config(cfg, tensors, name or cfg.get("monoscope_name") or path.name, str(path), repr(str(config_path)))


def load_safetensors_file(path: Path, hook_name: str, name: str | None = None) -> Dictionary:
    """Return the dictionary in a plain safetensors file with SAELens keys.

    With no cfg.json there are no SAELens settings to follow: the file is applied with
    apply_b_dec_to_input false and no normalisation (ReLU; JumpReLU with ``threshold``;
    TopK with a scalar ``k``), in float32. Save it as a SAELens directory for anything else.
    """
    tensors = {key: value.float() for key, value in _read_weights(path).items()}
    missing = [key for key in ("W_enc", "b_enc", "W_dec", "b_dec") if key not in tensors]
    if missing:
        raise MonoscopeError(f"{str(path)!r} lacks tensors {missing}", "a dictionary needs W_enc, b_enc, W_dec and b_dec")
    extra = sorted(set(tensors) - {"W_enc", "b_enc", "W_dec", "b_dec", "threshold", "k"})
    if extra:
        raise MonoscopeError(
            f"{str(path)!r} holds tensors {extra} that a plain dictionary file has no place for",
            "save it as a SAELens directory with a cfg.json",
        )
    architecture = "jumprelu" if "threshold" in tensors else "relu"
    k = None
    if "k" in tensors:
        architecture, k = "topk", int(tensors["k"].item())
    W_enc = tensors["W_enc"]
    dictionary = Dictionary(
        name=name or path.stem,
        hook_name=hook_name,
        architecture=architecture,
        d_in=int(W_enc.shape[0]),
        d_sae=int(W_enc.shape[1]),
        W_enc=W_enc,
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        threshold=tensors.get("threshold"),
        k=k,
        metadata={"source": str(path)},
    )
    return _validate(dictionary, repr(str(path)))


def load_saelens_release(release: str, sae_id: str) -> Dictionary:  # pragma: no cover - needs a hub
    """Return a dictionary from a SAELens release (downloads through sae-lens; needs the hub)."""
    try:
        from sae_lens import SAE
    except ImportError as exc:
        raise MonoscopeError("loading SAELens releases needs the sae-lens package", "pip install sae-lens") from exc
    loaded = SAE.from_pretrained(release, sae_id)
    sae = loaded[0] if isinstance(loaded, tuple) else loaded
    state = {key: value.detach().cpu() for key, value in sae.state_dict().items()}
    cfg = sae.cfg.to_dict()  # after SAELens' own folds (norm_scaling_factor), so no factor remains to apply
    cfg["sae_lens_version"] = getattr(sae.cfg.metadata, "sae_lens_version", None) or "6"
    name = f"{release}/{sae_id}".replace("/", "--")
    return dictionary_from_config(cfg, state, name, f"saelens:{release}/{sae_id}", f"SAELens {release}/{sae_id}")


def load_dictionary(spec: str, hook_name: str | None = None, name: str | None = None) -> Dictionary:
    """Return the dictionary described by ``spec`` (see the module docstring for the forms).

    ``neurons:L`` and ``residual-basis:L`` need the model's widths, so they are
    resolved by ``resolve_dictionary``; this function handles weight files.
    """
    if spec.startswith("saelens:"):
        release, _, sae_id = spec.removeprefix("saelens:").partition("/")
        return load_saelens_release(release, sae_id)
    path = Path(spec)
    if path.is_dir():
        return load_saelens_directory(path, name)
    if path.suffix == ".safetensors":
        if hook_name is None:
            raise MonoscopeError(f"plain safetensors dictionary {spec!r} needs a hook name", "pass --hook blocks.L.hook_resid_post")
        return load_safetensors_file(path, hook_name, name)
    raise MonoscopeError(f"dictionary {spec!r} not found", "give a SAELens directory, a .safetensors file, neurons:L or residual-basis:L")


def resolve_dictionary(spec: str, n_layers: int, d_model: int, d_mlp: int, hook_name: str | None = None) -> Dictionary:
    """Return the dictionary for ``spec``, checked against the subject model's shape."""
    from harness.subject.model import parse_hook

    for kind in ("neurons", "residual-basis"):
        if spec.startswith(kind + ":"):
            layer_text = spec.split(":", 1)[1]
            if not layer_text.isdigit():
                raise MonoscopeError(f"bad dictionary spec {spec!r}", f"write {kind}:LAYER, e.g. {kind}:9")
            layer = int(layer_text)
            parse_hook(f"blocks.{layer}.hook_resid_post", n_layers)
            return identity_dictionary(kind, layer, d_mlp if kind == "neurons" else d_model)
    dictionary = load_dictionary(spec, hook_name)
    point = parse_hook(dictionary.hook_name, n_layers)
    width = d_model if point.site == "resid_post" else d_mlp
    if dictionary.d_in != width:
        raise MonoscopeError(
            f"dictionary {dictionary.name!r} has d_in={dictionary.d_in} but {dictionary.hook_name} has width {width}",
            "use a dictionary trained on this model and hook",
        )
    return dictionary


def save_saelens_directory(dictionary: Dictionary, path: Path, extra_config: dict[str, Any] | None = None) -> None:
    """Write ``dictionary`` (weights on any device) as a SAELens-format directory (cfg.json + sae_weights.safetensors)."""
    from safetensors.torch import save

    if dictionary.architecture == "identity":
        raise ValueError("identity dictionaries have no weights to save")
    tensors = {
        name: getattr(dictionary, name).detach().cpu().contiguous() for name in WEIGHT_NAMES if getattr(dictionary, name) is not None
    }
    architecture = {"relu": "standard", "jumprelu": "jumprelu", "topk": "topk", "gated": "gated"}[dictionary.architecture]
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "d_in": dictionary.d_in,
        "d_sae": dictionary.d_sae,
        "dtype": _DTYPE_NAMES[dictionary.W_dec.dtype],
        "sae_lens_version": SAELENS_VERSION,  # the format followed (a SAELens 6 config)
        "hook_name": dictionary.hook_name,
        "hook_layer": int(dictionary.hook_name.split(".")[1]),
        "activation_fn_str": "topk" if architecture == "topk" else "relu",
        "activation_fn_kwargs": {"k": dictionary.k} if dictionary.k else {},
        "apply_b_dec_to_input": dictionary.apply_b_dec_to_input,
        "normalize_activations": dictionary.normalize_activations,
        "monoscope_name": dictionary.name,
        "metadata": {"hook_name": dictionary.hook_name, "sae_lens_version": SAELENS_VERSION},  # where SAELens 6 reads them
    }
    if dictionary.k:
        cfg["k"] = dictionary.k
    if dictionary.rescale_acts_by_decoder_norm:
        cfg["rescale_acts_by_decoder_norm"] = True
    cfg.update(extra_config or {})
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path / WEIGHTS_FILE, save(tensors))
    atomic_write_json(path / CONFIG_FILE, cfg)
