"""MediaPipe Face Mesh tracking of RGB frames into pixel landmarks (see docs/conventions.md).

Landmarks are returned in pixels of the *input* frame: ``x`` right, ``y`` down, ``z`` MediaPipe's
relative depth times the input width (smaller z is nearer the camera).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from erlnet.errors import InputError


@dataclass
class TrackerConfig:
    """Face tracker settings."""

    # Faces the mesh tracks; the one continuing the previous track is kept. More than 1 costs ~4 ms a
    # frame (the detector then runs on every frame), so competing faces are counted separately below.
    max_faces: int = 1
    # Run MediaPipe's face detector every N frames to count faces (0 = never; then n_faces comes
    # from the mesh and cannot exceed max_faces).
    count_faces_every: int = 10
    refine_landmarks: bool = True  # True: 478 points (with iris), False: the 468 mesh points only
    min_detection_confidence: float = 0.5  # face detector threshold (when (re)acquiring a face)
    min_tracking_confidence: float = 0.5  # below this the next frame runs the detector again
    # Frames whose longer side exceeds this are downscaled first (0 = never). MediaPipe only crops the
    # face region, so this saves time only on very large frames (measured: no gain at 1080p).
    max_side: int = 1920
    static_image: bool = False  # True: every frame is an independent photo (no temporal tracking)
    quiet: bool = True  # silence MediaPipe's native start-up log lines on stderr


@dataclass
class FrameTrack:
    """Result of one frame."""

    landmarks: np.ndarray | None  # (478, 3) float32 input-frame pixels ((468, 3) unrefined), None: no face
    n_faces: int  # faces found in the frame (by the detector on counted frames, else by the mesh)
    box: tuple[float, float, float, float] | None  # landmark bounding box (x0, y0, x1, y1), pixels
    counted: bool = False  # True when the face detector counted the faces of this frame


@contextlib.contextmanager
def _stderr_silenced(enabled: bool) -> Iterator[None]:
    """Redirect the process-level stderr (fd 2) to /dev/null: MediaPipe's C++ logs bypass Python."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. captured stderr): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _resize_longer_side(frame: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (area filter) so the longer side is at most max_side; mediapipe's output is normalised."""
    h, w = frame.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return frame
    import cv2

    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _box(lms: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = lms[:, :2].min(axis=0)
    x1, y1 = lms[:, :2].max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _pick_face(faces: list[np.ndarray], previous: np.ndarray | None) -> np.ndarray:
    """Keep the face whose centroid is nearest the previous frame's face, else the largest box."""
    if len(faces) == 1:
        return faces[0]
    if previous is not None:
        prev_c = previous[:, :2].mean(axis=0)
        d = [np.linalg.norm(f[:, :2].mean(axis=0) - prev_c) for f in faces]
        return faces[int(np.argmin(d))]
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in map(_box, faces)]
    return faces[int(np.argmax(areas))]


class FaceTracker:
    """Stateful MediaPipe Face Mesh wrapper; use as a context manager (or call close()).

    In video mode (default) frames must be fed in temporal order: MediaPipe re-uses the previous
    frame's face region and only runs its detector when tracking is lost.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        if self.config.max_faces < 1:
            raise InputError(f"max_faces must be >= 1, got {self.config.max_faces}")
        # Must be set before mediapipe's native libraries load to have any effect.
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from mediapipe.python.solutions import face_mesh

        # The native graph logs from its worker threads while it starts; a blank warm-up frame makes
        # that happen while stderr is silenced (a face-less frame leaves no tracking state behind).
        with _stderr_silenced(self.config.quiet):
            self._mesh: Any = face_mesh.FaceMesh(
                static_image_mode=self.config.static_image,
                max_num_faces=self.config.max_faces,
                refine_landmarks=self.config.refine_landmarks,
                min_detection_confidence=self.config.min_detection_confidence,
                min_tracking_confidence=self.config.min_tracking_confidence,
            )
            self._mesh.process(np.zeros((64, 64, 3), dtype=np.uint8))
            self._detector: Any = None
            if self.config.count_faces_every > 0:
                from mediapipe.python.solutions import face_detection

                self._detector = face_detection.FaceDetection(
                    model_selection=1, min_detection_confidence=self.config.min_detection_confidence
                )
                self._detector.process(np.zeros((64, 64, 3), dtype=np.uint8))
        self._previous: np.ndarray | None = None
        self._frames_seen = 0  # some set-up logs only come with the first face

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the MediaPipe graph (idempotent)."""
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def reset(self) -> None:
        """Forget the previous face (call between unrelated clips when re-using the tracker)."""
        self._previous = None

    def process(self, frame_rgb: np.ndarray) -> FrameTrack:
        """Track one frame. frame_rgb (H, W, 3) uint8 RGB -> FrameTrack (landmarks in its pixels)."""
        if self._mesh is None:
            raise RuntimeError("FaceTracker is closed")
        frame = np.asarray(frame_rgb)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        small = np.ascontiguousarray(_resize_longer_side(frame, self.config.max_side))
        counted = self._detector is not None and self._frames_seen % self.config.count_faces_every == 0
        with _stderr_silenced(self.config.quiet and self._frames_seen < 3):
            result = self._mesh.process(small)
            detected = len(self._detector.process(small).detections or []) if counted else 0
        self._frames_seen += 1

        found = result.multi_face_landmarks or []
        if not found:
            if not self.config.static_image:
                self._previous = None
            return FrameTrack(landmarks=None, n_faces=detected, box=None, counted=counted)
        # Normalised [0,1] coordinates -> input pixels; z shares x's scale (MediaPipe convention).
        scale = np.array([w, h, w], dtype=np.float32)
        faces = [
            np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32) * scale for face in found
        ]
        lms = _pick_face(faces, None if self.config.static_image else self._previous)
        if not self.config.static_image:
            self._previous = lms
        n_faces = max(detected, len(faces)) if counted else len(faces)
        return FrameTrack(landmarks=lms, n_faces=n_faces, box=_box(lms), counted=counted)


def track_frames(
    frames: Iterable[np.ndarray], config: TrackerConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track a clip in order. frames: iterable of (H, W, 3) uint8 ->
    (landmarks (T, 478, 3) float32 pixels, NaN where missing; valid (T,) bool; n_faces (T,) int32)."""
    cfg = config or TrackerConfig()
    n_pts = 478 if cfg.refine_landmarks else 468
    lms, valid, counts = [], [], []
    with FaceTracker(cfg) as tracker:
        for frame in frames:
            tr = tracker.process(frame)
            if tr.landmarks is None:
                lms.append(np.full((n_pts, 3), np.nan, dtype=np.float32))
            else:
                lms.append(tr.landmarks)
            valid.append(tr.landmarks is not None)
            counts.append(tr.n_faces)
    if not lms:
        return np.zeros((0, n_pts, 3), np.float32), np.zeros(0, bool), np.zeros(0, np.int32)
    return np.stack(lms), np.array(valid, dtype=bool), np.array(counts, dtype=np.int32)
