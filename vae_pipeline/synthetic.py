"""Synthetic textured scenes with exact ground truth, rendered by NumPy ray casting.

A closed room (floor, four walls, ceiling) holds a few boxes, spheres and a slanted panel. Every surface carries a
procedural colour texture with corners and blobs at several scales, looked up by surface (u, v) coordinates, and a
fixed directional light shades it (Lambertian), so a 3D point has the same colour from every view. The room
encloses the cameras, so every pixel sees a surface and the depth is finite and positive everywhere.

Conventions (the same as the rest of the package):
- Cameras are camera-from-world ``[R | t]`` with OpenCV axes (x right, y down, z forward).
- Intrinsics in memory use OpenCV pixel centres: the centre of pixel (0, 0) is at (0, 0), so the principal point
  of a centred camera is ``((W - 1) / 2, (H - 1) / 2)``. The files in ``gt/`` use COLMAP's convention, in which
  the centre of the first pixel is (0.5, 0.5): ``cx_file = cx + 0.5``, i.e. ``(W / 2, H / 2)``.
- Depth is the z-depth along the optical axis, computed from one ray through each pixel centre. Colour averages
  ``supersample x supersample`` rays placed symmetrically around the same centre.

The world frame has z up; the floor is the plane z = 0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .evaluation.ground_truth import GroundTruthError, read_pose_files

TEXTURE_SIZE = 256
ROOM_HALF_EXTENT = np.array([8.0, 8.0, 3.0])
ROOM_CENTRE = np.array([0.0, 0.0, 3.0])
SCENE_TARGET = np.array([0.0, 0.0, 0.7])
LIGHT_DIRECTION = np.array([0.45, -0.35, 0.82]) / np.linalg.norm([0.45, -0.35, 0.82])
AMBIENT = 0.55
TRAJECTORIES = ("arc", "forward")

POSES_HEADER = (
    "# image_name qw qx qy qz tx ty tz  (COLMAP convention: world-to-camera, x_cam = R x_world + t, "
    "OpenCV camera axes)\n"
)
INTRINSICS_HEADER = (
    "# width height fx fy cx cy  (pinhole, pixels, COLMAP pixel-centre convention: the centre of the first pixel "
    "is (0.5, 0.5), cx = OpenCV cx + 0.5)\n"
)


@dataclass
class SyntheticScene:
    """Rendered frames of a synthetic scene with their exact cameras and depth.

    images: uint8 [S, H, W, 3] RGB.
    depth: float32 [S, H, W] z-depth along the optical axis at each pixel centre, > 0 everywhere.
    extrinsic: float64 [S, 3, 4] camera-from-world [R | t], OpenCV axes.
    intrinsic: float64 [S, 3, 3] pinhole, OpenCV pixel convention (centre of pixel (0, 0) at (0, 0)).
    """

    images: np.ndarray
    depth: np.ndarray
    extrinsic: np.ndarray
    intrinsic: np.ndarray

    def world_points(self) -> np.ndarray:
        """World coordinates of every pixel centre, float64 [S, H, W, 3]: the exact inverse of the render."""
        num_frames, height, width = self.depth.shape
        points = np.empty((num_frames, height, width, 3))
        for index in range(num_frames):
            camera_rays = _pixel_centre_rays(self.intrinsic[index], width, height)
            camera_points = camera_rays * self.depth[index].astype(np.float64)[..., None]
            rotation, translation = self.extrinsic[index, :, :3], self.extrinsic[index, :, 3]
            points[index] = _rows_times(camera_points - translation, rotation)
        return points


def _rows_times(vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``vectors @ matrix`` for many short rows: vectors [..., 3], matrix [3, k] or [3] -> [..., k] or [...].

    einsum's own loops instead of BLAS: OpenBLAS spreads these tall, thin products over threads and becomes ten
    times slower than a plain loop when the CPU cores are shared with other processes.
    """
    subscripts = "...i,i->..." if matrix.ndim == 1 else "...i,ij->...j"
    return np.einsum(subscripts, vectors, matrix)


