"""Weight-free point trackers: query points on a few frames of a window, followed through all its frames.

Every tracker takes uint8 RGB images [S, h, w, 3] and content boxes [S, 4] (the part of each model image that
shows the original frame, see ``pixels.content_boxes``: nothing is detected or tracked in padding) and returns
``Tracks`` in OpenCV model-resolution pixels. The trackers make no random choices.

- ``klt``: Shi-Tomasi corners on the query frames (later query frames only where earlier tracks do not reach),
  followed frame to frame with pyramidal Lucas-Kanade; a step counts only if tracking back lands within
  FB_MAX_ERROR of where it started, and a point lost once stays lost. ``fine`` then re-aligns every tracked
  point directly against its query frame's patch, starting from the chained estimate, with a smaller window,
  no pyramid and a tighter stopping rule, and drops it if that round trip does not close within
  FINE_FB_MAX_ERROR: this removes the drift that chaining accumulates (on the synthetic scenes the median
  error falls from about 0.28 px to 0.16 px and the share of observations off by more than 1 px from 19 % to
  8 %).
- ``sift`` (the default): SIFT keypoints on every frame, matched between every pair of frames that involves a
  query frame (mutual nearest neighbours of RootSIFT descriptors, ratio test both ways), each pair's matches
  kept where they agree with one fundamental matrix (USAC with a fixed random state); tracks are the connected
  components of all pairs' matches, as in COLMAP, and a component holding two keypoints of one frame is
  dropped. It links frames however far apart the window's views are (still photos 20 degrees apart, a jump
  in a video) as well as consecutive video frames. SIFT positions are sub-pixel already, so ``fine`` changes
  nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

# Round trip (model pixels) beyond which a chained KLT step is rejected.
FB_MAX_ERROR = 1.0
# The direct refinement starts close to the answer, so its round trip must close tighter.
FINE_FB_MAX_ERROR = 0.5
KLT_WINDOW = (21, 21)
KLT_LEVELS = 3
KLT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)
FINE_WINDOW = (11, 11)
FINE_LEVELS = 1
FINE_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 0.001)
CORNER_QUALITY = 0.005
CORNER_BLOCK_SIZE = 5
TAKEN_RADIUS = 1.0
SIFT_RATIO = 0.8
EPIPOLAR_MAX_ERROR = 1.5
MIN_MATCHES_FOR_GEOMETRY = 16


@dataclass
class Tracks:
    """N tracks through S frames.

    xy: [S, N, 2] OpenCV model pixels; vis: [S, N] float in [0, 1]; query_frame: [N] the frame each track
    started on.
    """

    xy: np.ndarray
    vis: np.ndarray
    query_frame: np.ndarray

    @property
    def num_tracks(self) -> int:
        return int(self.xy.shape[1])


Tracker = Callable[[np.ndarray, np.ndarray, list[int], int, bool], Tracks]


def select_query_frames(num_frames: int, count: int) -> list[int]:
    """``count`` frames spread evenly over the window, frame 0 first (all frames when count >= num_frames)."""
    if count >= num_frames:
        return list(range(num_frames))
    spread = np.round(np.linspace(0, num_frames - 1, count)).astype(int)
    return list(dict.fromkeys(int(i) for i in spread))


def to_gray(images: np.ndarray) -> list[np.ndarray]:
    """uint8 [S, h, w, 3] RGB -> S grey images."""
    return [cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY) for image in images]


def _inside(xy: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """[N] whether points [N, 2] lie in ``box`` (left, top, right, bottom) shrunk by ``margin``."""
    left, top, right, bottom = box
    return (
        (xy[:, 0] >= left + margin) & (xy[:, 0] <= right - margin)
        & (xy[:, 1] >= top + margin) & (xy[:, 1] <= bottom - margin)
    )


def corner_spacing(gray: np.ndarray, max_points: int) -> float:
    """Minimum distance between corners: about half the spacing of ``max_points`` on a regular grid."""
    height, width = gray.shape
    return max(2.0, 0.5 * np.sqrt(height * width / max_points))


def detect_corners(gray: np.ndarray, box: np.ndarray, max_points: int, taken: np.ndarray) -> np.ndarray:
    """Up to ``max_points`` Shi-Tomasi corners [N, 2] (OpenCV pixels), strongest first.

    Corners keep half a KLT window away from the edges of ``box``, and at least the corner spacing away from
    the positions ``taken`` [K, 2] that earlier tracks already cover.
    """
    height, width = gray.shape
    spacing = corner_spacing(gray, max_points)
    margin = KLT_WINDOW[0] // 2
    mask = np.zeros((height, width), dtype=np.uint8)
    left, top, right, bottom = np.round(box).astype(int)
    mask[max(top + margin, 0):max(bottom - margin + 1, 0), max(left + margin, 0):max(right - margin + 1, 0)] = 255
    for x, y in np.round(taken).astype(int):
        cv2.circle(mask, (int(x), int(y)), int(np.ceil(TAKEN_RADIUS * spacing)), 0, -1)
    corners = cv2.goodFeaturesToTrack(
        gray, maxCorners=max_points, qualityLevel=CORNER_QUALITY, minDistance=spacing,
        blockSize=CORNER_BLOCK_SIZE, mask=mask,
    )
    return np.zeros((0, 2)) if corners is None else corners.reshape(-1, 2).astype(np.float64)


def _lk(source: np.ndarray, target: np.ndarray, points: np.ndarray, guess: np.ndarray | None, fine: bool):
    """One Lucas-Kanade solve; returns positions [N, 2] and a success mask [N]."""
    window, levels, criteria = (
        (FINE_WINDOW, FINE_LEVELS, FINE_CRITERIA) if fine else (KLT_WINDOW, KLT_LEVELS, KLT_CRITERIA)
    )
    initial = None if guess is None else guess.astype(np.float32).reshape(-1, 1, 2)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(
        source, target, points.astype(np.float32).reshape(-1, 1, 2), initial,
        winSize=window, maxLevel=levels, criteria=criteria,
        flags=0 if guess is None else cv2.OPTFLOW_USE_INITIAL_FLOW,
    )
    return moved.reshape(-1, 2).astype(np.float64), status.reshape(-1).astype(bool)


def _lk_round_trip(source, target, points, guess, target_box, fine: bool) -> tuple[np.ndarray, np.ndarray]:
    """LK from ``source`` to ``target`` and back; ok where both succeed, the round trip closes and the point
    stays inside the target's content box."""
    forward, ok_forward = _lk(source, target, points, guess, fine)
    backward, ok_backward = _lk(target, source, forward, points if fine else None, fine)
    closes = np.linalg.norm(backward - points, axis=1) < (FINE_FB_MAX_ERROR if fine else FB_MAX_ERROR)
    return forward, ok_forward & ok_backward & closes & _inside(forward, target_box, 0.0)


