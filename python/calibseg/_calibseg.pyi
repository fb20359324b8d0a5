from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

Array = npt.ArrayLike
PathLikeStr = Union[str, PathLike]

class GpuError(RuntimeError): ...

def devices() -> List[Dict[str, Any]]: ...
def evaluate(
    probs: Array, labels: Array, num_bins: int = 20, include_background: bool = False
) -> Dict[str, Any]: ...

class CalibrationMetric:
    def __init__(self, num_bins: int = 20, include_background: bool = False) -> None: ...
    def update(self, probs: Array, labels: Array) -> None: ...
    def aggregate(self) -> Dict[str, Any]: ...
    def reset(self) -> None: ...
    @property
    def images(self) -> int: ...

def reliability_diagram(
    probs: Array,
    labels: Array,
    path: Union[str, PathLike],
    image: int = 0,
    num_bins: int = 20,
    include_background: bool = False,
) -> Dict[str, Any]: ...
def dataset_reliability_histogram(
    probs: Array,
    labels: Array,
    path: Union[str, PathLike],
    num_bins: int = 20,
    include_background: bool = False,
) -> Dict[str, Any]: ...
def ace_loss(
    input: Array,
    labels: Array,
    binning: str = "hard",
    num_bins: int = 20,
    include_background: bool = False,
    softmax: bool = True,
    empty_weight: float = 0.01,
) -> Tuple[float, np.ndarray]: ...
def dice_ce_loss(
    input: Array,
    labels: Array,
    include_background: bool = True,
    softmax: bool = True,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
) -> Tuple[float, np.ndarray]: ...
def ace_dice_ce_loss(
    input: Array,
    labels: Array,
    binning: str = "hard",
    num_bins: int = 20,
    include_background: bool = True,
    softmax: bool = True,
    lambda_dice: float = 0.33,
    lambda_ce: float = 0.33,
    lambda_ace: float = 0.33,
    empty_weight: float = 0.01,
) -> Tuple[float, np.ndarray]: ...
def predict(
    model_dir: Union[PathLikeStr, Sequence[PathLikeStr]],
    image: Union[PathLikeStr, Array],
    affine: Optional[Array] = None,
    checkpoint: str = "best",
    tta: bool = False,
    overlap: Optional[float] = None,
    sw_batch_size: Optional[int] = None,
) -> npt.NDArray[np.float32]: ...
def run_command(args: List[str]) -> int: ...
