"""`swinkit info`: parameters, multiply-adds per stage, activations and shapes, computed on the meta device."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

import swinkit
import swinkit.models.shunted  # noqa: F401  (registers shunted_*)
from refcases import REFVECTORS, require_refvectors
from swinkit.cli import CLIError
from swinkit.cli import deploy as deploy_cli
from swinkit.deploy.info import meta_model, model_info, part_of, saved_activation_bytes
from swinkit.deploy.inputs import parse_shape

# name -> (GMACs in the papers' tables, reference manifest counted from the official code, with the head)
PAPER = {
    "swin_t": (4.5, "ms_swin__swin_tiny_patch4_window7_224"),
    "swin_s": (8.7, "ms_swin__swin_small_patch4_window7_224"),
    "swin_b": (15.4, "ms_swin__swin_base_patch4_window7_224"),
    "video_swin_t": (87.9, "torchvision__swin3d_t"),  # per 32x224x224 view
    "shunted_t": (2.1, "shunted__shunted_t"),
    "shunted_s": (4.9, "shunted__shunted_s"),
    "shunted_b": (8.1, "shunted__shunted_b"),
}


@pytest.mark.parametrize("name", list(PAPER))
def test_full_size_figures_match_the_papers(name):
    require_refvectors()
    paper_gmacs, manifest_name = PAPER[name]
    manifest = json.loads((REFVECTORS / "manifests" / f"{manifest_name}.json").read_text())
    info = model_info(name, activations=False)
    assert abs(info.macs / 1e9 - paper_gmacs) / paper_gmacs <= 0.03
    assert info.macs == manifest["macs_flopcounter_meta"]  # counted the same way on the official model
    assert info.params == manifest.get("num_params_with_head", manifest["num_params"])
    assert info.input_shape == ((1, 3, 32, 224, 224) if name.startswith("video") else (1, 3, 224, 224))


def test_swin_t_breakdown():
    info = model_info("swin_t", activations=False)
    parts = {p.name: p for p in info.parts}
    assert list(parts) == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert sum(p.macs for p in info.parts) == info.macs
    assert sum(p.params for p in info.parts) == info.params
    assert [parts[f"stage{i}"].output_shape for i in range(1, 5)] == [
        (1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]
    assert info.output_shape == (1, 1000) and parts["head"].output_shape == (1, 1000)
    # per block: qkv, proj and MLP linears 12 L C², q kᵀ and attention · v 2 L N C (N = 49 tokens per window)
    depths, dims, tokens = (2, 2, 6, 2), (96, 192, 384, 768), (56 * 56, 28 * 28, 14 * 14, 7 * 7)
    for i, (depth, dim, length) in enumerate(zip(depths, dims, tokens)):
        attention = depth * 2 * length * 49 * dim
        merging = length * 2 * dim * dim if i else 0  # Linear(4 C/2, C) at every position of the stage
        assert parts[f"stage{i + 1}"].attention_macs == attention
        assert parts[f"stage{i + 1}"].macs == depth * 12 * length * dim * dim + attention + merging
    assert info.attention_macs == sum(2 * d * t * 49 * c for d, t, c in zip(depths, tokens, dims))
    assert parts["stem"].macs == 56 * 56 * 96 * 3 * 16  # 4x4 convolution, 3 -> 96 channels
    assert parts["head"].macs == 768 * 1000


def test_video_and_shunted_breakdowns_add_up():
    for name, shape, stages in (("video_swin_t", (2, 3, 8, 64, 64), 4), ("shunted_t", (2, 3, 96, 128), 4)):
        info = model_info(name, shape, num_classes=7)
        assert info.output_shape == (2, 7)
        assert sum(p.macs for p in info.parts) == info.macs
        assert sum(p.params for p in info.parts) == info.params
        assert [p.name for p in info.parts if p.name.startswith("stage")] == [f"stage{i + 1}" for i in range(stages)]
        assert "other" not in {p.name for p in info.parts}
    video = model_info("video_swin_t", (1, 3, 8, 64, 64), activations=False)
    assert [p.output_shape for p in video.parts if p.name == "stage1"] == [(1, 96, 4, 16, 16)]


def test_activation_count_of_a_known_network():
    # Linear keeps its input, GELU its input, the second Linear its input: (5*8 + 5*16 + 5*16) floats;
    # weights are not activations, and the GELU input is counted once although two ops see it
    def network() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))

    assert saved_activation_bytes(network(), torch.randn(5, 8)) == 4 * (40 + 80 + 80)
    with torch.device("meta"):
        on_meta = network()
    assert saved_activation_bytes(on_meta, torch.empty(5, 8, device="meta")) == 4 * (40 + 80 + 80)


def test_activation_estimate_grows_linearly_with_batch():
    overrides = dict(embed_dim=24, depths=(2, 2), num_heads=(1, 2))
    sizes = {b: model_info("swin_t", (b, 3, 64, 64), **overrides).activation_bytes for b in (1, 2, 4)}
    per_sample = sizes[2] - sizes[1]
    assert per_sample > 0 and abs((sizes[4] - sizes[2]) - 2 * per_sample) <= 0.01 * per_sample
    stage_maps = sum(4 * torch.Size(p.output_shape).numel()
                     for p in model_info("swin_t", (1, 3, 64, 64), **overrides).parts if p.output_shape)
    assert per_sample > 10 * stage_maps  # every block keeps several intermediates, not just its output


def test_meta_model_allocates_no_weights():
    model = meta_model("swin_l")
    assert all(p.is_meta for p in model.parameters())
    built = swinkit.create_model("swin_t", embed_dim=16, depths=(1, 1), num_heads=(1, 2), num_classes=3)
    twin = meta_model(built)
    assert type(twin) is type(built) and twin.config == built.config and all(p.is_meta for p in twin.parameters())


def test_built_model_matches_its_name_and_counts_frozen_parameters():
    overrides = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), num_classes=3)
    built = swinkit.create_model("swin_t", **overrides)
    built.patch_embed.requires_grad_(False)
    from_model = model_info(built, (1, 3, 64, 64))
    from_name = model_info("swin_t", (1, 3, 64, 64), **overrides)
    assert (from_model.macs, from_model.params, from_model.parts) == (from_name.macs, from_name.params, from_name.parts)
    frozen = sum(p.numel() for p in built.patch_embed.parameters())
    assert from_model.trainable_params == from_model.params - frozen
    x = torch.randn(1, 3, 64, 64)
    assert type(built(x)) is torch.Tensor  # the meta passes left nothing behind in the window caches


def test_part_names():
    assert part_of("swin", "layers.0.blocks.1.attn.qkv") == "stage1"
    assert part_of("swin", "layers.2.downsample.reduction") == "stage4"
    assert part_of("swin", "patch_embed.proj") == "stem"
    assert part_of("swin", "norm") == "head" and part_of("swin", "head.fc") == "head"
    assert part_of("shunted", "patch_embed3.proj") == "stage3" and part_of("shunted", "block2.0.attn") == "stage2"
    assert part_of("shunted", "head") == "head"


def test_bad_shapes_are_clear_errors():
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="positive integers joined by 'x'"):
        parse_shape("1x3x224xfoo")
    with pytest.raises(ValueError, match="positive integers"):
        parse_shape("0x3x224x224")
    with pytest.raises(ValueError, match="BxCxTxHxW"):
        parse_shape("1x3x224x224", num_axes=3)
    with pytest.raises(ValueError, match=r"takes 5-D inputs \(BxCxTxHxW\)"):
        model_info("video_swin_t", (1, 3, 224, 224))
    with pytest.raises(ValueError, match="3 input channels"):
        model_info("swin_t", (1, 4, 224, 224))


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    deploy_cli.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_info(capsys, tmp_path):
    args = _cli(["info", "shunted_t", "--input", "2x3x224x224", "--json"])
    assert args.func(args) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["input_shape"] == [2, 3, 224, 224] and figures["params"] == 11_553_576
    assert abs(figures["macs"] / 2e9 - 2.15) < 0.01  # per image
    args = _cli(["info", "swin_t", "--model-kwargs", "{num_classes: 10}"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "stage4" in text and "(1, 10)" in text and "4.49 G" in text

    checkpoint = tmp_path / "tiny.safetensors"
    swinkit.save_checkpoint(swinkit.create_model("swin_t", embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                                                 num_classes=3), checkpoint)
    args = _cli(["info", str(checkpoint), "--input", "1x3x64x64"])
    assert args.func(args) == 0
    assert "tiny.safetensors (swin), input 1x3x64x64" in capsys.readouterr().out

    with pytest.raises(CLIError, match="neither a checkpoint file nor a registered model"):
        deploy_cli.run_info(_cli(["info", "resnet50"]))
    with pytest.raises(CLIError, match="needs no --weights"):
        deploy_cli.run_info(_cli(["info", "swin_t", "--weights", "w.pth"]))
