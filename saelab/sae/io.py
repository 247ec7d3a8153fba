"""Saving and loading SAEs: saelab's directory format and SAELens' on-disk format.

saelab format: a directory with `cfg.json` (the SAEConfig fields and a format version) and
`sae.safetensors` (parameters and buffers under their module names). Saved SAEs take raw activations:
an input scale used in training is folded in first (`fold_input_scale`).
"""

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from saelab.capacity import require_memory
from saelab.fields import check_field_types
from saelab.sae.batchtopk import batchtopk_to_jumprelu
from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE
from saelab.sae.registry import ARCHITECTURES, get_architecture

FORMAT_VERSION = 1


class SAEPaths(NamedTuple):
    """The files of one saved SAE."""

    directory: Path
    cfg: Path
    weights: Path


def sae_paths(directory: str | os.PathLike[str]) -> SAEPaths:
    """Where saelab's format keeps an SAE inside `directory`."""
    directory = Path(directory)
    return SAEPaths(directory, directory / "cfg.json", directory / "sae.safetensors")


def saelens_paths(directory: str | os.PathLike[str]) -> SAEPaths:
    """Where SAELens' format keeps an SAE inside `directory`."""
    directory = Path(directory)
    return SAEPaths(directory, directory / "cfg.json", directory / "sae_weights.safetensors")


def _write_atomic(path: Path, write: Any) -> None:
    """Call write(temporary_path) in path's directory, then rename it onto path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2)

    _write_atomic(path, write)


def _write_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    _write_atomic(path, lambda tmp: save_file(contiguous, tmp))


def save_sae(sae: SAE, directory: str | os.PathLike[str]) -> SAEPaths:
    """Write `sae` to `directory` (created if needed) in saelab's format."""
    paths = sae_paths(directory)
    paths.directory.mkdir(parents=True, exist_ok=True)
    _write_tensors(paths.weights, dict(sae.state_dict()))
    _write_json(paths.cfg, {**dataclasses.asdict(sae.cfg), "format_version": FORMAT_VERSION})
    return paths


def _read_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file; a damaged file is a one-line ValueError naming it."""
    try:
        return load_file(path)
    except SafetensorError as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc}); re-save or re-train the SAE") from None


def _config_from_json(path: Path) -> SAEConfig:
    """The SAEConfig a cfg.json holds; a wrong type or value is a one-line ValueError naming the file and field."""
    if not path.is_file():
        raise ValueError(f"no SAE config at {path}; expected a directory written by saelab.sae.save_sae")
    try:
        fields = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a JSON SAE config ({exc}); re-save or re-train the SAE") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path} holds a JSON {type(fields).__name__}, not an SAE config object")
    version = fields.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {version!r}; this saelab reads version {FORMAT_VERSION}")
    unknown = set(fields) - {f.name for f in dataclasses.fields(SAEConfig)}
    if unknown:
        raise ValueError(f"{path} has unknown field(s) {sorted(unknown)}; was it written by a newer saelab?")
    check_field_types(SAEConfig, fields, str(path))
    try:
        return SAEConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def sae_bytes(cfg: SAEConfig) -> int:
    """Bytes of an SAE's parameters (both weight matrices, a skip-transcoder's W_skip, and the per-latent and
    per-input vectors)."""
    skip = cfg.d_in * cfg.d_target if cfg.skip_connection else 0
    weights = (cfg.d_in + cfg.d_target) * cfg.d_sae + skip
    return (weights + 3 * cfg.d_sae + max(cfg.d_in, cfg.d_target)) * cfg.torch_dtype.itemsize


def _sae_from_tensors(cfg: SAEConfig, tensors: dict[str, Tensor], source: Path) -> SAE:
    sae = SAE(cfg)
    expected = set(sae.state_dict())
    if set(tensors) != expected:
        raise ValueError(
            f"{source} holds tensors {sorted(tensors)}; a {cfg.architecture!r} SAE needs {sorted(expected)}"
        )
    for name, tensor in sae.state_dict().items():
        if tensors[name].shape != tensor.shape:
            raise ValueError(
                f"{source}: {name} has shape {tuple(tensors[name].shape)}, expected {tuple(tensor.shape)}"
            )
    sae.load_state_dict({name: t.to(cfg.torch_dtype) for name, t in tensors.items()})
    return sae


def load_sae(directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> SAE:
    """Read an SAE written by `save_sae`."""
    paths = sae_paths(directory)
    cfg = _config_from_json(paths.cfg)
    if not paths.weights.is_file():
        raise ValueError(f"no SAE weights at {paths.weights}")
    require_memory(sae_bytes(cfg), f"{paths.cfg} (d_in {cfg.d_in}, d_sae {cfg.d_sae})")
    return _sae_from_tensors(cfg, _read_tensors(paths.weights), paths.weights).to(device)


# ---------------------------------------------------------------- SAELens on-disk format

SAELENS_TRANSCODERS: dict[tuple[str, bool], str] = {
    ("standard", False): "transcoder",
    ("standard", True): "skip_transcoder",
    ("jumprelu", False): "jumprelu_transcoder",
    ("jumprelu", True): "jumprelu_skip_transcoder",
}
"""SAELens 6's transcoder classes, by (the SAELens name of the sparsity rule, skip term). Their encoders read x
(apply_b_dec_to_input=False), as saelab's transcoders do; SAELens has no TopK or gated transcoder."""


