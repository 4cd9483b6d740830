"""CodeFormer with facexlib: RetinaFace detection, 5-point alignment to 512, ParseNet paste-back.

The detection and parsing networks are loaded once. facexlib's FaceRestoreHelper also keeps the
per-image state (faces, affine matrices), so each request works on its own shallow copy whose
lists are fresh: concurrent requests never share an image's state.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import cv2
import numpy as np
import torch
import torchvision.models
from facexlib.utils.face_restoration_helper import FaceRestoreHelper

from . import cancel, progress
from .base import EnhanceModel
from .limits import DEFAULT_MAX_FACES
from .v2codec import Param

FACE_SIZE = 512
DETECT_SHORT_SIDE = 640  # the authors detect on a copy resized to this short side
EYE_DISTANCE_MIN = 5


class FaceRestoreModel(EnhanceModel):
    task = "face-restore"
    params = {
        "fidelity": Param(float, 0.5, 0.0, 1.0),
        "upscale": Param(int, 2, 1, 4),
        "only_center_face": Param(bool, False),
        "has_aligned": Param(bool, False),
    }

    def __init__(self, *args, max_faces: int = DEFAULT_MAX_FACES, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_faces = max_faces

    def answer_size(self, height: int, width: int, params: dict) -> tuple[int, int]:
        if params["has_aligned"]:  # one aligned face: resized to 512, then upscaled
            return (FACE_SIZE * params["upscale"],) * 2
        return height * params["upscale"], width * params["upscale"]

    def prepare(self) -> None:
        # model_rootpath points facexlib at our folder: it loads the files there, never downloads.
        with _resnet50_by_weights():
            self._helper = FaceRestoreHelper(
                upscale_factor=1,
                face_size=FACE_SIZE,
                crop_ratio=(1, 1),
                det_model="retinaface_resnet50",
                save_ext="png",
                use_parse=True,
                device=self.device,
                model_rootpath=str(self.model_dir),
            )

    def _request_helper(self, upscale: int) -> FaceRestoreHelper:
        helper = copy.copy(self._helper)  # shares the networks, not the per-image lists
        helper.clean_all()
        helper.all_landmarks_5 = []
        helper.upscale_factor = upscale
        return helper

    def _restore_face(self, face_bgr: np.ndarray, fidelity: float) -> np.ndarray:
        tensor = torch.from_numpy(face_bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None]
        tensor = tensor.to(self.device, torch.float32).div(255).sub(0.5).div(0.5)
        # CodeFormer blends by `fidelity`; GFPGAN has no such knob. Both answer (image, ...).
        codeformer = self.loaded.detected.family == "CodeFormer"
        with self.half_precision():
            out = self.net(tensor, weight=fidelity) if codeformer else self.net(tensor)
            out = out[0].float().clamp(-1, 1)
        out = ((out + 1) / 2 * 255).round().byte()[0].permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(out[:, :, ::-1])

    def _find_faces(self, helper: FaceRestoreHelper, only_center_face: bool) -> None:
        """RetinaFace: the boxes and 5-point landmarks of the faces in the helper's image."""
        helper.get_face_landmarks_5(
            only_center_face=only_center_face,
            resize=DETECT_SHORT_SIDE,
            eye_dist_threshold=EYE_DISTANCE_MIN,
        )

    def enhance(self, rgb: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        upscale, fidelity = params["upscale"], params["fidelity"]
        if params["has_aligned"]:
            face = cv2.resize(bgr, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
            progress.report(0, 1, "face")
            out = self._restore_face(face, fidelity)
            progress.report(1, 1, "face")
            if upscale > 1:
                side = FACE_SIZE * upscale
                out = cv2.resize(out, (side, side), interpolation=cv2.INTER_LANCZOS4)
            return np.ascontiguousarray(out[:, :, ::-1]), {"faces": 1, "faces_found": 1}

        helper = self._request_helper(upscale)
        helper.read_image(bgr)
        self._find_faces(helper, params["only_center_face"])
        found = keep_largest_faces(helper, self.max_faces)
        helper.align_warp_face()
        faces = len(helper.cropped_faces)
        progress.report(0, faces, "face")
        for index, face in enumerate(helper.cropped_faces):
            cancel.check()
            helper.add_restored_face(self._restore_face(face, fidelity))
            progress.report(index + 1, faces, "face")
        helper.get_inverse_affine(None)
        out = helper.paste_faces_to_input_image()
        restored = len(helper.restored_faces)
        return np.ascontiguousarray(out[:, :, ::-1]), {"faces": restored, "faces_found": found}


def keep_largest_faces(helper: FaceRestoreHelper, limit: int) -> int:
    """Keep the `limit` largest detected faces (by box area); returns how many were found."""
    found = len(helper.det_faces)
    if found > limit:
        area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
        keep = sorted(range(found), key=lambda i: area(helper.det_faces[i]), reverse=True)[:limit]
        helper.det_faces = [helper.det_faces[i] for i in keep]
        helper.all_landmarks_5 = [helper.all_landmarks_5[i] for i in keep]
    return found


@contextlib.contextmanager
def _resnet50_by_weights() -> Iterator[None]:
    """facexlib 0.3's RetinaFace builds its backbone with `resnet50(pretrained=False)`, the
    interface torchvision deprecated in 0.13 (two UserWarnings each time the model loaded). While
    the helper is built, that call is made as what it means today, `resnet50(weights=None)`: an
    untrained backbone, over which facexlib then loads the detector's own file."""
    original = torchvision.models.resnet50

    def resnet50(*, pretrained: bool = False, **kwargs):
        if pretrained:  # torchvision would download ImageNet weights: never wanted here
            raise ValueError("facexlib asked for torchvision's pretrained ResNet-50")
        return original(weights=None, **kwargs)

    torchvision.models.resnet50 = resnet50
    try:
        yield
    finally:
        torchvision.models.resnet50 = original
