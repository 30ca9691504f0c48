"""Conversions between VGGT's pose encoding and camera matrices (docs/model.md, section 9).

The encoding is ``(t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w)``: an OpenCV camera-from-world translation,
a scalar-last quaternion of the rotation and the vertical/horizontal fields of view in radians. Intrinsics put
the principal point at the image centre ``(W / 2, H / 2)``.
"""

from __future__ import annotations

import torch


def quaternion_to_rotation(quaternion: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` of scalar-last quaternions ``[..., 4]``, normalised on the fly."""
    x, y, z, w = quaternion.unbind(-1)
    s = 2.0 / (quaternion * quaternion).sum(-1)
    rotation = torch.stack(
        [
            1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
            s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
            s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip
    return rotation.unflatten(-1, (3, 3))


def rotation_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """Scalar-last unit quaternions ``[..., 4]`` with ``q_w >= 0`` of rotation matrices ``[..., 3, 3]``.

    Of the four algebraically equivalent formulas, each matrix uses the one whose pivot component (w, x, y or z)
    is largest, which keeps the division well conditioned.
    """
    m = rotation
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * component^2 for w, x, y, z.
    squares = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    pivot = squares.argmax(-1, keepdim=True)
    pivot_value = squares.gather(-1, pivot).clamp_min(1e-12).sqrt()  # 2 * |pivot component|
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s10, s02, s21 = m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2]
    # Row p: (w, x, y, z) times 4 * pivot component, when component p is the pivot.
    candidates = torch.stack(
        [
            torch.stack([squares[..., 0], d21, d02, d10], dim=-1),
            torch.stack([d21, squares[..., 1], s10, s02], dim=-1),
            torch.stack([d02, s10, squares[..., 2], s21], dim=-1),
            torch.stack([d10, s02, s21, squares[..., 3]], dim=-1),
        ],
        dim=-2,
    )  # [..., 4, 4]
    chosen = candidates.gather(-2, pivot[..., None].expand(*pivot.shape, 4)).squeeze(-2)
    wxyz = chosen / (2 * pivot_value)
    wxyz = torch.where(wxyz[..., :1] < 0, -wxyz, wxyz)
    return torch.cat([wxyz[..., 1:], wxyz[..., :1]], dim=-1)


def pose_encoding_to_extri_intri(
    pose_enc: torch.Tensor, image_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera matrices of pose encodings ``[..., 9]`` for images of size ``image_hw = (H, W)``.

    Returns:
        extrinsic ``[..., 3, 4]``: camera-from-world ``[R | t]`` (OpenCV axes).
        intrinsic ``[..., 3, 3]``: ``fx = (W/2) / tan(fov_w/2)``, ``fy = (H/2) / tan(fov_h/2)``, centre (W/2, H/2).
    """
    height, width = image_hw
    translation, quaternion = pose_enc[..., :3], pose_enc[..., 3:7]
    fov_h, fov_w = pose_enc[..., 7], pose_enc[..., 8]
    extrinsic = torch.cat([quaternion_to_rotation(quaternion), translation[..., None]], dim=-1)

    intrinsic = pose_enc.new_zeros(*pose_enc.shape[:-1], 3, 3)
    intrinsic[..., 0, 0] = (width / 2) / torch.tan(fov_w / 2)
    intrinsic[..., 1, 1] = (height / 2) / torch.tan(fov_h / 2)
    intrinsic[..., 0, 2] = width / 2
    intrinsic[..., 1, 2] = height / 2
    intrinsic[..., 2, 2] = 1.0
    return extrinsic, intrinsic


def extri_intri_to_pose_encoding(
    extrinsic: torch.Tensor, intrinsic: torch.Tensor, image_hw: tuple[int, int]
) -> torch.Tensor:
    """Pose encodings ``[..., 9]`` of camera-from-world ``[..., 3, 4]`` and intrinsics ``[..., 3, 3]``.

    The principal point is not encoded (the encoding assumes the image centre).
    """
    height, width = image_hw
    fov_h = 2 * torch.atan((height / 2) / intrinsic[..., 1, 1])
    fov_w = 2 * torch.atan((width / 2) / intrinsic[..., 0, 0])
    quaternion = rotation_to_quaternion(extrinsic[..., :3, :3])
    return torch.cat([extrinsic[..., :3, 3], quaternion, fov_h[..., None], fov_w[..., None]], dim=-1)