def _saelens_name(sae: SAE) -> str:
    """SAELens' architecture name of an SAE or transcoder; a one-line ValueError where SAELens has none."""
    name = sae.architecture.saelens_name
    if name is None:
        raise ValueError(f"SAELens has no equivalent of the {sae.cfg.architecture!r} architecture")
    if not sae.cfg.is_transcoder:
        return name
    kind = "skip-transcoder" if sae.cfg.skip_connection else "transcoder"
    if (name, sae.cfg.skip_connection) not in SAELENS_TRANSCODERS:
        raise ValueError(f"SAELens 6 has no {sae.cfg.architecture!r} {kind} (only ReLU and JumpReLU ones); keep it "
                         "in saelab's format, or export a relu_l1, jumprelu or batchtopk transcoder")
    return SAELENS_TRANSCODERS[name, sae.cfg.skip_connection]


def _saelens_tensors(sae: SAE) -> dict[str, Tensor]:
    tensors = {name: t.detach() for name, t in sae.named_parameters()}
    if "W_skip" in tensors:
        tensors["W_skip"] = tensors["W_skip"].t()  # SAELens keeps W_skip as (d_out, d_in)
    return tensors


def _saelens_cfg(sae: SAE) -> dict[str, Any]:
    cfg = sae.cfg
    fields: dict[str, Any] = {
        "architecture": _saelens_name(sae),
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": sae.subtracts_b_dec,
        "normalize_activations": "none",  # saelab folds the input scale into the weights
        "reshape_activations": "none",
        "hook_name": cfg.hook_name,
        "model_name": cfg.model_name,
        "metadata": {
            "hook_name": cfg.hook_name,
            "model_name": cfg.model_name,
            "saelab_hook_site": cfg.hook_site,
        },
    }
    if sae.architecture.uses_k:
        fields.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    if cfg.is_transcoder:
        fields["d_out"] = cfg.d_target
        fields["metadata"]["saelab_output_site"] = cfg.output_site
    return fields


def export_saelens(sae: SAE, directory: str | os.PathLike[str]) -> SAEPaths:
    """Write `sae` in SAELens' format (cfg.json + sae_weights.safetensors), loadable with
    `sae_lens.SAE.load_from_disk`. BatchTopK SAEs are written as JumpReLU SAEs with their threshold. Transcoders
    become SAELens' (JumpReLU) (Skip)Transcoder; a TopK or gated transcoder is refused (SAELens has none)."""
    if sae.cfg.architecture == "batchtopk":
        sae = batchtopk_to_jumprelu(sae)
    fields = _saelens_cfg(sae)  # refuses what SAELens cannot represent, before anything is written
    paths = saelens_paths(directory)
    paths.directory.mkdir(parents=True, exist_ok=True)
    _write_tensors(paths.weights, _saelens_tensors(sae))
    _write_json(paths.cfg, fields)
    return paths


def _saelab_architecture(fields: dict[str, Any], source: Path) -> str:
    saelens_arch = fields.get("architecture", "standard")
    transcoders = {name: rule for (rule, _), name in SAELENS_TRANSCODERS.items()}
    saelens_arch = transcoders.get(saelens_arch, saelens_arch)
    same = [arch for arch in ARCHITECTURES.values() if arch.saelens_name == saelens_arch]
    if len(same) > 1:  # e.g. SAELens' "standard": saelab's classic and Anthropic ReLU SAEs
        same = [arch for arch in same if arch.apply_b_dec_to_input == fields.get("apply_b_dec_to_input", True)]
    if len(same) == 1:
        return same[0].name
    raise ValueError(f"{source}: SAELens architecture {saelens_arch!r} has no saelab equivalent")


