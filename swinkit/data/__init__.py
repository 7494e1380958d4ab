"""Data pipeline: video decoding, frame sampling, transforms, datasets, collate, synthetic data.

Typical use::

    from swinkit.data import build_dataset, collate
    train = build_dataset("data/", split="train", clip_len=16, size=112)
    loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True, collate_fn=collate)
"""
from swinkit.data.datasets import (IMAGE_EXTENSIONS, ImageDataset, ImageOptions, MediaDataset, VideoDataset,
                                   VideoOptions, build_dataset, check_samples, collate, find_samples, infer_kind,
                                   make_loader, read_classes_file, read_list_file, scan_class_folders, worker_context)
from swinkit.data.sampling import FrameSampler, sample_frames, uniform_sample
from swinkit.data.synthetic import (DEFAULT_MOTION_CLASSES, MOTION_CLASSES, SHAPE_CLASSES, make_dataset,
                                    make_image_dataset)
from swinkit.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, CenterCrop, Compose, Flip, ImageCenterCrop,
                                     ImageRandomResizedCrop, ImageResizeShortSide, Normalize, PILToTensor,
                                     RandomResizedCrop, ResizeShortSide, SplitViews, ThreeCrop, ToChannelsFirst,
                                     image_eval_transform, image_train_transform, random_resized_crop_box,
                                     video_eval_transform, video_multiview_transform, video_train_transform)
from swinkit.data.video import (VIDEO_EXTENSIONS, DecodeTimeout, VideoReader, count_packets, read_frames,
                                write_video)

__all__ = [
    "IMAGE_EXTENSIONS", "ImageDataset", "ImageOptions", "MediaDataset", "VideoDataset", "VideoOptions",
    "build_dataset", "check_samples", "collate", "find_samples", "infer_kind", "read_classes_file",
    "read_list_file", "scan_class_folders", "worker_context", "make_loader",
    "FrameSampler", "sample_frames", "uniform_sample",
    "DEFAULT_MOTION_CLASSES", "MOTION_CLASSES", "SHAPE_CLASSES", "make_dataset", "make_image_dataset",
    "IMAGENET_MEAN", "IMAGENET_STD", "CenterCrop", "Compose", "Flip", "ImageCenterCrop", "ImageRandomResizedCrop",
    "ImageResizeShortSide", "Normalize", "PILToTensor", "RandomResizedCrop", "ResizeShortSide", "SplitViews",
    "ThreeCrop", "ToChannelsFirst", "image_eval_transform", "image_train_transform", "random_resized_crop_box",
    "video_eval_transform", "video_multiview_transform", "video_train_transform",
    "VIDEO_EXTENSIONS", "DecodeTimeout", "VideoReader", "count_packets", "read_frames", "write_video",
]
