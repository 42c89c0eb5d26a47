"""The Semantic Layering Network on torchvision's detection framework, and the Mask R-CNN baselines.

Both are `GeneralizedRCNN`s built from the same torchvision parts (backbone + FPN, `RegionProposalNetwork`,
`RoIHeads` with `MultiScaleRoIAlign`), so the only difference between the SLN and a baseline is the mask
branch and the global layering module.

Output convention of every model here at inference, per image: ``boxes`` (R, 4, original image frame),
``scores``, ``labels``, and RoI maps at mask resolution (M x M, M = 28): ``masks`` (R, 1, M, M) amodal (or
visible, for the visible baseline) probability; the SLN adds ``semdist`` (R, 1, M, M), ``layer_logits``
(R, K+1, M, M) and ``global_layers`` (K+1, H, W) logits for the whole image. RoI maps are pasted into the
image with `paste_roi_maps`.
"""

from __future__ import annotations

from typing import Any, Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss, paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import roi_align

Targets = list[dict[str, Tensor]]


class RoIMapTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform, except that training images are not resized (the dataset has
    already resized them, so that its sem-dist targets are exact) and inference keeps RoI maps as they are
    (only boxes move to the original frame; the dense ``global_layers`` logits are resized to it)."""

    # Set by a caller around one inference call whose images it has already normalised and resized
    # (`predict.Predictor` does so one colour channel at a time, so a large photo never exists as a float
    # tensor at full size).
    presized = False

    def __init__(self, min_size: int, max_size: int, image_mean: list[float], image_std: list[float]):
        super().__init__(min_size, max_size, image_mean, image_std, _skip_resize=True)

    def normalize(self, image: Tensor) -> Tensor:
        if self.presized and not self.training:
            return image
        return super().normalize(image)

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor] | None]:
        if self.presized and not self.training:
            return image, target
        return super().resize(image, target)

    def postprocess(
        self, result: Targets, image_shapes: list[tuple[int, int]], original_image_sizes: list[tuple[int, int]]
    ) -> Targets:
        if self.training:
            return result
        for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = resize_boxes(pred["boxes"], im_s, o_im_s)
            if "global_layers" in pred and tuple(im_s) != tuple(o_im_s):  # same size: nothing to resize
                pred["global_layers"] = F.interpolate(
                    pred["global_layers"][None], size=tuple(o_im_s), mode="bilinear", align_corners=False
                )[0]
        return result


class GlobalLayeringModule(nn.Module):
    """Dense head on the finest FPN level (stride 4): per-pixel logits of the global layering map G
    (K+1 classes: how many amodal masks cover the pixel, clipped at K)."""

    def __init__(self, in_channels: int, num_levels: int, channels: int = 64, convs: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(convs):
            layers += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(inplace=True)]
            c = channels
        self.body = nn.Sequential(*layers)
        self.logits = nn.Conv2d(c, num_levels, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(cast(Tensor, m.bias))  # every convolution here has a bias
        # Near-zero initial logits (as torchvision's RPN head starts): a uniform first guess, no early blow-up.
        nn.init.normal_(self.logits.weight, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(self.body(x))


class LayeringPredictor(nn.Module):
    """From mask-head features (R, D, 14, 14): the instance layering logits (R, K+1, 28, 28; class 0 =
    outside, 1..K = layer 0..K-1), then the sem-dist map (R, 1, 28, 28) regressed from the upsampled
    features together with the layering probabilities (the paper's cascade: layers, then distances).

    ``num_classes`` > 1 makes the layering logits class-specific, as Mask R-CNN's masks are: one set of K+1
    maps per class (background included), of which each RoI keeps its label's (the ground-truth label in
    training, the predicted one at inference). A class's own maps can carry its shape prior into the hidden
    part; the sem-dist regression stays shared and reads the kept maps."""

    def __init__(
        self,
        in_channels: int,
        K: int,
        semdist_channels: int = 16,
        semdist_kernel: int = 3,
        num_classes: int = 1,
        semdist_resolution: int = 28,
        semdist: bool = True,
    ):
        super().__init__()
        if semdist_kernel not in (1, 3):
            raise ValueError(f"semdist_kernel must be 1 or 3, got {semdist_kernel!r}")
        if semdist_resolution not in (14, 28):
            raise ValueError(f"semdist_resolution must be 14 or 28, got {semdist_resolution!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        self.K, self.num_classes = K, num_classes
        self.upsample = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2)
        self.layer_logits = nn.Conv2d(in_channels, num_classes * (K + 1), 1)
        # A narrow layer: at 28 x 28 per RoI a full-width one would cost more than the whole mask head.
        # The cheaper variants (a 1x1 kernel; the layer at 14 x 14, then a learned 2x upsampling) predict the
        # distances worse, so 3x3 at 28 x 28 is the default (docs/benchmarks.md).
        self.semdist_resolution = semdist_resolution
        upsampling = (
            [nn.ConvTranspose2d(semdist_channels, semdist_channels, 2, stride=2), nn.ReLU(inplace=True)]
            if semdist_resolution == 14
            else []
        )
        # semdist=False (the ablation without a sem-dist head): the layering maps alone.
        self.semdist = (
            nn.Sequential(
                nn.Conv2d(in_channels + K + 1, semdist_channels, semdist_kernel, padding=semdist_kernel // 2),
                nn.ReLU(inplace=True),
                *upsampling,
                nn.Conv2d(semdist_channels, 1, 1),
            )
            if semdist
            else None
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(cast(Tensor, m.bias))  # every convolution here has a bias
        last = [cast(nn.Conv2d, self.semdist[-1])] if self.semdist is not None else []
        for out in (self.layer_logits, *last):
            nn.init.normal_(out.weight, std=0.01)

    # Inference only: False skips the sem-dist layers (``semdist`` is then not in the outputs), for callers
    # that need masks, layers and order but no distance maps, e.g. `semlayer predict` writing files.
    predict_semdist: bool = True

    def forward(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``labels`` (R,): each RoI's class, needed by a class-specific head (ignored otherwise)."""
        # Channels-last: PyTorch's CPU transposed convolution is much faster in that layout
        # (docs/benchmarks.md), and every layer below reads it as it comes.
        # In place: a second RoI-sized tensor per forward costs more in fresh pages than the ReLU.
        coarse = x.contiguous(memory_format=torch.channels_last)
        x = F.relu_(self.upsample(coarse))
        layer_logits = self._layer_logits(x, labels)
        if self.semdist is None or not (self.training or self.predict_semdist):
            return layer_logits, None
        features, probabilities = x, layer_logits.softmax(dim=1)
        if self.semdist_resolution == 14:
            features, probabilities = coarse, F.avg_pool2d(probabilities, 2)
        # The first sem-dist layer applied to the two inputs separately and summed: the same convolution
        # as on their concatenation, without copying the features into one.
        first, rest = cast(nn.Conv2d, self.semdist[0]), self.semdist[1:]
        C = features.shape[1]
        pad = first.padding
        hidden = F.conv2d(features, first.weight[:, :C], first.bias, padding=pad) + F.conv2d(
            probabilities, first.weight[:, C:], padding=pad
        )
        return layer_logits, rest(hidden)

    def _layer_logits(self, x: Tensor, labels: Tensor | None) -> Tensor:
        if self.num_classes == 1:
            return self.layer_logits(x)
        if labels is None or labels.shape != (x.shape[0],):
            raise ValueError("a class-specific layering head needs one label per RoI")
        # Only each RoI's own class's K+1 maps are computed (a batched product with that class's 1x1
        # weights), not all classes' maps then one kept: the same logits at a fraction of the cost.
        R, C, H, W = x.shape
        weight = self.layer_logits.weight.view(self.num_classes, self.K + 1, C)[labels]
        bias = cast(Tensor, self.layer_logits.bias).view(self.num_classes, self.K + 1)[labels]
        pixels = x.permute(0, 2, 3, 1).reshape(R, H * W, C)  # free for a channels-last x
        logits = torch.baddbmm(bias[:, None, :], pixels, weight.transpose(1, 2))
        return logits.view(R, H, W, self.K + 1).permute(0, 3, 1, 2)