def _check_importable(fields: dict[str, Any], source: Path) -> None:
    if fields.get("normalize_activations", "none") not in ("none", None, False):
        raise ValueError(
            f"{source}: normalize_activations={fields['normalize_activations']!r} is not folded into the "
            "weights; fold it in SAELens (fold_activation_norm_scaling_factor) before importing"
        )
    if fields.get("rescale_acts_by_decoder_norm", False):
        raise ValueError(
            f"{source}: rescale_acts_by_decoder_norm=True is not supported; fold W_dec norms first"
        )
    if fields.get("reshape_activations", "none") != "none":
        raise ValueError(f"{source}: reshape_activations={fields['reshape_activations']!r} is not supported")


def _shift_input(tensors: dict[str, Tensor], architecture: str, reads_b_dec: bool) -> dict[str, Tensor]:
    """Rewrite encoder biases when the file's SAE and saelab's differ on subtracting b_dec from the input."""
    if reads_b_dec == get_architecture(architecture).apply_b_dec_to_input:
        return tensors
    # saelab reads x - b_dec where the file read x (or the reverse): pre-activations move by -/+ b_dec @ W_enc.
    shift = tensors["b_dec"] @ tensors["W_enc"]
    shift = shift if not reads_b_dec else -shift
    if architecture == "gated":
        tensors["b_gate"] = tensors["b_gate"] + shift
        tensors["b_mag"] = tensors["b_mag"] + shift * tensors["r_mag"].exp()
    else:
        tensors["b_enc"] = tensors["b_enc"] + shift
    return tensors


def _transcoder_fields(fields: dict[str, Any], metadata: dict[str, Any], source: Path) -> dict[str, Any]:
    """The SAEConfig fields of a SAELens transcoder ({} for an SAE); its output site must be known."""
    skip = {name: skip for (_, skip), name in SAELENS_TRANSCODERS.items()}.get(fields.get("architecture"))
    if skip is None:
        return {}
    if not metadata.get("saelab_output_site"):
        raise ValueError(f"{source}: a SAELens {fields['architecture']} whose output site saelab cannot tell (no "
                         "metadata.saelab_output_site); add it, e.g. \"1.mlp_out\", to import it")
    return {"output_site": metadata["saelab_output_site"], "d_out": int(fields["d_out"]), "skip_connection": skip}


def import_saelens(directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> SAE:
    """Read an SAE in SAELens' format (standard, topk, jumprelu or gated), or a transcoder ((jumprelu_)(skip_)
    transcoder) that names its saelab output site in its metadata."""
    paths = saelens_paths(directory)
    if not paths.cfg.is_file() or not paths.weights.is_file():
        raise ValueError(
            f"{paths.directory} is not an SAELens SAE directory (cfg.json + sae_weights.safetensors)"
        )
    fields = json.loads(paths.cfg.read_text())
    _check_importable(fields, paths.cfg)
    architecture = _saelab_architecture(fields, paths.cfg)
    metadata = fields.get("metadata") or {}
    transcoder = _transcoder_fields(fields, metadata, paths.cfg)
    cfg = SAEConfig(
        architecture=architecture,
        d_in=int(fields["d_in"]),
        d_sae=int(fields["d_sae"]),
        k=int(fields.get("k", min(32, int(fields["d_sae"])))),
        normalize_activations=False,
        hook_name=fields.get("hook_name") or metadata.get("hook_name") or "",
        hook_site=metadata.get("saelab_hook_site") or "",
        model_name=fields.get("model_name") or metadata.get("model_name") or "",
        dtype=fields.get("dtype", "float32").removeprefix("torch."),
        **transcoder,
    )
    tensors = {name: t.to(torch.float64) for name, t in _read_tensors(paths.weights).items()}
    if "W_skip" in tensors:
        tensors["W_skip"] = tensors["W_skip"].t()
    tensors = _shift_input(tensors, architecture, bool(fields.get("apply_b_dec_to_input", True)))
    return _sae_from_tensors(cfg, tensors, paths.weights).to(device)
