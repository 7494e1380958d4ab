"""Soft targets: label smoothing, mixup and cutmix for images and videos."""
import pytest
import torch
import torch.nn.functional as F

from swinkit.engine.mixup import Mixup, cutmix_box, smooth_one_hot, soft_target_cross_entropy


def test_smooth_one_hot_values_and_loss_match_torch_label_smoothing():
    labels = torch.tensor([0, 2, 1])
    targets = smooth_one_hot(labels, 4, smoothing=0.1)
    assert targets[0].tolist() == pytest.approx([0.925, 0.025, 0.025, 0.025])
    assert targets.sum(1).tolist() == pytest.approx([1.0] * 3)
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert soft_target_cross_entropy(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("shape", [(6, 3, 16, 16), (6, 3, 4, 16, 16)], ids=["image", "video"])
@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixed_batch_shapes_and_target_sums(shape, mode):
    torch.manual_seed(1)
    mixer = Mixup(5, mixup_alpha=0.8 if mode == "mixup" else 0.0, cutmix_alpha=1.0 if mode == "cutmix" else 0.0,
                  label_smoothing=0.1)
    x = torch.randn(shape)
    labels = torch.tensor([0, 1, 2, 3, 4, 4])
    mixed, targets = mixer(x, labels)
    assert mixed.shape == x.shape and targets.shape == (6, 5)
    assert targets.sum(1).tolist() == pytest.approx([1.0] * 6)
    assert not torch.equal(mixed, x)
    # each row mixes its own label with the mirrored sample's label (x.flip(0))
    lam = (targets[0, 0] - 0.02) / 0.9  # smoothing 0.1 over 5 classes: on 0.92, off 0.02
    assert targets[0, 4].item() == pytest.approx(0.02 + 0.9 * (1 - lam.item()), abs=1e-6)
    if mode == "mixup":
        assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-5)
    else:
        # the same box is pasted from the mirrored sample into every frame; lam is its exact area
        pasted = (mixed != x).any(dim=tuple(range(x.ndim - 2)))
        assert pasted.float().mean().item() == pytest.approx(1 - lam.item(), abs=1e-6)
        replaced = mixed[..., pasted]
        assert torch.equal(replaced, x.flip(0)[..., pasted])


def test_without_alphas_targets_are_smoothed_labels_and_inputs_untouched():
    mixer = Mixup(3, label_smoothing=0.0)
    x = torch.randn(2, 3, 8, 8)
    mixed, targets = mixer(x, torch.tensor([2, 0]))
    assert mixed is x and targets.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert not mixer.enabled


def test_cutmix_box_is_clipped_to_the_frame():
    assert cutmix_box(10, 10, lam=0.75, center=(0.5, 0.5)) == (3, 7, 3, 7)  # 5x5 box, cut 25 % of the area
    y0, y1, x0, x1 = cutmix_box(10, 20, lam=0.0, center=(0.99, 0.0))
    assert (y0, y1, x0, x1) == (4, 10, 0, 10)


def test_mix_probability_zero_never_mixes():
    mixer = Mixup(4, mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0)
    x = torch.randn(4, 3, 8, 8)
    assert mixer(x, torch.arange(4))[0] is x
