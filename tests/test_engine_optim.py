"""AdamW parameter groups, the warmup + cosine schedule, learning-rate scaling and presets."""
import math

import pytest
import torch

from swinkit import create_model
from swinkit.engine.config import PRESETS, TrainConfig, coerce, merge, preset
from swinkit.engine import optim
from swinkit.engine.optim import WarmupCosineSchedule, adamw, build_optimizer, param_groups, warmup_cosine_lr
from swinkit.engine.trainer import scaled_learning_rates


def tiny_video_swin():
    return create_model("video_swin_t", embed_dim=8, depths=(1, 1), num_heads=(1, 1), window_size=(2, 2, 2),
                        num_classes=3)


def tiny_shunted():
    return create_model("shunted_t", embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2),
                        num_classes=3)


def group_of(groups, name):
    for group in groups:
        if name in group["param_names"]:
            return group
    raise AssertionError(f"{name} in no group")


def test_groups_no_decay_for_norms_biases_tables_and_1d():
    model = tiny_video_swin()
    groups = param_groups(model, weight_decay=0.05, backbone_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay"]
    names = dict(model.named_parameters())
    for name, param in names.items():
        group = group_of(groups, name)
        no_decay = (param.ndim <= 1 or name.endswith(".bias") or "relative_position_bias_table" in name
                    or ".norm" in name or name.startswith("norm"))
        assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
        assert group["lr_mult"] == (1.0 if name.startswith("head.") else 0.1), name
    table = "layers.0.blocks.0.attn.relative_position_bias_table"
    assert names[table].ndim == 2 and group_of(groups, table)["weight_decay"] == 0.0
    assert group_of(groups, "layers.0.blocks.0.attn.qkv.weight")["weight_decay"] == 0.05
    assert group_of(groups, "head.fc.weight")["name"] == "head_decay"
    # every trainable parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(names)


def test_groups_cover_shunted_batchnorm_and_frozen_params_are_left_out():
    model = tiny_shunted()
    bn_weight = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)) + ".weight"
    model.head.weight.requires_grad_(False)
    groups = param_groups(model, weight_decay=0.05)
    assert group_of(groups, bn_weight)["weight_decay"] == 0.0
    assert all("head.weight" not in g["param_names"] for g in groups)


def test_optimizer_lrs_follow_group_multipliers():
    model = tiny_video_swin()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.02, backbone_lr_mult=0.1)
    schedule = WarmupCosineSchedule(optimizer, total_steps=10, warmup_steps=2, base_lr=1e-3, warmup_lr=1e-4,
                                    min_lr=0.0)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["head_decay"] == pytest.approx(1e-4) and lrs["backbone_decay"] == pytest.approx(1e-5)
    schedule.step()
    schedule.step()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["head_no_decay"] == pytest.approx(1e-3) and lrs["backbone_no_decay"] == pytest.approx(1e-4)
    assert schedule.state_dict() == {"step_count": 2}


def test_optimizer_is_fused_where_pytorch_has_the_kernel_and_updates_like_the_loop():
    torch.manual_seed(0)
    model, reference = tiny_video_swin(), tiny_video_swin()
    reference.load_state_dict(model.state_dict())
    before = model.patch_embed.proj.weight.detach().clone()
    fused = build_optimizer(model, lr=1e-2, weight_decay=0.05)
    assert fused.defaults["fused"]  # CPU fused AdamW: PyTorch >= 2.4
    loop = torch.optim.AdamW(param_groups(reference, 0.05), lr=1e-2, weight_decay=0.05, foreach=False)
    for group in loop.param_groups:
        group["lr"] = 1e-2 * group["lr_mult"]
    for _ in range(3):  # the same gradients for both: only the update arithmetic may differ
        for p, q in zip(model.parameters(), reference.parameters()):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        loop.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
    assert (model.patch_embed.proj.weight != before).all()  # every weight moved