class _Texture:
    """A tileable RGB image sampled bilinearly with wrap-around; (u, v) are in tiles, one tile = one image."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image

    def sample(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """u, v [N] -> RGB [N, 3] in [0, 1]."""
        size = self.image.shape[0]
        x = u * size - 0.5
        y = v * size - 0.5
        x_floor = np.floor(x)
        y_floor = np.floor(y)
        fx = (x - x_floor)[:, None]
        fy = (y - y_floor)[:, None]
        x0 = x_floor.astype(np.int64) % size
        y0 = y_floor.astype(np.int64) % size
        x1 = (x0 + 1) % size
        y1 = (y0 + 1) % size
        top = self.image[y0, x0] * (1.0 - fx) + self.image[y0, x1] * fx
        bottom = self.image[y1, x0] * (1.0 - fx) + self.image[y1, x1] * fx
        return top * (1.0 - fy) + bottom * fy


def _smooth_periodic_noise(rng: np.random.Generator, size: int, wavelength: float) -> np.ndarray:
    """Tileable noise [size, size] of zero mean and unit deviation, with features of about `wavelength` texels."""
    radius_sq = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2
    spectrum = np.fft.rfft2(rng.standard_normal((size, size))) * np.exp(-radius_sq * (wavelength / 2.0) ** 2)
    noise = np.fft.irfft2(spectrum, s=(size, size))
    return (noise - noise.mean()) / noise.std()


def _random_palette(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` saturated colours of varied hue and brightness, RGB [count, 3] in [0, 1]."""
    hues = (rng.uniform() + np.arange(count) / count + rng.uniform(-0.08, 0.08, count)) % 1.0
    saturation = rng.uniform(0.35, 0.95, count)
    value = rng.uniform(0.25, 1.0, count)
    channel_offsets = np.array([0.0, 2.0 / 3.0, 1.0 / 3.0])
    # A smooth hue wheel: each channel peaks at its own third of the circle.
    wheel = 0.5 + 0.5 * np.cos(2.0 * np.pi * (hues[:, None] - channel_offsets[None, :]))
    return value[:, None] * (1.0 - saturation[:, None] + saturation[:, None] * wheel)


def _paint_shape(
    image: np.ndarray, rng: np.random.Generator, colour: np.ndarray, radius: float, kind: str
) -> None:
    """Blend one anti-aliased rectangle, ellipse or ring of about `radius` texels into `image`, wrapping around."""
    size = image.shape[0]
    centre = rng.uniform(0.0, size, 2)
    angle = rng.uniform(0.0, np.pi)
    half_axes = radius * rng.uniform(0.35, 1.0, 2)
    reach = int(math.ceil(np.hypot(*half_axes))) + 2
    offsets = np.arange(-reach, reach + 1)
    rows = (int(centre[1]) + offsets) % size
    cols = (int(centre[0]) + offsets) % size
    dy = (int(centre[1]) + offsets + 0.5 - centre[1])[:, None]
    dx = (int(centre[0]) + offsets + 0.5 - centre[0])[None, :]
    along = dx * math.cos(angle) + dy * math.sin(angle)
    across = -dx * math.sin(angle) + dy * math.cos(angle)
    if kind == "rectangle":
        distance = np.maximum(np.abs(along) - half_axes[0], np.abs(across) - half_axes[1])
    else:
        # Signed distance of an ellipse, scaled by its smaller axis (accurate enough for 1-texel anti-aliasing).
        normalised = np.hypot(along / half_axes[0], across / half_axes[1])
        distance = (normalised - 1.0) * half_axes.min()
        if kind == "ring":
            distance = np.abs(distance + 0.25 * half_axes.min()) - 0.2 * half_axes.min()
    coverage = np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)[..., None]
    # Slices are much faster than index arrays; only shapes that cross the tile border need the latter.
    if rows[0] < rows[-1] and cols[0] < cols[-1]:
        window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    else:
        window = np.ix_(rows, cols)
    image[window] = image[window] * (1.0 - coverage) + colour * coverage


