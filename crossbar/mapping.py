"""Partitioning a weight matrix onto tiles and mapping it to target conductances.

Crossbar arrays are (rows = inputs, cols = outputs): a torch weight W (out, in) is placed as its transpose
W.T (in, out). The layer is split into R row blocks x C column blocks of ``rows x cols`` tiles; the last
block of each kind may be partly used (its padding is recorded for utilisation, never computed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar.config import MappingConfig, TileConfig


@dataclass(frozen=True)
class TileGrid:
    """How an (in_features x out_features) crossbar matrix sits on tiles of ``rows x cols``."""

    in_features: int
    out_features: int
    rows: int
    cols: int

    @classmethod
    def for_shape(cls, in_features: int, out_features: int, tile: TileConfig) -> TileGrid:
        return cls(in_features, out_features, tile.rows, tile.cols)

    @property
    def row_blocks(self) -> int:
        return -(-self.in_features // self.rows)

    @property
    def col_blocks(self) -> int:
        return -(-self.out_features // self.cols)

    @property
    def tiles(self) -> int:
        return self.row_blocks * self.col_blocks

    @property
    def utilisation(self) -> float:
        """Fraction of the allocated cells that hold a weight."""
        return self.in_features * self.out_features / (self.tiles * self.rows * self.cols)

    def row_slice(self, r: int) -> slice:
        return slice(r * self.rows, min((r + 1) * self.rows, self.in_features))

    def pad(self, matrix: np.ndarray) -> np.ndarray:
        """(in, out) -> (R, rows, C, cols), zero padded."""
        padded = np.zeros((self.row_blocks * self.rows, self.col_blocks * self.cols), dtype=matrix.dtype)
        padded[: self.in_features, : self.out_features] = matrix
        return padded.reshape(self.row_blocks, self.rows, self.col_blocks, self.cols)

    def unpad(self, tiled: np.ndarray) -> np.ndarray:
        """(R, rows, C, cols) -> (in, out)."""
        flat = tiled.reshape(self.row_blocks * self.rows, self.col_blocks * self.cols)
        return flat[: self.in_features, : self.out_features]

    def per_tile_column(self, values: np.ndarray) -> np.ndarray:
        """(R, 1 or rows, C, cols) -> (R, out): one value per row block and output column."""
        return values.reshape(self.row_blocks, self.col_blocks * self.cols)[:, : self.out_features]


def weight_scales(tiled_weights: np.ndarray, mapping: MappingConfig) -> np.ndarray:
    """Largest |w| of each tile column ("column") or of each tile ("tile"), shape (R, 1, C, cols).

    A column (or tile) of zeros gets scale 1 so that nothing is divided by zero.
    """
    axes = (1,) if mapping.weight_scaling == "column" else (1, 3)
    scales = np.max(np.abs(tiled_weights), axis=axes, keepdims=True)
    scales = np.broadcast_to(scales, (tiled_weights.shape[0], 1, tiled_weights.shape[2], tiled_weights.shape[3]))
    return np.where(scales > 0, scales, 1.0)


def conductance_targets(normalised: np.ndarray, mapping: MappingConfig) -> np.ndarray:
    """Target conductances in siemens for weights in [-1, 1].

    Returns shape (2, ...) for a differential pair (G+, G-), or (1, ...) for one device per weight around
    the reference conductance (g_min + g_max) / 2.
    """
    g_min, g_range = mapping.g_min, mapping.g_max - mapping.g_min
    if mapping.differential:
        return np.stack([g_min + np.maximum(normalised, 0) * g_range, g_min + np.maximum(-normalised, 0) * g_range])
    return (g_min + (normalised + 1.0) * 0.5 * g_range)[None]


def effective_weights(conductances: np.ndarray, mapping: MappingConfig) -> np.ndarray:
    """Normalised weights that conductances (siemens, from ``conductance_targets``) actually realise.

    The inverse of ``conductance_targets``: on target conductances it returns the weights in [-1, 1].
    """
    g_range = mapping.g_max - mapping.g_min
    if mapping.differential:
        return (conductances[0] - conductances[1]) / g_range
    return (conductances[0] - (mapping.g_min + mapping.g_max) / 2) * (2.0 / g_range)


def conductance_variance_units(mapping: MappingConfig) -> float:
    """Factor turning a conductance variance (S^2) into a variance of normalised weight (per device)."""
    g_range = mapping.g_max - mapping.g_min
    return (1.0 / g_range) ** 2 if mapping.differential else (2.0 / g_range) ** 2
