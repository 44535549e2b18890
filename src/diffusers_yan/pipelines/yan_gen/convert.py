"""`yan convert-wan`: turn a diffusers-format Wan2.1 pipeline folder into a Yan-Gen pipeline folder, offline.

The text encoder, tokenizer, VAE, scheduler and (for I2V) CLIP image encoder are copied as they are. The transformer
is loaded as a [`YanGenTransformer3DModel`] (same parameter names as Wan's) and saved with its new action branch,
whose output projections are zero, so the converted pipeline generates exactly what Wan generates until the
action module is trained (seed: "MM2V training - action module"). Nothing is downloaded: both paths are local.

Example:

```sh
yan convert-wan --wan ./Wan2.1-T2V-1.3B-Diffusers --out ./yan-gen-t2v-1.3b --action-space doom
yan convert-wan --wan ./Wan2.1-I2V-14B-480P-Diffusers --out ./yan-gen-i2v --action-space MOVE_FORWARD,TURN_LEFT,TURN_RIGHT \
    --num-frames-per-block 3   # the causal architecture, ready for autoregressive post-training
```
"""

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers.utils import logging

from ...actions import ActionSpace


logger = logging.get_logger(__name__)  # pylint: disable=invalid-name

_WAN_PIPELINES = ("WanPipeline", "WanImageToVideoPipeline")
_TRANSFORMER_ENTRY = ["diffusers_yan.models.transformers.transformer_yan_gen", "YanGenTransformer3DModel"]
_COMPONENTS = ("tokenizer", "text_encoder", "vae", "scheduler", "image_encoder", "image_processor")