def _follow(grays: list[np.ndarray], boxes: np.ndarray, query: int, points: np.ndarray, fine: bool):
    """Chain LK outwards from frame ``query`` in both directions; returns xy [S, N, 2] and vis [S, N]."""
    num_frames = len(grays)
    xy = np.zeros((num_frames, len(points), 2))
    vis = np.zeros((num_frames, len(points)), dtype=bool)
    xy[query], vis[query] = points, True
    for step in (1, -1):
        alive = np.arange(len(points))
        previous = query
        for frame in range(query + step, num_frames if step > 0 else -1, step):
            if len(alive) == 0:
                break
            moved, ok = _lk_round_trip(grays[previous], grays[frame], xy[previous, alive], None, boxes[frame], False)
            xy[frame, alive] = moved
            alive = alive[ok]
            vis[frame, alive] = True
            previous = frame
    if fine:
        for frame in range(num_frames):
            seen = np.flatnonzero(vis[frame])
            if frame == query or len(seen) == 0:
                continue
            refined, ok = _lk_round_trip(grays[query], grays[frame], points[seen], xy[frame, seen], boxes[frame], True)
            xy[frame, seen] = refined
            vis[frame, seen[~ok]] = False
    return xy, vis


def track_klt(images: np.ndarray, boxes: np.ndarray, query_frames: list[int], max_query_pts: int,
              fine: bool) -> Tracks:
    """KLT tracks (see the module docstring) for images [S, h, w, 3] with content boxes [S, 4]."""
    grays = to_gray(images)
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for query in query_frames:
        taken = np.concatenate([xy[query][vis[query]] for xy, vis, _ in pieces] or [np.zeros((0, 2))])
        corners = detect_corners(grays[query], boxes[query], max_query_pts, taken)
        if len(corners):
            xy, vis = _follow(grays, boxes, query, corners, fine)
            pieces.append((xy, vis, np.full(len(corners), query)))
    return _concatenate(pieces, len(images))


