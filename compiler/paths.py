"""Every place the project reads or writes, in one module: the checkout, its build/ and dist/ folders,
the tuning databases, and the cache of big reusable things (emulated device, wheels) outside the clone."""
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def build_dir() -> Path:
    """build/ of the checkout: exported ONNX files, checkpoint libraries, benchmark scratch (not shipped)."""
    return PROJECT_ROOT / "build"


def exported_onnx(model_name: str) -> Path:
    """Where a registered model is exported to ONNX before it is compiled."""
    return build_dir() / f"{model_name}.onnx"


def quantized_onnx(model_name: str, activation_type: str) -> Path:
    """Where `--quantize int8` writes a model's QDQ model (one per activation type: targets differ)."""
    return build_dir() / f"int8-{activation_type}" / f"{model_name}-int8.onnx"


def artifact_dir(model_name: str, target_name: str) -> Path:
    """dist/<model>-<target>/: the default home of a built library, its sidecar and the runtime wrapper."""
    return PROJECT_ROOT / "dist" / f"{model_name}-{target_name}"


def tuning_logs() -> Path:
    """tuning_logs/ of the project, or the folder DCAC_TUNING_LOGS names (databases kept elsewhere)."""
    return Path(os.environ.get("DCAC_TUNING_LOGS") or PROJECT_ROOT / "tuning_logs")


def shown(path: Path) -> str:
    """A path as messages show it: relative to the checkout when inside it."""
    path = Path(path)
    return str(path.relative_to(PROJECT_ROOT)) if path.is_absolute() and path.is_relative_to(PROJECT_ROOT) else str(path)


def cache_dir() -> Path:
    """~/.cache/dcac-compiler, or $DCAC_CACHE_DIR; created on first use."""
    root = os.environ.get("DCAC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dcac-compiler")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