def _roi_targets(dense: Tensor, proposals: Tensor, matched_idxs: Tensor, M: int) -> Tensor:
    """RoIAlign of per-instance dense maps (N, C, H, W) over each proposal's matched instance -> (R, C, M, M),
    the way torchvision's ``project_masks_on_boxes`` resamples mask targets."""
    rois = torch.cat([matched_idxs[:, None].to(proposals), proposals], dim=1)
    return roi_align(dense, rois, (M, M), spatial_scale=1.0)


class SLNRoIHeads(RoIHeads):
    """torchvision's `RoIHeads` with the SLN mask branch: mask RoI features concatenated with the RoIAligned
    global-layering probabilities feed the instance layering head and the sem-dist head."""

    def __init__(self, *args: Any, K: int, glm_scale: float, semdist_beta: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.K = K
        self.glm_scale = glm_scale
        self.semdist_beta = semdist_beta

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: Optional[Targets] = None,
        glm_probs: Optional[Tensor] = None,
    ) -> tuple[Targets, dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        result: Targets = []
        losses: dict[str, Tensor] = {}
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            # The mask branch trains on positive proposals only, as in Mask R-CNN.
            positive = [torch.where(lab > 0)[0] for lab in labels]
            mask_proposals = [p[pos] for p, pos in zip(proposals, positive)]
            pos_matched = [m[pos] for m, pos in zip(matched_idxs, positive)]
            mask_labels = torch.cat([lab[pos] for lab, pos in zip(labels, positive)])
        else:
            boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
            result = [{"boxes": b, "labels": lab, "scores": s} for b, lab, s in zip(boxes, labels, scores)]
            mask_proposals = [r["boxes"] for r in result]
            mask_labels = torch.cat(labels)

        roi_features = self.mask_roi_pool(features, mask_proposals, image_shapes)
        parts = [roi_features]
        if glm_probs is not None:  # None: the ablation without a global layering module
            parts.append(
                roi_align(
                    glm_probs,
                    mask_proposals,
                    roi_features.shape[-2:],
                    spatial_scale=self.glm_scale,
                    sampling_ratio=self.mask_roi_pool.sampling_ratio,
                )
            )
        # Channels-last from here on: the mask head's convolutions are faster in it on CPU, and its output
        # goes on to the layering head's channels-last upsampling without a copy.
        head_input = torch.cat(parts, dim=1).contiguous(memory_format=torch.channels_last)
        layer_logits, semdist = self.mask_predictor(self.mask_head(head_input), mask_labels)

        if self.training:
            assert targets is not None  # refused above
            losses.update(self.layering_losses(layer_logits, semdist, mask_proposals, pos_matched, targets))
        else:
            masks = 1.0 - layer_logits.softmax(dim=1)[:, :1]  # amodal = any layer but "outside"
            counts = [len(b) for b in mask_proposals]
            semdists = semdist.split(counts) if semdist is not None else [None] * len(counts)
            for r, lg, sd, mk in zip(result, layer_logits.split(counts), semdists, masks.split(counts)):
                r["layer_logits"] = lg
                r["masks"] = mk
                if sd is not None:
                    r["semdist"] = sd
        return result, losses

    def layering_losses(
        self,
        layer_logits: Tensor,
        semdist: Tensor | None,
        proposals: list[Tensor],
        matched: list[Tensor],
        targets: Targets,
    ) -> dict[str, Tensor]:
        """Cross-entropy of the layer logits and smooth L1 of the sem-dist maps against RoI-resampled targets.

        Layer targets are resampled as one-hot maps and arg-maxed (a majority vote per cell), so a RoI cell
        never gets a layer that no pixel under it has."""
        M = layer_logits.shape[-1]
        layer_t, dist_t = [], []
        for t, props, idx in zip(targets, proposals, matched):
            if props.numel() == 0:
                continue
            one_hot = F.one_hot(t["layers"].long() + 1, self.K + 1).permute(0, 3, 1, 2).float()
            layer_t.append(_roi_targets(one_hot, props, idx, M).argmax(dim=1))
            dist_t.append(_roi_targets(t["semdist"][:, None].float(), props, idx, M)[:, 0])
        if not layer_t:
            # No positive RoI in the batch: zero losses that still touch every head parameter (DDP needs it).
            zero = layer_logits.sum() * 0 + (0 if semdist is None else semdist.sum() * 0)
            return {"loss_layers": zero, **({} if semdist is None else {"loss_semdist": zero})}
        losses = {"loss_layers": F.cross_entropy(layer_logits, torch.cat(layer_t))}
        if semdist is not None:
            losses["loss_semdist"] = F.smooth_l1_loss(semdist[:, 0], torch.cat(dist_t), beta=self.semdist_beta)
        return losses


class SemanticLayeringNetwork(GeneralizedRCNN):
    """SLN: Mask R-CNN whose mask branch predicts instance layering and sem-dist maps, guided by a global
    layering module (GLM) on the finest FPN level."""

    def __init__(
        self,
        backbone: nn.Module,
        rpn: nn.Module,
        roi_heads: SLNRoIHeads,
        transform: RoIMapTransform,
        glm: GlobalLayeringModule | None,
        K: int,
        glm_feature: str = "0",
    ):
        super().__init__(backbone, rpn, roi_heads, transform)
        self.glm = glm
        self.K = K
        self.glm_feature = glm_feature

    def forward(
        self, images: list[Tensor], targets: Optional[Targets] = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        # No GLM (the ablation): the mask branch sees the RoI features alone, and there is no global map.
        glm_logits = None if self.glm is None else self.glm(features[self.glm_feature])
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(
            features,
            proposals,
            image_list.image_sizes,
            targets,
            glm_probs=None if glm_logits is None else glm_logits.softmax(dim=1),
        )
        padded = image_list.tensors.shape[-2:]
        dense = (
            None if glm_logits is None else F.interpolate(glm_logits, size=padded, mode="bilinear", align_corners=False)
        )
        if self.training:
            losses = {**proposal_losses, **detector_losses}
            if dense is not None:
                losses["loss_global_layers"] = self.global_layers_loss(dense, targets)
            return losses
        if dense is not None:
            for det, (h, w), logits in zip(detections, image_list.image_sizes, dense):
                det["global_layers"] = logits[:, :h, :w]
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    @staticmethod
    def global_layers_loss(dense_logits: Tensor, targets: Targets) -> Tensor:
        """Per-pixel cross-entropy against G; the batch padding is ignored."""
        ignore = 255
        gt = torch.full(
            (dense_logits.shape[0], *dense_logits.shape[-2:]), ignore, dtype=torch.long, device=dense_logits.device
        )
        for i, t in enumerate(targets):
            g = t["global_layers"]
            gt[i, : g.shape[0], : g.shape[1]] = g.long()
        return F.cross_entropy(dense_logits, gt, ignore_index=ignore)


class MaskRCNNBaseline(GeneralizedRCNN):
    """Plain torchvision Mask R-CNN trained on amodal (``target='amodal'``) or visible masks.

    For visible training, boxes become the visible boxes and fully hidden instances are dropped (they have
    no visible extent to detect)."""

    def __init__(
        self,
        backbone: nn.Module,
        rpn: nn.Module,
        roi_heads: RoIHeads,
        transform: RoIMapTransform,
        target: str = "amodal",
    ):
        super().__init__(backbone, rpn, roi_heads, transform)
        if target not in ("amodal", "visible"):
            raise ValueError(f"target must be 'amodal' or 'visible', got {target!r}")
        self.target = target

    def forward(
        self, images: list[Tensor], targets: Optional[Targets] = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if targets is not None and self.target == "visible":
            targets = [_visible_targets(t) for t in targets]
        return super().forward(images, targets)


def _visible_targets(t: dict[str, Tensor]) -> dict[str, Tensor]:
    keep = t["visible_masks"].flatten(1).amax(dim=1) > 0
    return {"boxes": t["visible_boxes"][keep], "labels": t["labels"][keep], "masks": t["visible_masks"][keep]}


def paste_roi_maps(maps: Tensor, boxes: Tensor, height: int, width: int) -> Tensor:
    """Paste RoI maps (R, C, M, M) into an image of ``height`` x ``width`` -> (R, C, H, W), bilinearly,
    with torchvision's ``paste_masks_in_image`` (one channel at a time). Values outside each box are 0."""
    R, C = maps.shape[:2]
    if R == 0:
        return maps.new_zeros((0, C, height, width))
    flat = maps.reshape(R * C, 1, *maps.shape[-2:])
    pasted = paste_masks_in_image(flat, boxes.repeat_interleave(C, dim=0), (height, width))
    return pasted.reshape(R, C, height, width)