def test_adamw_falls_back_when_there_is_no_fused_kernel(monkeypatch):
    made = []

    class NoFused(torch.optim.AdamW):
        def __init__(self, params, **options):
            made.append(options)
            if options.get("fused"):
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                                   "supported devices")
            super().__init__(params, **options)

    monkeypatch.setattr(optim.torch.optim, "AdamW", NoFused)
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = adamw(params, lr=0.1)
    assert isinstance(opt, NoFused) and not opt.defaults.get("fused") and len(made) == 2


def test_schedule_values():
    args = dict(total_steps=110, warmup_steps=10, base_lr=1.0, warmup_lr=0.1, min_lr=0.01)
    assert warmup_cosine_lr(0, **args) == pytest.approx(0.1)
    assert warmup_cosine_lr(5, **args) == pytest.approx(0.55)
    assert warmup_cosine_lr(10, **args) == pytest.approx(1.0)
    assert warmup_cosine_lr(60, **args) == pytest.approx(0.01 + 0.99 * 0.5)
    assert warmup_cosine_lr(35, **args) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert warmup_cosine_lr(110, **args) == pytest.approx(0.01)
    values = [warmup_cosine_lr(s, **args) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone after warmup
    assert warmup_cosine_lr(0, 10, 0, 1.0, 0.1, 0.0) == pytest.approx(1.0)  # no warmup


def test_linear_scaling_rule():
    cfg = TrainConfig(lr=5e-4, warmup_lr=5e-7, min_lr=5e-6, lr_reference_batch=512)
    assert scaled_learning_rates(cfg, 1024) == pytest.approx((1e-3, 1e-6, 1e-5))
    cfg = merge(cfg, {"scale_warmup_min_lr": False})
    assert scaled_learning_rates(cfg, 1024) == pytest.approx((1e-3, 5e-7, 5e-6))
    assert scaled_learning_rates(TrainConfig(lr=1e-3), 4096)[0] == 1e-3


def test_presets_hold_the_official_recipes():
    assert set(PRESETS) == {"video_swin_k400_t", "swin_imagenet_t", "shunted_imagenet_t"}
    vs = preset("video_swin_k400_t")
    assert (vs.lr, vs.weight_decay, vs.backbone_lr_mult, vs.warmup_epochs, vs.epochs) == (1e-3, 0.02, 0.1, 2.5, 30)
    assert vs.batch_size * vs.accum_steps * 8 == 64 and vs.average_views == "prob"
    assert vs.data_options["test_clips"] * vs.data_options["test_crops"] == 12
    ms = preset("swin_imagenet_t")
    assert (ms.clip_grad, ms.mixup, ms.cutmix, ms.label_smoothing, ms.lr_reference_batch) == (5.0, 0.8, 1.0, 0.1, 512)
    sh = preset("shunted_imagenet_t")
    assert (sh.warmup_epochs, sh.min_lr, sh.scale_warmup_min_lr) == (5, 1e-5, False)
    vs.data_options["clip_len"] = 8  # a copy: the preset itself is untouched
    assert PRESETS["video_swin_k400_t"].data_options["clip_len"] == 32
    with pytest.raises(ValueError, match="unknown preset"):
        preset("swin_huge")


@pytest.mark.parametrize("name, value, expected", [
    ("batch_size", "16", 16), ("lr", "3e-4", 3e-4), ("clip_grad", "none", None), ("progress", "false", False),
    ("betas", "[0.9, 0.95]", (0.9, 0.95)), ("model_kwargs", "{embed_dim: 32}", {"embed_dim": 32}),
])
def test_coerce_command_line_values(name, value, expected):
    assert coerce(name, value) == expected


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"batch_size": "two"}, "batch_size expects an integer"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"label_smoothing": 1.5}, "label_smoothing must be in"),
    ({"eval_ema": True}, "eval_ema needs ema_decay"),
    ({"model_kwargs": "[1, 2]"}, "model_kwargs expects a YAML mapping"),
    ({"no_such_option": 1}, "unknown training option 'no_such_option'"),
])
def test_bad_values_name_the_option(overrides, message):
    with pytest.raises(ValueError, match=message):
        merge(TrainConfig(), overrides)
