"""Multi-view testing against the official outputs, and the classification metrics."""
import json

import pytest
import torch

from swinkit import create_model, load_checkpoint
from swinkit.engine.evaluate import forward_views, predict_scores
from refcases import REFVECTORS
from swinkit.engine.metrics import (MetricAccumulator, average_views, confusion_matrix, mean_class_accuracy,
                                    per_class_accuracy, topk_correct)

# case -> (name of the official averaged output, averaging mode of its test config)
CASES = {"vswin0x_p1": ("multiview.do_test", "prob"), "vswin0x_p2": ("multiview.do_test", "score"),
         "mm1x_p1": ("multiview.average_clip", "prob")}


def load_case(case: str):
    io = torch.load(REFVECTORS / case / "io.pt", map_location="cpu", weights_only=True)
    meta = json.loads((REFVECTORS / case / "meta.json").read_text())
    return io, meta["config"]


def official_model(config: dict):
    backbone, head = config["backbone"], config["cls_head"]
    arch = backbone.get("arch", {})  # mmaction2 1.x spells the variant inside 'arch'
    return create_model("video_swin_t", embed_dim=backbone.get("embed_dim", arch.get("embed_dims")),
                        depths=backbone.get("depths", arch.get("depths")),
                        num_heads=backbone.get("num_heads", arch.get("num_heads")),
                        window_size=backbone["window_size"], patch_size=backbone["patch_size"],
                        num_classes=head["num_classes"], compat="video_swin")


@pytest.mark.parametrize("case", sorted(CASES))
def test_view_averaging_equals_the_official_outputs(case):
    io, config = load_case(case)
    key, mode = CASES[case]
    test_mode = config.get("test_cfg", {}).get("average_clips") or config["cls_head"].get("average_clips")
    assert test_mode == mode
    for outputs, atol in ((io["outputs"], 2e-8), (io["outputs_fp64"], 1e-15)):
        averaged = average_views(outputs["multiview.per_view_logits"], mode)
        assert averaged.shape == outputs[key].shape
        torch.testing.assert_close(averaged, outputs[key], atol=atol, rtol=0)
    other = average_views(io["outputs"]["multiview.per_view_logits"], "score" if mode == "prob" else "prob")
    assert (other - io["outputs"][key]).abs().max() > 1e-2  # the other mode is measurably different


@pytest.mark.parametrize("case", sorted(CASES))
def test_chunked_multiview_forward_end_to_end(case):
    io, config = load_case(case)
    key, mode = CASES[case]
    model = official_model(config)
    load_checkpoint(model, REFVECTORS / case / "checkpoint.pth")
    model.eval()
    views = io["extra_inputs"]["multiview"]  # (1, V, 3, T, H, W)
    with torch.no_grad():
        per_view = {chunk: forward_views(model, views, chunk, spatial_dims=3) for chunk in (1, 2, views.shape[1])}
    reference = io["outputs"]["multiview.per_view_logits"]
    for chunk, logits in per_view.items():
        assert logits.shape == (1,) + reference.shape
        torch.testing.assert_close(logits[0], reference, atol=1e-5, rtol=1e-5)
    scores = predict_scores(model, views, mode, max_views_per_batch=config.get("test_cfg", {}).get(
        "max_testing_views", 2))
    torch.testing.assert_close(scores, io["outputs"][key], atol=1e-5, rtol=1e-5)


def test_forward_views_accepts_single_views_and_rejects_wrong_ranks():
    model = create_model("swin_t", embed_dim=8, depths=(1, 1), num_heads=(1, 1), window_size=4, num_classes=3).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        single = forward_views(model, images, 4, spatial_dims=2)
        stacked = forward_views(model, images.unsqueeze(1).repeat(1, 3, 1, 1, 1), 2, spatial_dims=2)
        direct = model(images)
    assert single.shape == (2, 1, 3) and stacked.shape == (2, 3, 3)
    torch.testing.assert_close(single[:, 0], direct)
    torch.testing.assert_close(stacked, direct.unsqueeze(1).expand(2, 3, 3), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="expected inputs"):
        forward_views(model, torch.randn(3, 32, 32), 4, spatial_dims=2)
    with pytest.raises(ValueError, match="max_views_per_batch"):
        forward_views(model, images, 0, spatial_dims=2)


def test_average_views_shapes_and_errors():
    logits = torch.tensor([[2.0, 0.0], [0.0, 4.0]])  # two views of one sample
    probs = average_views(logits, "prob")
    assert probs.shape == (1, 2) and probs.sum().item() == pytest.approx(1.0)
    assert average_views(logits, "score").tolist() == [[1.0, 2.0]]
    with pytest.raises(ValueError, match="'prob' or 'score'"):
        average_views(logits, "max")
    with pytest.raises(ValueError, match="per-view logits"):
        average_views(torch.zeros(2), "prob")


def test_metrics():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.35, 0.25, 0.4]])
    labels = torch.tensor([1, 1, 2, 2, 0])
    assert topk_correct(scores, labels, 1) == 2 and topk_correct(scores, labels, 2) == 4
    assert topk_correct(scores, labels, 10) == 5  # k is capped at the number of classes
    confusion = confusion_matrix(scores.argmax(1), labels, 3)
    assert confusion.tolist() == [[0, 0, 1], [1, 1, 0], [1, 0, 1]]
    assert per_class_accuracy(confusion).tolist() == [0.0, 0.5, 0.5]
    assert mean_class_accuracy(confusion) == pytest.approx(1 / 3)
    # classes without samples do not count in the mean
    assert mean_class_accuracy(torch.tensor([[2, 0, 0], [0, 0, 0], [1, 0, 1]])) == pytest.approx(0.75)
    meter = MetricAccumulator(3)
    meter.update(scores[:2], labels[:2], loss_sum=1.0)
    meter.update(scores[2:], labels[2:], loss_sum=2.0)
    result = meter.result()
    assert result["top1"] == pytest.approx(2 / 5) and result["top5"] == 1.0 and result["loss"] == pytest.approx(0.6)
    assert torch.equal(meter.confusion, confusion) and result["count"] == 5