def _make_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> _Texture:
    """A colourful tileable texture of `size` texels square: smooth multi-scale colour noise under shapes at three
    scales (about 1/7, 1/16 and 1/40 of the tile)."""
    palette = _random_palette(rng, 6)
    blend = 0.5 + 0.5 * np.tanh(
        1.5 * _smooth_periodic_noise(rng, size, size / 4) + 0.6 * _smooth_periodic_noise(rng, size, size / 16)
    )
    image = palette[0] * (1.0 - blend[..., None]) + palette[1] * blend[..., None]
    image = (image + 0.06 * _smooth_periodic_noise(rng, size, 6.0)[..., None]).astype(np.float32)
    kinds = ("rectangle", "ellipse", "ring")
    area_scale = (size / TEXTURE_SIZE) ** 2
    for radius, count in ((size / 7, 8), (size / 16, 30), (size / 40, 70)):
        for _ in range(round(count * area_scale)):
            colour = (palette[rng.integers(len(palette))] * rng.uniform(0.7, 1.15)).astype(np.float32)
            _paint_shape(image, rng, colour, radius, kinds[rng.integers(len(kinds))])
    return _Texture(np.clip(image, 0.0, 1.0))


class _Box:
    """An oriented box, seen from outside (an object) or from inside (the room).

    `textures` holds one texture per face (faces may share one); (u, v) on a face are the two in-face local
    coordinates divided by the tile size in world units.
    """

    def __init__(
        self,
        centre: np.ndarray,
        rotation: np.ndarray,
        half_extent: np.ndarray,
        textures: list[_Texture],
        tile_size: float,
        inside: bool = False,
    ) -> None:
        self.centre = centre
        self.rotation = rotation  # local-to-world, columns are the box axes in world coordinates
        self.half_extent = half_extent
        self.textures = textures
        self.tile_size = tile_size
        self.inside = inside

    def intersect(self, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Ray parameter of the first hit in front of `origin` for directions [N, 3]; inf where missed."""
        local_origin = (origin - self.centre) @ self.rotation
        local_directions = _rows_times(directions, self.rotation)
        t_enter = np.full(len(directions), -np.inf)
        t_exit = np.full(len(directions), np.inf)
        for axis in range(3):
            with np.errstate(divide="ignore"):
                inverse = 1.0 / local_directions[:, axis]
            t_low = (-self.half_extent[axis] - local_origin[axis]) * inverse
            t_high = (self.half_extent[axis] - local_origin[axis]) * inverse
            np.maximum(t_enter, np.minimum(t_low, t_high), out=t_enter)
            np.minimum(t_exit, np.maximum(t_low, t_high), out=t_exit)
        t_hit = t_exit if self.inside else t_enter
        hit = (t_exit >= t_enter) & (t_hit > 0.0)
        return np.where(hit, t_hit, np.inf)

    def shade(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Albedo [N, 3] and unit normal [N, 3] (facing the viewer's side) at surface points [N, 3]."""
        local = _rows_times(points - self.centre, self.rotation)
        face_axis = np.argmax(np.abs(local) / self.half_extent, axis=1)
        face_sign = np.sign(local[np.arange(len(local)), face_axis])
        face_index = 2 * face_axis + (face_sign > 0)
        local_normals = np.zeros_like(local)
        local_normals[np.arange(len(local)), face_axis] = -face_sign if self.inside else face_sign
        albedo = np.empty_like(local)
        for face in np.unique(face_index):
            selected = face_index == face
            in_face_axes = [axis for axis in range(3) if axis != face // 2]
            # Faces sharing a texture start at different places in it.
            uv = local[selected][:, in_face_axes] / self.tile_size + np.array([0.37, 0.61]) * face
            albedo[selected] = self.textures[face].sample(uv[:, 0], uv[:, 1])
        return albedo, _rows_times(local_normals, self.rotation.T)


class _Sphere:
    """A sphere textured by longitude and latitude in its own randomly oriented frame."""

    def __init__(
        self, centre: np.ndarray, radius: float, rotation: np.ndarray, texture: _Texture, tile_size: float
    ) -> None:
        self.centre = centre
        self.radius = radius
        self.rotation = rotation
        self.texture = texture
        # Whole tiles around the equator keep the texture continuous across the longitude seam.
        self.tiles_around = max(1, round(2.0 * np.pi * radius / tile_size))
        self.tiles_pole_to_pole = np.pi * radius / tile_size

    def intersect(self, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Ray parameter of the first hit in front of `origin` for directions [N, 3]; inf where missed."""
        offset = origin - self.centre
        a = np.einsum("ni,ni->n", directions, directions)
        half_b = _rows_times(directions, offset)
        c = offset @ offset - self.radius**2
        discriminant = half_b**2 - a * c
        root = np.sqrt(np.maximum(discriminant, 0.0))
        t_hit = (-half_b - root) / a
        return np.where((discriminant >= 0.0) & (t_hit > 0.0), t_hit, np.inf)

    def shade(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Albedo [N, 3] and outward unit normal [N, 3] at surface points [N, 3]."""
        normals = (points - self.centre) / self.radius
        local = _rows_times(normals, self.rotation)
        longitude = np.arctan2(local[:, 1], local[:, 0])
        colatitude = np.arccos(np.clip(local[:, 2], -1.0, 1.0))
        u = longitude / (2.0 * np.pi) * self.tiles_around
        v = colatitude / np.pi * self.tiles_pole_to_pole
        return self.texture.sample(u, v), normals


def _rotation_z(angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def _rotation_x(angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    quaternion = rng.standard_normal(4)
    return _quaternion_to_rotation(quaternion / np.linalg.norm(quaternion))


@functools.lru_cache(maxsize=4)
def _build_scene(seed: int) -> list[_Box | _Sphere]:
    """The room and its objects for a seed; object placement is jittered but stays within about 3.5 of the scene
    centre, clear of the camera paths. Cached because the textures take most of a second to paint."""
    rng = np.random.default_rng([seed, 0])
    room_textures = [_make_texture(rng, 2 * TEXTURE_SIZE) for _ in range(6)]
    room = _Box(ROOM_CENTRE, np.eye(3), ROOM_HALF_EXTENT, room_textures, tile_size=8.0, inside=True)
    scene: list[_Box | _Sphere] = [room]

    def jitter(xyz: tuple[float, float, float], amount: float = 0.25) -> np.ndarray:
        return np.array(xyz) + np.append(rng.uniform(-amount, amount, 2), 0.0)

    for centre, half in (
        ((-1.7, 0.6, 0.0), (0.65, 0.6, 0.6)),
        ((1.5, 1.1, 0.0), (0.45, 0.5, 1.15)),
        ((0.5, -1.5, 0.0), (0.35, 0.3, 0.3)),
        ((-0.4, 2.2, 0.0), (0.9, 0.5, 0.45)),
    ):
        half_extent = np.array(half) * rng.uniform(0.85, 1.15, 3)
        box_centre = jitter(centre) + np.array([0.0, 0.0, half_extent[2]])
        texture = [_make_texture(rng)] * 6
        scene.append(_Box(box_centre, _rotation_z(rng.uniform(0, np.pi)), half_extent, texture, tile_size=1.6))

    panel_rotation = _rotation_z(rng.uniform(0.0, 0.5)) @ _rotation_x(rng.uniform(0.35, 0.6))
    panel_centre = jitter((2.9, 0.6, 1.3), 0.15)
    scene.append(_Box(panel_centre, panel_rotation, np.array([1.3, 0.04, 0.9]), [_make_texture(rng)] * 6, 2.0))

    for centre, radius in (((0.1, 0.1, 0.0), 0.8), ((-1.3, -1.3, 0.0), 0.45)):
        sphere_radius = radius * rng.uniform(0.9, 1.1)
        sphere_centre = jitter(centre, 0.2) + np.array([0.0, 0.0, sphere_radius])
        scene.append(_Sphere(sphere_centre, sphere_radius, _random_rotation(rng), _make_texture(rng), 1.2))
    return scene


def _look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-from-world [3, 4] of a camera at `eye` looking at `target` with world z up, rolled by `roll`."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    cos, sin = math.cos(roll), math.sin(roll)
    right, down = cos * right + sin * down, -sin * right + cos * down
    rotation = np.stack([right, down, forward])
    return np.concatenate([rotation, -(rotation @ eye)[:, None]], axis=1)


def _arc_trajectory(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """An orbit-like arc around the scene centre, looking at it: about 3.5 degrees of rotation per frame, with
    gently varying radius, height, target and roll so the path is not planar."""
    start = rng.uniform(-0.5, 0.5) - math.radians(3.5) * (num_frames - 1) / 2
    phase = rng.uniform(0.0, 2.0 * np.pi, 4)
    extrinsics = []
    for frame in range(num_frames):
        angle = start + math.radians(3.5) * frame
        radius = 5.6 + 0.4 * math.sin(0.3 * frame + phase[0])
        height = 2.0 + 0.35 * math.sin(0.23 * frame + phase[1])
        eye = np.array([radius * math.sin(angle), -radius * math.cos(angle), height])
        target = SCENE_TARGET + 0.25 * np.array([math.sin(0.2 * frame + phase[2]), math.cos(0.17 * frame), 0.0])
        roll = math.radians(1.5) * math.sin(0.25 * frame + phase[3])
        extrinsics.append(_look_at(eye, target, roll))
    return np.stack(extrinsics)


def _forward_trajectory(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Forward motion towards the scene while turning slowly (2-4 degrees of yaw per frame) and nodding a little.
    The path length is capped at 4 world units so long sequences stay clear of the objects."""
    step = min(0.3, 4.0 / max(num_frames - 1, 1))
    yaw = math.radians(-14.0) + rng.uniform(-0.1, 0.1)
    phase = rng.uniform(0.0, 2.0 * np.pi, 2)
    eye = np.array([rng.uniform(-0.5, 0.5), -7.0, 1.6])
    extrinsics = []
    for frame in range(num_frames):
        pitch = math.radians(-8.0 + 3.0 * math.sin(0.2 * frame + phase[0]))
        heading = np.array([math.sin(yaw), math.cos(yaw), 0.0])
        view = heading * math.cos(pitch) + np.array([0.0, 0.0, math.sin(pitch)])
        roll = math.radians(1.0) * math.sin(0.3 * frame + phase[1])
        extrinsics.append(_look_at(eye, eye + view, roll))
        eye = eye + step * heading
        yaw += math.radians(3.0 + 1.2 * math.cos(0.35 * frame))
    return np.stack(extrinsics)


def _pixel_centre_rays(intrinsic: np.ndarray, width: int, height: int, offsets: np.ndarray | None = None) -> np.ndarray:
    """Camera-frame ray directions with unit z [height * n, width * n, 3] (n = len(offsets)) through pixel
    centres shifted by each of `offsets` (pixels) in x and y; no offsets gives the centres themselves."""
    offsets = np.zeros(1) if offsets is None else offsets
    x = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)
    y = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)
    fx, fy, cx, cy = intrinsic[0, 0], intrinsic[1, 1], intrinsic[0, 2], intrinsic[1, 2]
    skew = intrinsic[0, 1]
    ray_y = (y[:, None] - cy) / fy + np.zeros((1, len(x)))
    ray_x = (x[None, :] - cx - skew * ray_y) / fx
    return np.stack([ray_x, ray_y, np.ones_like(ray_x)], axis=-1)


def _cast(scene: list[_Box | _Sphere], origin: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of rays [N, 3] from `origin`: ray parameter [N] and index of the surface hit [N]."""
    t_nearest = np.full(len(directions), np.inf)
    surface = np.zeros(len(directions), dtype=np.int64)
    for index, primitive in enumerate(scene):
        t_hit = primitive.intersect(origin, directions)
        closer = t_hit < t_nearest
        t_nearest[closer] = t_hit[closer]
        surface[closer] = index
    return t_nearest, surface


def _render_view(
    scene: list[_Box | _Sphere],
    extrinsic: np.ndarray,
    intrinsic: np.ndarray,
    width: int,
    height: int,
    supersample: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One frame: RGB uint8 [H, W, 3] (mean of supersample^2 rays per pixel) and z-depth float32 [H, W]."""
    rotation, translation = extrinsic[:, :3], extrinsic[:, 3]
    origin = -rotation.T @ translation

    # Rays are z-normalised in the camera frame, so the ray parameter of a hit is its z-depth.
    centre_rays = _rows_times(_pixel_centre_rays(intrinsic, width, height).reshape(-1, 3), rotation)
    depth, _ = _cast(scene, origin, centre_rays)
    if not np.all(np.isfinite(depth)):
        raise RuntimeError("a pixel ray left the room; the camera must stay inside it")

    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    sample_rays = _rows_times(_pixel_centre_rays(intrinsic, width, height, offsets).reshape(-1, 3), rotation)
    t_hit, surface = _cast(scene, origin, sample_rays)
    points = origin + t_hit[:, None] * sample_rays
    colour = np.empty_like(points)
    for index in np.unique(surface):
        selected = surface == index
        albedo, normals = scene[index].shade(points[selected])
        light = AMBIENT + (1.0 - AMBIENT) * np.clip(_rows_times(normals, LIGHT_DIRECTION), 0.0, None)
        colour[selected] = albedo * light[:, None]
    colour = colour.reshape(height, supersample, width, supersample, 3).mean(axis=(1, 3))
    image = np.round(np.clip(colour, 0.0, 1.0) * 255.0).astype(np.uint8)
    return image, depth.reshape(height, width).astype(np.float32)


def render_scene(
    num_frames: int = 8,
    width: int = 224,
    height: int = 168,
    seed: int = 0,
    trajectory: str = "arc",
    focal: float | None = None,
    supersample: int = 2,
) -> SyntheticScene:
    """Render `num_frames` views of the seeded synthetic scene along a smooth video-like camera path.

    trajectory: "arc" (orbit-like arc around the scene centre, looking at it) or "forward" (forward motion with a
    slow turn). focal: in pixels, the same for x and y; default 0.8 * max(width, height) (about 64 degrees across
    the longer side). The principal point is the image centre. supersample: rays per pixel along each axis for
    the colour; depth always comes from the ray through the pixel centre. The result depends only on the
    arguments.
    """
    if trajectory not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory {trajectory!r}; expected one of {TRAJECTORIES}")
    if num_frames < 1:
        raise ValueError("num_frames must be positive")
    rng = np.random.default_rng([seed, 1])
    extrinsic = _arc_trajectory(num_frames, rng) if trajectory == "arc" else _forward_trajectory(num_frames, rng)
    return render_views(extrinsic, width, height, seed, focal, supersample)


def arc_cameras(degrees: list[float], radius: float = 5.6, height: float = 2.0) -> np.ndarray:
    """Camera-from-world [S, 3, 4] on a circle around the scene centre, looking at it, at the given azimuths:
    any spacing (a close pair, a jump, a wide baseline) for tests that need one."""
    eyes = [np.array([radius * math.sin(math.radians(a)), -radius * math.cos(math.radians(a)), height])
            for a in degrees]
    return np.stack([_look_at(eye, SCENE_TARGET) for eye in eyes])


def render_views(
    extrinsic: np.ndarray,
    width: int = 224,
    height: int = 168,
    seed: int = 0,
    focal: float | None = None,
    supersample: int = 2,
) -> SyntheticScene:
    """Render the seeded synthetic scene from the cameras ``extrinsic`` [S, 3, 4] (camera-from-world, inside the
    room); see ``render_scene`` for focal and supersample."""
    if width < 1 or height < 1 or supersample < 1:
        raise ValueError("width, height and supersample must be positive")
    scene = _build_scene(seed)
    num_frames = len(extrinsic)
    focal = 0.8 * max(width, height) if focal is None else float(focal)
    camera = np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])
    intrinsic = np.repeat(camera[None], num_frames, axis=0)
    images = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    depth = np.empty((num_frames, height, width), dtype=np.float32)
    for frame in range(num_frames):
        images[frame], depth[frame] = _render_view(scene, extrinsic[frame], camera, width, height, supersample)
    return SyntheticScene(images=images, depth=depth, extrinsic=np.asarray(extrinsic, dtype=np.float64),
                          intrinsic=intrinsic)


def _rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0 of a rotation matrix [3, 3]."""
    # The eigenvector of the largest eigenvalue of this symmetric matrix is the quaternion (Bar-Itzhack), which
    # stays accurate for every rotation angle, unlike the trace formula near 180 degrees.
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = rotation
    k = np.array(
        [
            [r00 + r11 + r22, r21 - r12, r02 - r20, r10 - r01],
            [r21 - r12, r00 - r11 - r22, r01 + r10, r02 + r20],
            [r02 - r20, r01 + r10, r11 - r00 - r22, r12 + r21],
            [r10 - r01, r02 + r20, r12 + r21, r22 - r00 - r11],
        ]
    )
    _, vectors = np.linalg.eigh(k)
    quaternion = vectors[:, -1]
    return quaternion if quaternion[0] >= 0 else -quaternion


def _quaternion_to_rotation(quaternion: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] of a unit quaternion (w, x, y, z)."""
    w, x, y, z = quaternion
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def write_scene(scene: SyntheticScene, folder: Path, names: list[str] | None = None) -> list[Path]:
    """Write frames and ground truth in the layout the evaluation reads (docs/formats.md); returns the image paths.

    folder/images/<name> (default names 0000.png, 0001.png, ...), folder/gt/poses.txt
    (``image_name qw qx qy qz tx ty tz``, world-to-camera), folder/gt/intrinsics.txt (``width height fx fy cx cy``,
    COLMAP pixel centres: OpenCV cx + 0.5) and folder/gt/depth.npz (``depth``: float16 [S, H, W] z-depth,
    ``names``: [S] image names in the same order).
    """
    folder = Path(folder)
    num_frames, height, width = scene.depth.shape
    names = [f"{index:04d}.png" for index in range(num_frames)] if names is None else list(names)
    if len(names) != num_frames:
        raise ValueError(f"{len(names)} names for {num_frames} frames")
    if not np.allclose(scene.intrinsic, scene.intrinsic[0]):
        raise ValueError("gt/intrinsics.txt holds one camera; the frames' intrinsics differ")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "gt").mkdir(parents=True, exist_ok=True)

    paths = []
    for name, image in zip(names, scene.images):
        path = folder / "images" / name
        Image.fromarray(image).save(path)
        paths.append(path)

    pose_lines = [POSES_HEADER, "# synthetic scene rendered by vae_pipeline.synthetic (world z up, floor at z = 0)\n"]
    for name, extrinsic in zip(names, scene.extrinsic):
        values = np.concatenate([_rotation_to_quaternion(extrinsic[:, :3]), extrinsic[:, 3]])
        pose_lines.append(name + "".join(f" {value:.12f}" for value in values) + "\n")
    (folder / "gt" / "poses.txt").write_text("".join(pose_lines))

    camera = scene.intrinsic[0]
    fx, fy, cx, cy = camera[0, 0], camera[1, 1], camera[0, 2] + 0.5, camera[1, 2] + 0.5
    (folder / "gt" / "intrinsics.txt").write_text(
        INTRINSICS_HEADER + f"{width} {height} {fx:.6f} {fy:.6f} {cx:.6f} {cy:.6f}\n"
    )
    np.savez_compressed(folder / "gt" / "depth.npz", depth=scene.depth.astype(np.float16), names=np.array(names))
    return paths


def read_ground_truth(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read folder/gt/poses.txt and folder/gt/intrinsics.txt (this module's output, or any sequence in that layout).

    Returns image names in file order, camera-from-world extrinsics float64 [S, 3, 4] and intrinsics float64
    [S, 3, 3] in OpenCV pixel convention (the file's COLMAP cx, cy minus 0.5).
    """
    gt_folder = Path(folder) / "gt"
    cameras = read_pose_files(gt_folder)
    if cameras.calibration is None:
        raise GroundTruthError(f"{gt_folder / 'intrinsics.txt'}: missing")
    intrinsic = cameras.calibration.copy()
    intrinsic[:, :2, 2] -= 0.5
    return list(cameras.names), cameras.cam_from_world[:, :3, :], intrinsic