@dataclass
class Features:
    """Keypoints of one frame: RootSIFT descriptors [K, 128] (unit length), each at ``xy[position[k]]``.

    SIFT gives a keypoint one descriptor per dominant orientation, and two views of a point need not agree on
    which orientation is the strongest, so every descriptor takes part in matching; but a track observes one
    position once, so tracks are built over the N distinct positions xy [N, 2] (OpenCV model pixels).
    """

    xy: np.ndarray
    position: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.descriptors)


def sift_features(gray: np.ndarray, box: np.ndarray, max_points: int) -> Features:
    """The strongest SIFT keypoints inside ``box`` (left, top, right, bottom), at most ``max_points`` distinct
    positions, with RootSIFT descriptors (L1-normalised, square-rooted: comparing them by dot product is the
    Hellinger kernel, which matches better than plain SIFT's Euclidean distance)."""
    keypoints, descriptors = cv2.SIFT_create(nfeatures=max_points).detectAndCompute(gray, None)
    if descriptors is None:
        return Features(np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros((0, 128), np.float32))
    xy = np.array([kp.pt for kp in keypoints], dtype=np.float64).reshape(-1, 2)
    keep = _inside(xy, box, CORNER_BLOCK_SIZE)
    descriptors = descriptors[keep]
    descriptors /= np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-12)
    positions, position = np.unique(np.round(xy[keep], 3), axis=0, return_inverse=True)
    return Features(positions, position.reshape(-1), np.sqrt(descriptors).astype(np.float32))


def mutual_matches(first: Features, second: Features) -> np.ndarray:
    """[K, 2] index pairs that are each other's nearest neighbour and pass Lowe's ratio test both ways."""
    if len(first) < 2 or len(second) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    similarity = first.descriptors @ second.descriptors.T
    forward = similarity.argmax(axis=1)
    best = similarity[np.arange(len(first)), forward]
    # Mutual when the row's best is also its column's best (column maxima are far cheaper than column argmaxes).
    rows = np.flatnonzero(best >= similarity.max(axis=0)[forward])
    columns = forward[rows]
    # The ratio test only for mutual pairs: the second best of a few rows and columns, not of the whole matrix.
    row_second = _second_best(similarity[rows], columns, axis=1)
    column_second = _second_best(similarity[:, columns], rows, axis=0)
    keep = _clearly_better(best[rows], row_second) & _clearly_better(best[rows], column_second)
    return np.stack([rows[keep], columns[keep]], axis=1)


def _second_best(similarity: np.ndarray, best: np.ndarray, axis: int) -> np.ndarray:
    """Largest value along ``axis`` once the best entries (index ``best`` per row or column) are set aside;
    overwrites ``similarity``, a copy."""
    lines = np.arange(len(best))
    if axis == 1:
        similarity[lines, best] = -np.inf
    else:
        similarity[best, lines] = -np.inf
    return similarity.max(axis=axis)


def _clearly_better(best: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Lowe's ratio test on the Euclidean distances of unit vectors, sqrt(2 - 2 cos)."""
    best_distance = np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0))
    second_distance = np.sqrt(np.maximum(2.0 - 2.0 * second, 0.0))
    return best_distance < SIFT_RATIO * second_distance