def _checkpoint_dtype(folder: Path) -> torch.dtype:
    """The dtype of the first floating-point tensor of a safetensors checkpoint (so bf16 weights stay bf16)."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                tensor = f.get_slice(key)
                dtype = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}.get(tensor.get_dtype())
                if dtype is not None:
                    return dtype
    return torch.float32


def parse_action_space(spec: str | None) -> ActionSpace | None:
    """`"doom"` (the 8 Doom buttons), `"none"` (no action branch), a JSON file with `ActionSpace.to_dict()`
    output, or comma-separated button names."""
    if spec is None or spec.lower() == "doom":
        return ActionSpace()
    if spec.lower() == "none":
        return None
    if spec.endswith(".json"):
        if not os.path.isfile(spec):
            raise ValueError(f"`--action-space`: file {spec!r} does not exist.")
        with open(spec) as f:
            return ActionSpace.from_dict(json.load(f))
    return ActionSpace(buttons=tuple(b.strip() for b in spec.split(",") if b.strip()))


def convert_wan_to_yan_gen(
    wan_path: str | os.PathLike,
    out_path: str | os.PathLike,
    action_space: ActionSpace | None = ActionSpace(),
    action_embed_dim: int = 768,
    action_num_tokens: int = 1,
    num_frames_per_block: int | None = None,
    kv_cache_max_frames: int = 21,
    overwrite: bool = False,
) -> Path:
    """Convert a diffusers Wan2.1 pipeline folder (`WanPipeline` or `WanImageToVideoPipeline`) into a
    `YanGenPipeline` folder. Returns the output path.

    Args:
        wan_path: local folder with Wan's `model_index.json` and component subfolders.
        out_path: where to write the Yan-Gen folder (written to a temporary folder first, then renamed).
        action_space: the action branch's [`ActionSpace`]; `None` for no action branch.
        action_embed_dim, action_num_tokens: the action encoder's token width and tokens per action.
        num_frames_per_block: make the transformer causal with blocks of this many latent frames (the
            architecture of Yan-Gen's autoregressive post-training); `None` keeps Wan's bidirectional attention.
        kv_cache_max_frames: the causal KV window in latent frames.
        overwrite: replace an existing `out_path`.

    ```py
    >>> from diffusers_yan.pipelines.yan_gen.convert import convert_wan_to_yan_gen
    >>> convert_wan_to_yan_gen("Wan2.1-T2V-1.3B-Diffusers", "yan-gen-t2v-1.3b")  # doctest: +SKIP
    ```
    """
    from ...models.transformers.transformer_yan_gen import YanGenTransformer3DModel

    wan_path, out_path = Path(wan_path), Path(out_path)
    index_file = wan_path / "model_index.json"
    if not index_file.is_file():
        raise ValueError(f"`wan_path`: {wan_path} has no model_index.json; pass a diffusers-format Wan2.1 folder.")
    index = json.loads(index_file.read_text())
    if index.get("_class_name") not in _WAN_PIPELINES:
        raise ValueError(
            f"`wan_path`: {wan_path} holds a {index.get('_class_name')!r}, expected one of {_WAN_PIPELINES}."
        )
    if (index.get("transformer_2") or [None])[0] is not None:
        raise ValueError("`wan_path`: two-transformer (Wan2.2 MoE) checkpoints are not supported; use Wan2.1.")
    if out_path.exists() and any(out_path.iterdir()) and not overwrite:
        raise FileExistsError(f"`out_path`: {out_path} exists and is not empty; pass overwrite=True to replace it.")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".yan-convert-", dir=out_path.parent))
    try:
        # 1. copy the unchanged components
        new_index = {"_class_name": "YanGenPipeline", "_diffusers_version": index.get("_diffusers_version")}
        for name in _COMPONENTS:
            entry = index.get(name) or [None, None]
            new_index[name] = entry
            if entry[0] is not None and (wan_path / name).is_dir():
                shutil.copytree(wan_path / name, tmp / name)

        # 2. the transformer, with its new action branch (zero-initialised output projections)
        dtype = _checkpoint_dtype(wan_path / "transformer")
        transformer = YanGenTransformer3DModel.from_pretrained(
            wan_path / "transformer",
            dtype=dtype,
            action_space=None if action_space is None else action_space.to_dict(),
            action_embed_dim=action_embed_dim,
            action_num_tokens=action_num_tokens,
            num_frames_per_block=num_frames_per_block,
            kv_cache_max_frames=kv_cache_max_frames,
        )
        transformer.save_pretrained(tmp / "transformer")
        new_index["transformer"] = _TRANSFORMER_ENTRY
        (tmp / "model_index.json").write_text(json.dumps(new_index, indent=2, sort_keys=True) + "\n")

        # 3. move into place
        if out_path.exists():
            shutil.rmtree(out_path)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"Wrote a YanGenPipeline folder to {out_path}.")
    return out_path


def _run(args: argparse.Namespace) -> int:
    convert_wan_to_yan_gen(
        args.wan,
        args.out,
        action_space=parse_action_space(args.action_space),
        action_embed_dim=args.action_embed_dim,
        action_num_tokens=args.action_num_tokens,
        num_frames_per_block=args.num_frames_per_block,
        kv_cache_max_frames=args.kv_cache_max_frames,
        overwrite=args.overwrite,
    )
    return 0


def register(subparsers) -> None:
    """Add `yan convert-wan` to the `yan` command line."""
    parser = subparsers.add_parser(
        "convert-wan",
        help="Convert a diffusers-format Wan2.1 pipeline folder into a Yan-Gen pipeline folder (offline).",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--wan", required=True, help="Local diffusers-format Wan2.1 folder (T2V or I2V).")
    parser.add_argument("--out", required=True, help="Output folder for the YanGenPipeline.")
    parser.add_argument(
        "--action-space",
        default="doom",
        help="'doom' (8 Doom buttons, default), 'none' (no action branch), comma-separated button names, or a"
        " JSON file with an ActionSpace dict.",
    )
    parser.add_argument("--action-embed-dim", type=int, default=768, help="Action token width (768 in the paper).")
    parser.add_argument("--action-num-tokens", type=int, default=1, help="Action tokens per action (default 1).")
    parser.add_argument(
        "--num-frames-per-block",
        type=int,
        default=None,
        help="Make the transformer causal with blocks of this many latent frames (default: bidirectional, as Wan).",
    )
    parser.add_argument(
        "--kv-cache-max-frames", type=int, default=21, help="Causal KV window in latent frames (default 21)."
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace --out if it exists.")
    parser.set_defaults(func=_run)
