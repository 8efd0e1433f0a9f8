"""Named training presets: the official runs (spec §5.5), and fine-tuning a released model.

Every preset is a set of :class:`~clip_ebc.train.trainer.TrainConfig` overrides; anything can be
overridden again on the command line. The official runs train for 2600 epochs with a 50-epoch warm-up
and cosine restarts, DM-Count as the count loss, and evaluate every epoch from epoch 50.
"""

from __future__ import annotations

from typing import Any

_RN50 = dict(backbone="RN50", init="openai", input_size=448, reduction=8, truncation=4, granularity="fine",
             anchor_points="average", prompt_type="word", count_loss="dmcount", batch_size=8)
_VIT = dict(backbone="ViT-B-16", init="openai", input_size=224, reduction=8, truncation=4, granularity="fine",
            anchor_points="average", prompt_type="word", count_loss="dmcount", batch_size=16, amp=True, num_crops=2,
            sliding_window=True, window=224, stride=224, warmup_lr=1e-3, num_vpt=32, deep_vpt=True)

PRESETS: dict[str, dict[str, Any]] = {
    "rn50.sha": {**_RN50, "dataset": "sha"},
    "rn50.shb": {**_RN50, "dataset": "shb"},
    "rn50.qnrf": {**_RN50, "dataset": "qnrf"},
    "rn50.nwpu": {**_RN50, "dataset": "nwpu"},
    "vit_b16.nwpu": {**_VIT, "dataset": "nwpu"},
    "vit_b16.sha": {**_VIT, "dataset": "sha"},
    "vit_b16.qnrf": {**_VIT, "dataset": "qnrf"},
    # Fine-tune a released model on your own images: a short schedule with a small learning rate, a
    # two-epoch warm-up instead of fifty, and evaluation from the first epoch.
    "finetune": dict(init="vit_b16.nwpu", input_size=224, dataset=None, count_loss="dmcount", batch_size=8,
                     lr=2e-5, warmup_epochs=2, warmup_lr=1e-6, total_epochs=60, eval_start=1, save_freq=5, T_0=10),
}

DESCRIPTIONS = {
    "rn50.sha": "CLIP ResNet-50, ShanghaiTech A (official run clip_resnet50_word_448_8_4_fine_1.0_dmcount_aug)",
    "rn50.shb": "CLIP ResNet-50, ShanghaiTech B",
    "rn50.qnrf": "CLIP ResNet-50, UCF-QNRF",
    "rn50.nwpu": "CLIP ResNet-50, NWPU-Crowd",
    "vit_b16.nwpu": "CLIP ViT-B/16 with deep VPT, NWPU-Crowd (official run clip_vit_b_16_word_224_8_4_fine_1.0_dmcount)",
    "vit_b16.sha": "CLIP ViT-B/16 with deep VPT, ShanghaiTech A",
    "vit_b16.qnrf": "CLIP ViT-B/16 with deep VPT, UCF-QNRF (the ViT command of the official README)",
    "finetune": "fine-tune a released model (default vit_b16.nwpu; set --init) on your own prepared data",
}