def epipolar_inliers(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[N] bool: matches consistent with one fundamental matrix (USAC-MAGSAC with a fixed random state, so the
    result does not depend on which process ran it). OpenCV's estimator can fail on degenerate point sets
    (an exception or no model): the pair then simply has no verified matches."""
    if len(source) < MIN_MATCHES_FOR_GEOMETRY:
        return np.zeros(len(source), dtype=bool)
    params = cv2.UsacParams()
    params.threshold = EPIPOLAR_MAX_ERROR
    params.confidence = 0.999
    params.randomGeneratorState = 0
    try:
        _, mask = cv2.findFundamentalMat(source, target, params)
    except cv2.error:
        return np.zeros(len(source), dtype=bool)
    return np.zeros(len(source), dtype=bool) if mask is None else mask.reshape(-1).astype(bool)


def tracks_from_matches(features: list[Features], matches: dict[tuple[int, int], np.ndarray]) -> Tracks:
    """Tracks as the connected components of the match graph: the nodes are the keypoint positions of every
    frame, the edges the verified matches (descriptor index pairs per frame pair).

    A component that holds two positions of one frame joins different points somewhere (a wrong match); it is
    dropped rather than guessed apart. A track's query frame is its first frame.
    """
    num_frames = len(features)
    offsets = np.concatenate([[0], np.cumsum([len(f.xy) for f in features])])
    edges = [np.stack([features[a].position[pairs[:, 0]] + offsets[a],
                       features[b].position[pairs[:, 1]] + offsets[b]], axis=1)
             for (a, b), pairs in matches.items() if len(pairs)]
    if not edges:
        return _concatenate([], num_frames)
    edges = np.concatenate(edges)
    num_nodes = int(offsets[-1])
    graph = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_nodes, num_nodes))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    nodes = np.unique(edges)
    frame_of = np.repeat(np.arange(num_frames), np.diff(offsets))[nodes]
    component, track = np.unique(labels[nodes], return_inverse=True)
    per_frame = np.zeros((len(component), num_frames), dtype=np.int64)
    np.add.at(per_frame, (track, frame_of), 1)
    consistent = (per_frame <= 1).all(axis=1)
    xy = np.zeros((num_frames, len(component), 2))
    vis = np.zeros((num_frames, len(component)))
    positions = np.concatenate([f.xy for f in features])
    xy[frame_of, track] = positions[nodes]
    vis[frame_of, track] = 1.0
    xy, vis = xy[:, consistent], vis[:, consistent]
    return Tracks(xy, vis, np.argmax(vis > 0, axis=0).astype(np.int64))


def track_sift(images: np.ndarray, boxes: np.ndarray, query_frames: list[int], max_query_pts: int,
               fine: bool) -> Tracks:
    """SIFT tracks (see the module docstring) for images [S, h, w, 3] with content boxes [S, 4]."""
    features = [sift_features(gray, box, max_query_pts) for gray, box in zip(to_gray(images), boxes)]
    queries = set(query_frames)
    matches = {}
    for a in range(len(features)):
        for b in range(a + 1, len(features)):
            if a not in queries and b not in queries:
                continue
            pairs = mutual_matches(features[a], features[b])
            verified = epipolar_inliers(features[a].xy[features[a].position[pairs[:, 0]]],
                                        features[b].xy[features[b].position[pairs[:, 1]]])
            if verified.sum() >= MIN_MATCHES_FOR_GEOMETRY:
                matches[(a, b)] = pairs[verified]
    return tracks_from_matches(features, matches)


def _concatenate(pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]], num_frames: int) -> Tracks:
    if not pieces:
        return Tracks(np.zeros((num_frames, 0, 2)), np.zeros((num_frames, 0)), np.zeros(0, dtype=np.int64))
    xy, vis, query = zip(*pieces)
    return Tracks(
        np.concatenate(xy, axis=1), np.concatenate(vis, axis=1).astype(np.float64),
        np.concatenate(query).astype(np.int64),
    )


TRACKERS: dict[str, Tracker] = {"klt": track_klt, "sift": track_sift}
