"""Where the picture ends: chromosomes cut by the edge of the camera's field.

A chromosome that runs out of the picture is measured short and may be read
as a smaller one. Many lab exports put the camera's field inside a flat frame
of a few pixels (white for brightfield), so the field's edge is not always
the array's edge; :func:`picture_frame` finds such a frame.

Examples
--------
>>> import numpy as np
>>> gray = np.random.default_rng(0).normal(0.1, 0.02, (40, 60)).astype(np.float32)
>>> gray[:, -5:] = 0.0                      # a flat 5-px frame on the right
>>> frame = picture_frame(gray)
>>> frame
(0, 0, 0, 5)
>>> mask = np.zeros((40, 60), bool); mask[10:14, 50:55] = True
>>> touches_picture_edge(mask, frame)
True
"""
from __future__ import annotations

import numpy as np

#: A frame line is this flat (standard deviation, grey levels in [0, 1]); camera noise on an empty background is more.
FRAME_FLATNESS = 0.006
#: ... and this far in mean from the field beside it.
FRAME_STEP = 0.03
#: Frames wider than this are not looked for: a wide flat band is background, not a frame.
MAX_FRAME = 32


def _frame_width(lines: np.ndarray) -> int:
    """Width of a flat frame at the start of ``lines`` (shape (n, length): line 0 on the border), 0 if none."""
    depth = min(MAX_FRAME + 1, len(lines) // 4)
    flat = lines[:depth].std(axis=1) < FRAME_FLATNESS
    if flat.all():  # flat as far as a frame may reach: plain background
        return 0
    k = int(np.argmin(flat))
    if k == 0:
        return 0
    beside = lines[k: k + 3].mean()
    return k if abs(float(lines[:k].mean()) - float(beside)) > FRAME_STEP else 0


def picture_frame(gray: np.ndarray) -> tuple[int, int, int, int]:
    """Widths of a flat frame around the camera's field: (top, bottom, left, right) in pixels.

    A side has a frame when its outermost lines (rows or columns, at most
    :data:`MAX_FRAME`) are flat and their level steps away from the field
    beside them; otherwise its width is 0.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float in [0, 1]

    Returns
    -------
    (top, bottom, left, right) : tuple of int
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) < 8:
        return (0, 0, 0, 0)
    return (_frame_width(gray), _frame_width(gray[::-1]), _frame_width(gray.T), _frame_width(gray.T[::-1]))


def touches_picture_edge(mask: np.ndarray | None, frame=(0, 0, 0, 0), margin: int = 1) -> bool:
    """Whether a full-image mask comes within ``margin`` pixels of the field's edge (the array's, less ``frame``).

    Parameters
    ----------
    mask : ndarray, shape (H, W), bool, or None
    frame : (top, bottom, left, right)
        From :func:`picture_frame`.
    margin : int
    """
    if mask is None or np.ndim(mask) != 2 or not np.any(mask):
        return False
    top, bottom, left, right = (int(v) + max(int(margin), 1) for v in frame)
    h, w = mask.shape
    return bool(mask[:top].any() or mask[max(h - bottom, 0):].any()
                or mask[:, :left].any() or mask[:, max(w - right, 0):].any())
